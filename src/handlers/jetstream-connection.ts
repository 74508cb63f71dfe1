/**
 * The NATS side shared by the JetStream handler and the worker: the connection options (servers,
 * credentials, TLS), connecting, and making sure the stream exists.
 */
import type { NatsConnection, NodeConnectionOptions } from '@nats-io/transport-node';
import type { JetStreamManager } from '@nats-io/jetstream';
import { readFileSync } from 'node:fs';
import { bodyHash, RecordError, type MailRecord } from './jetstream-record.js';
import type { NatsOptions } from './jetstream-options.js';

export type { NatsOptions };

export const DEFAULT_STREAM = 'MAIL';
export const DEFAULT_SUBJECT = 'mail.in';
export const DEFAULT_DUPLICATE_WINDOW = 120_000;

export function chunkSubject(subject: string): string {
  return `${subject}.chunk`;
}

/** nats.js options from ours. Reconnects forever: a receiver outlives any outage of the cluster. */
export async function connectionOptions(options: NatsOptions, timeout: number): Promise<NodeConnectionOptions> {
  const opts: NodeConnectionOptions = {
    servers: options.servers,
    timeout,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    name: options.name ?? 'tsmtpd',
  };
  if (options.user !== undefined) opts.user = options.user;
  if (options.pass !== undefined) opts.pass = options.pass;
  if (options.token !== undefined) opts.token = options.token;
  if (options.credsFile !== undefined) {
    const { credsAuthenticator } = await import('@nats-io/transport-node');
    opts.authenticator = credsAuthenticator(readFileSync(options.credsFile));
  }
  if (options.tls !== undefined) opts.tls = { ...options.tls };
  return opts;
}

export async function connectNats(options: NatsOptions, timeout: number): Promise<NatsConnection> {
  // The client loads when first used: `import 'tsmtpd'` does not pay for it (~60 ms, 64 modules).
  const { connect } = await import('@nats-io/transport-node');
  return connect(await connectionOptions(options, timeout));
}

/**
 * The stream, made when missing: work-queue retention (a message leaves once a worker acks it),
 * file storage, the duplicate window the idempotency id relies on.
 */
export async function ensureStream(nc: NatsConnection, options: NatsOptions): Promise<JetStreamManager> {
  const { jetstreamManager, RetentionPolicy, StorageType } = await import('@nats-io/jetstream');
  const jsm = await jetstreamManager(nc);
  const name = options.stream ?? DEFAULT_STREAM;
  const subject = options.subject ?? DEFAULT_SUBJECT;
  try {
    await jsm.streams.info(name);
    return jsm;
  } catch (error) {
    if (options.createStream === false || !isNotFound(error)) throw error;
  }
  try {
    await jsm.streams.add({
      name,
      subjects: [subject, chunkSubject(subject)],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      num_replicas: options.replicas ?? 1,
      duplicate_window: (options.duplicateWindow ?? DEFAULT_DUPLICATE_WINDOW) * 1_000_000,
    });
  } catch (error) {
    // Another receiver made it at the same moment: theirs is as good as ours.
    if (!/already in use/i.test(String(error))) throw error;
  }
  return jsm;
}

function isNotFound(error: unknown): boolean {
  return /not found/i.test(String(error));
}

/**
 * The body of a record: the inline bytes, or its chunks fetched by sequence. Throws RecordError
 * when a chunk is missing or the bytes do not match the record's size and hash (a torn body is
 * never delivered).
 */
export async function readBody(jsm: JetStreamManager, stream: string, record: MailRecord, inline: Buffer): Promise<Buffer> {
  let body = inline;
  if (record.chunks.length > 0) {
    const parts: Buffer[] = [];
    for (const seq of record.chunks) {
      const stored = await jsm.streams.getMessage(stream, { seq });
      if (stored === null) throw new RecordError(`chunk #${seq} of ${record.id} is missing`);
      parts.push(Buffer.from(stored.data.buffer, stored.data.byteOffset, stored.data.byteLength));
    }
    body = Buffer.concat(parts);
  }
  if (body.length !== record.size || bodyHash(body) !== record.sha256) throw new RecordError(`body of ${record.id} is incomplete`);
  return body;
}
