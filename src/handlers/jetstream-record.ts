/**
 * The JetStream mail record, pure: how one accepted message is laid out in the stream, shared
 * by the JetStream handler (which writes it) and the worker (which reads it).
 *
 * The envelope message's payload is one line of JSON (the envelope, the session facts, the
 * body's size and hash, and the stream sequences of its chunks), a LF, then the body itself when
 * it fits in one NATS message. JSON.stringify never writes a raw LF, so the first LF ends the
 * record whatever bytes the body holds. A larger body goes first as chunk messages, and the
 * record lists their sequences in order.
 */
import { createHash } from 'node:crypto';
import type { MailOptions, Peer, RcptOptions } from '../session.js';

export const RECORD_VERSION = 1;

/** What the receiving server knew of the client when it accepted the message. */
export interface SessionFacts {
  peer: Peer;
  /** The HELO/EHLO argument. */
  hostName: string | null;
  extendedSmtp: boolean;
  tls: { protocol: string | null; cipher: string | null } | null;
  authenticated: boolean;
  /** The login, when the authenticator left a string or an object with a string `login`. */
  login: string | null;
  /** True when a PROXY header named the client (peer is then the client the proxy spoke for). */
  proxied: boolean;
}

export interface MailRecord {
  v: number;
  /** The idempotency id (the envelope's Nats-Msg-Id): the same message sent again has the same id. */
  id: string;
  /** ISO 8601, when this receiver stored it. */
  receivedAt: string;
  /** The receiving server's hostname. */
  receivedBy: string;
  protocol: 'SMTP' | 'LMTP';
  mailFrom: string;
  mailOptions: MailOptions;
  smtputf8: boolean;
  rcptTos: string[];
  rcptOptions: RcptOptions[];
  session: SessionFacts;
  /** Body bytes and their SHA-256 (hex), so a reader can tell a complete body from a torn one. */
  size: number;
  sha256: string;
  /** Stream sequences of the body's chunks, in order; empty when the body follows the record. */
  chunks: number[];
}

const LF = 0x0a;

/** The body's SHA-256, hex. */
export function bodyHash(body: Buffer): string {
  return createHash('sha256').update(body).digest('hex');
}

/**
 * The idempotency id: the same sender, recipients and bytes give the same id, so a client that
 * retries after our reply was lost (or after a 451 whose store had in fact succeeded) is
 * recognised by JetStream's duplicate window instead of being stored twice.
 */
export function messageId(mailFrom: string, rcptTos: readonly string[], sha256: string): string {
  return createHash('sha256').update(JSON.stringify([mailFrom, rcptTos, sha256])).digest('hex').slice(0, 40);
}

/** The envelope message's payload: the record, LF, and `inline` (the body, or nothing when chunked). */
export function encodeRecord(record: MailRecord, inline: Buffer | null): Buffer {
  const head = Buffer.from(JSON.stringify(record) + '\n', 'utf8');
  return inline === null || inline.length === 0 ? head : Buffer.concat([head, inline]);
}

export class RecordError extends Error {
  override name = 'RecordError';
}

/** Splits a payload into its record and inline body; throws RecordError on anything malformed. */
export function decodeRecord(payload: Uint8Array): { record: MailRecord; inline: Buffer } {
  const bytes = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const nl = bytes.indexOf(LF);
  if (nl === -1) throw new RecordError('no record line');
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.subarray(0, nl).toString('utf8'));
  } catch (error) {
    throw new RecordError(`record is not JSON: ${String(error)}`);
  }
  const record = parsed as Partial<MailRecord> | null;
  if (
    record === null ||
    typeof record !== 'object' ||
    record.v !== RECORD_VERSION ||
    typeof record.id !== 'string' ||
    typeof record.mailFrom !== 'string' ||
    !Array.isArray(record.rcptTos) ||
    !record.rcptTos.every((r) => typeof r === 'string') ||
    !Array.isArray(record.chunks) ||
    !record.chunks.every((s) => Number.isSafeInteger(s) && s > 0) ||
    typeof record.size !== 'number' ||
    typeof record.sha256 !== 'string'
  ) {
    throw new RecordError('not a tsmtpd mail record');
  }
  return { record: record as MailRecord, inline: bytes.subarray(nl + 1) };
}

/** Cuts `body` into pieces of at most `size` bytes (views, not copies). */
export function chunk(body: Buffer, size: number): Buffer[] {
  if (!(size > 0)) throw new RangeError('chunk size must be positive');
  const pieces: Buffer[] = [];
  for (let at = 0; at < body.length; at += size) pieces.push(body.subarray(at, at + size));
  return pieces;
}
