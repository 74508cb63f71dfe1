/**
 * JetStream: hands each accepted message to a NATS JetStream stream, and answers 250 only once
 * JetStream has acknowledged all of it (RFC 5321 §6.1: a 250 takes responsibility), so many
 * receivers behind a load balancer share one durable, replicated queue. Workers pull from it
 * (see jetstream-worker.ts).
 *
 * - A body that does not fit one NATS message goes first as chunk messages; the envelope
 *   message, published last, lists their sequences. A message is in the stream, complete, once
 *   its envelope is; chunks without an envelope are never delivered.
 * - Every publish carries a Nats-Msg-Id derived from sender, recipients and body, so a publish
 *   retried after a lost acknowledgement, or the client's own retry, is not stored twice.
 * - NATS unreachable or slower than `deadline`: 451 4.3.0, the connection goes on, and the
 *   client's retry succeeds once NATS is back (the NATS connection reconnects by itself).
 * - LMTP: the message is stored once for all recipients, and each recipient gets the reply.
 */
import type { JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { UsageError, type Handler, type SMTPServer } from '../handler.js';
import type { Envelope, Session } from '../session.js';
import { bodyOf } from './headers.js';
import { chunkSubject, connectNats, DEFAULT_STREAM, DEFAULT_SUBJECT, ensureStream } from './jetstream-connection.js';
import type { NatsOptions } from './jetstream-options.js';
import { bodyHash, chunk, encodeRecord, messageId, RECORD_VERSION, type MailRecord, type SessionFacts } from './jetstream-record.js';
import { parseJetStreamArgs } from './jetstream-cli.js';

export interface JetStreamOptions extends NatsOptions {
  /** Milliseconds from the end of DATA to JetStream's last acknowledgement; past it, 451. Default 10000. */
  deadline?: number;
  /** Largest message published, bytes. Default: the server's max_payload less room for headers. */
  chunkSize?: number;
  /** Chunk publishes in flight at once for one message. Default 4. */
  parallel?: number;
  /**
   * Told why a message got 451 (NATS down, a stream whose subjects clash, refused credentials).
   * Default: one line on stderr, the same error at most once every 10 s.
   */
  onError?: (error: unknown) => void;
}

export const DEFAULT_DEADLINE = 10_000;
/** Room left in max_payload for the headers of a message (Nats-Msg-Id, Nats-Expected-Stream). */
const HEADER_ROOM = 4096;

const UNAVAILABLE = '451 4.3.0 Queue unavailable, try again later';

interface Link {
  nc: NatsConnection;
  js: JetStreamClient;
  chunkSize: number;
}

class DeadlinePassed extends Error {
  override name = 'DeadlinePassed';
}

export class JetStream implements Handler {
  readonly options: Readonly<JetStreamOptions>;
  readonly stream: string;
  readonly subject: string;
  readonly deadline: number;
  private link: Promise<Link> | null = null;
  private closed = false;
  private lastError = { text: '', at: 0 };

  constructor(options: JetStreamOptions) {
    const servers = Array.isArray(options.servers) ? options.servers : [options.servers];
    if (servers.length === 0 || servers.some((s) => typeof s !== 'string' || s === '')) {
      throw new TypeError('JetStream: servers must name at least one nats://HOST:PORT');
    }
    this.options = { ...options };
    this.stream = options.stream ?? DEFAULT_STREAM;
    this.subject = options.subject ?? DEFAULT_SUBJECT;
    this.deadline = options.deadline ?? DEFAULT_DEADLINE;
    if (!(this.deadline > 0)) throw new RangeError('JetStream: deadline must be a positive number of milliseconds');
  }

  /** `-c JetStream nats://HOST:PORT[,nats://...] [STREAM] [key=value ...]` (see docs/deploying.md). */
  static fromCli(...args: string[]): JetStream {
    try {
      return new JetStream(parseJetStreamArgs(args));
    } catch (error) {
      throw error instanceof UsageError ? error : new UsageError(`JetStream: ${(error as Error).message}`);
    }
  }

  async handleDATA(server: SMTPServer, session: Session, envelope: Envelope): Promise<string | string[]> {
    let reply: string;
    try {
      const { id, seq } = await this.store(server, session, envelope);
      reply = `250 2.0.0 Queued as ${id.slice(0, 16)} (${this.stream} #${seq})`;
    } catch (error) {
      this.report(error);
      reply = UNAVAILABLE;
    }
    return server.lmtp ? envelope.rcptTos.map(() => reply) : reply;
  }

  /**
   * Stores one message (chunks, then the envelope) and resolves to its id and the envelope's
   * stream sequence once JetStream acknowledged every part; rejects past the deadline.
   */
  async store(server: SMTPServer, session: Session, envelope: Envelope): Promise<{ id: string; seq: number }> {
    const until = Date.now() + this.deadline;
    const body = bodyOf(envelope);
    const sha256 = bodyHash(body);
    const mailFrom = envelope.mailFrom ?? '';
    const id = messageId(mailFrom, envelope.rcptTos, sha256);
    const link = await this.connected(until);
    const record: MailRecord = {
      v: RECORD_VERSION,
      id,
      receivedAt: new Date().toISOString(),
      receivedBy: server.hostname,
      protocol: server.lmtp ? 'LMTP' : 'SMTP',
      mailFrom,
      mailOptions: envelope.mailOptions,
      smtputf8: envelope.smtputf8,
      rcptTos: [...envelope.rcptTos],
      rcptOptions: envelope.rcptOptions,
      session: sessionFacts(session),
      size: body.length,
      sha256,
      chunks: [],
    };
    const inlineRoom = link.chunkSize - encodeRecord(record, null).length;
    let inline: Buffer | null = body;
    if (body.length > inlineRoom) {
      record.chunks = await this.publishChunks(link, id, chunk(body, link.chunkSize), until);
      inline = null;
    }
    const seq = await this.publish(link, this.subject, encodeRecord(record, inline), id, until);
    return { id, seq };
  }

  /** Drains and closes the NATS connection (messages in flight finish first). */
  async close(): Promise<void> {
    this.closed = true;
    const link = this.link;
    this.link = null;
    if (link === null) return;
    try {
      await (await link).nc.drain();
    } catch {
      // never connected, or already closed
    }
  }

  private report(error: unknown): void {
    if (this.options.onError !== undefined) return this.options.onError(error);
    const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    const now = Date.now();
    if (text === this.lastError.text && now - this.lastError.at < 10_000) return;
    this.lastError = { text, at: now };
    process.stderr.write(`tsmtpd JetStream: 451 for a message: ${text.replace(/[\r\n]+/g, ' ')}\n`);
  }

  private async publishChunks(link: Link, id: string, pieces: Buffer[], until: number): Promise<number[]> {
    const seqs: number[] = new Array<number>(pieces.length);
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < pieces.length) {
        const i = next++;
        seqs[i] = await this.publish(link, chunkSubject(this.subject), pieces[i]!, `${id}.${i}`, until);
      }
    };
    const lanes = Array.from({ length: Math.min(this.options.parallel ?? 4, pieces.length) }, lane);
    await Promise.all(lanes);
    return seqs;
  }

  /**
   * One publish, retried with the same Nats-Msg-Id until the deadline: a retry of a publish that
   * was stored but whose acknowledgement was lost gets the first copy's sequence back.
   */
  private async publish(link: Link, subject: string, data: Buffer, msgID: string, until: number): Promise<number> {
    let pause = 50;
    for (;;) {
      const left = until - Date.now();
      if (left <= 0) throw new DeadlinePassed(`no acknowledgement within ${this.deadline} ms`);
      try {
        const ack = await link.js.publish(subject, data, { msgID, timeout: left, expect: { streamName: this.stream } });
        return ack.seq;
      } catch (error) {
        if (link.nc.isClosed()) throw error;
        if (Date.now() + pause >= until) throw error;
        await new Promise((resolve) => setTimeout(resolve, pause));
        pause = Math.min(pause * 2, 1000);
      }
    }
  }

  /** The open link, connecting (and making the stream) when there is none; bounded by the deadline. */
  private async connected(until: number): Promise<Link> {
    if (this.closed) throw new Error('JetStream handler closed');
    this.link ??= this.open();
    const link = this.link;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DeadlinePassed('NATS did not answer in time')), Math.max(0, until - Date.now()));
    });
    try {
      return await Promise.race([link, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  private open(): Promise<Link> {
    const opening = (async (): Promise<Link> => {
      const nc = await connectNats(this.options, this.deadline);
      try {
        await ensureStream(nc, this.options);
      } catch (error) {
        await nc.close();
        throw error;
      }
      // A connection that gives up for good (closed by the server, auth revoked) is replaced
      // at the next message.
      void nc.closed().then(() => {
        if (this.link === opening) this.link = null;
      });
      const maxPayload = nc.info?.max_payload ?? 1024 * 1024;
      const chunkSize = Math.max(1024, Math.min(this.options.chunkSize ?? Infinity, maxPayload - HEADER_ROOM));
      const { jetstream } = await import('@nats-io/jetstream');
      return { nc, js: jetstream(nc), chunkSize };
    })();
    opening.catch(() => {
      if (this.link === opening) this.link = null;
    });
    return opening;
  }
}

/** What a worker or an auditor may want to know of the client, JSON-safe. */
export function sessionFacts(session: Session): SessionFacts {
  const auth = session.authData;
  const login =
    typeof auth === 'string'
      ? auth
      : auth !== null && typeof auth === 'object' && typeof (auth as { login?: unknown }).login === 'string'
        ? (auth as { login: string }).login
        : null;
  return {
    peer: { ...session.peer },
    hostName: session.hostName,
    extendedSmtp: session.extendedSmtp,
    tls: session.tls === null ? null : { protocol: session.tls.protocol, cipher: session.tls.cipher?.name ?? null },
    authenticated: session.authenticated,
    login,
    proxied: session.proxyData !== null,
  };
}
