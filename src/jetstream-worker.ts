/**
 * The consumer side of the JetStream handler: pulls mail records from the stream through a
 * durable consumer and delivers each into a Maildir or over LMTP/SMTP, acknowledging only once
 * delivered, so a worker that dies mid-delivery leaves the message for the next one
 * (at-least-once). A temporary failure (4xx, a target that cannot be reached) asks JetStream
 * to redeliver after an exponential backoff; a permanent one (5xx for every recipient left,
 * a record that is not ours, a body whose chunks are gone) is terminated and reported.
 */
import type { JetStreamManager, JsMsg } from '@nats-io/jetstream';
import type { ConnectionOptions } from 'node:tls';
import { connectNats, DEFAULT_STREAM, DEFAULT_SUBJECT, ensureStream, readBody } from './handlers/jetstream-connection.js';
import type { NatsOptions } from './handlers/jetstream-options.js';
import { decodeRecord, RecordError, type MailRecord } from './handlers/jetstream-record.js';
import { Mailbox } from './handlers/mailbox.js';
import { Upstream } from './handlers/upstream.js';
import { Envelope, Session } from './session.js';

/** Where the worker delivers: a Maildir directory, or an LMTP/SMTP server. */
export type DeliveryTarget =
  | { maildir: string }
  | {
      host: string;
      port: number;
      /** LMTP (RFC 2033) instead of SMTP. */
      lmtp?: boolean;
      /** The name we give in LHLO/EHLO. Default `tsmtpd-worker`. */
      name?: string;
      secure?: boolean;
      ignoreTLS?: boolean;
      tls?: ConnectionOptions;
      /** Milliseconds per step of the conversation. Default 30000. */
      timeout?: number;
    };

export interface JetStreamWorkerOptions extends NatsOptions {
  target: DeliveryTarget;
  /** The durable consumer's name: workers sharing it share the work. Default `tsmtpd-worker`. */
  durable?: string;
  /** Messages fetched ahead. Default 8. */
  batch?: number;
  /** Milliseconds JetStream waits for an ack before it redelivers. Default 60000. */
  ackWait?: number;
  /** Redelivery backoff: first and longest pause, milliseconds. Default 1000 and 300000. */
  backoff?: { initial?: number; max?: number };
  /** Called with one line per delivery, retry and rejection. */
  log?: (line: string) => void;
}

export type DeliveryOutcome = 'delivered' | 'retry' | 'rejected';

export interface JetStreamWorker {
  /** Stops pulling, finishes the message in hand, closes the NATS connection. */
  stop(): Promise<void>;
  /** Settles when the worker stopped (rejects when it failed for good). */
  readonly done: Promise<void>;
  readonly counts: Readonly<Record<DeliveryOutcome, number>>;
}

const DEFAULT_DURABLE = 'tsmtpd-worker';

/** Connects, makes the stream and the durable consumer when missing, and starts pulling. */
export async function startJetStreamWorker(options: JetStreamWorkerOptions): Promise<JetStreamWorker> {
  const stream = options.stream ?? DEFAULT_STREAM;
  const subject = options.subject ?? DEFAULT_SUBJECT;
  const durable = options.durable ?? DEFAULT_DURABLE;
  const log = options.log ?? (() => undefined);
  const nc = await connectNats({ name: 'tsmtpd-worker', ...options }, 10_000);
  const { AckPolicy, jetstream } = await import('@nats-io/jetstream');
  let jsm: JetStreamManager;
  try {
    jsm = await ensureStream(nc, options);
    await jsm.consumers.add(stream, {
      durable_name: durable,
      filter_subject: subject,
      ack_policy: AckPolicy.Explicit,
      ack_wait: (options.ackWait ?? 60_000) * 1_000_000,
      max_ack_pending: Math.max(1000, (options.batch ?? 8) * 4),
    });
  } catch (error) {
    await nc.close();
    throw error;
  }
  const consumer = await jetstream(nc).consumers.get(stream, durable);
  const messages = await consumer.consume({ max_messages: options.batch ?? 8 });
  const counts: Record<DeliveryOutcome, number> = { delivered: 0, retry: 0, rejected: 0 };
  const deliverer = new Deliverer(options.target);
  const initial = options.backoff?.initial ?? 1000;
  const max = options.backoff?.max ?? 300_000;
  let stopping = false;

  const done = (async () => {
    for await (const m of messages) {
      const outcome = await handle(m);
      counts[outcome] += 1;
      if (stopping) break;
    }
  })().finally(() => nc.close());

  async function handle(m: JsMsg): Promise<DeliveryOutcome> {
    let record: MailRecord;
    let body: Buffer;
    try {
      const decoded = decodeRecord(m.data);
      record = decoded.record;
      body = await readBody(jsm, stream, record, decoded.inline);
    } catch (error) {
      if (!(error instanceof RecordError)) return retry(m, `#${m.seq}: ${String(error)}`);
      m.term(error.message);
      log(`rejected #${m.seq}: ${error.message}`);
      return 'rejected';
    }
    let result: RecipientResult;
    try {
      result = await deliverer.deliver(record, body);
    } catch (error) {
      return retry(m, `${record.id}: ${String(error)}`);
    }
    if (result.retry.length > 0) return retry(m, `${record.id}: ${result.retry.join(', ')}`);
    try {
      await m.ackAck();
    } catch (error) {
      // Not acknowledged: JetStream redelivers after ackWait; the target may see it twice.
      log(`ack of ${record.id} failed: ${String(error)}`);
      return 'retry';
    }
    deliverer.forget(record.id);
    for (const seq of record.chunks) await jsm.streams.deleteMessage(stream, seq, false).catch(() => false);
    if (result.rejected.length > 0) {
      log(`rejected ${record.id} for ${result.rejected.join(', ')}`);
      return result.rejected.length === record.rcptTos.length ? 'rejected' : 'delivered';
    }
    log(`delivered ${record.id} to ${record.rcptTos.join(', ')}`);
    return 'delivered';
  }

  function retry(m: JsMsg, why: string): DeliveryOutcome {
    const pause = Math.min(max, initial * 2 ** Math.min(30, m.info.deliveryCount - 1));
    m.nak(pause);
    log(`retry in ${pause} ms: ${why}`);
    return 'retry';
  }

  return {
    counts,
    done,
    async stop() {
      stopping = true;
      await messages.close().catch(() => undefined);
      await done.catch(() => undefined);
    },
  };
}

interface RecipientResult {
  retry: string[];
  rejected: string[];
}

/**
 * One delivery of a record. For LMTP/SMTP it remembers, per record, the recipients already
 * delivered, so a redelivery after a partial 4xx goes only to those left (within this process).
 */
class Deliverer {
  private readonly done = new Map<string, Set<string>>();
  private readonly mailbox: Mailbox | null;

  constructor(private readonly target: DeliveryTarget) {
    this.mailbox = 'maildir' in target ? new Mailbox(target.maildir) : null;
  }

  forget(id: string): void {
    this.done.delete(id);
  }

  async deliver(record: MailRecord, body: Buffer): Promise<RecipientResult> {
    const session = new Session(record.session.peer);
    session.hostName = record.session.hostName;
    const envelope = new Envelope();
    envelope.mailFrom = record.mailFrom;
    envelope.mailOptions = record.mailOptions;
    envelope.smtputf8 = record.smtputf8;
    envelope.rcptTos = [...record.rcptTos];
    envelope.originalContent = body;
    envelope.content = body;
    if (this.mailbox !== null) {
      await this.mailbox.deliver(session, envelope);
      return { retry: [], rejected: [] };
    }
    return this.relay(record, body);
  }

  private async relay(record: MailRecord, body: Buffer): Promise<RecipientResult> {
    const target = this.target as Exclude<DeliveryTarget, { maildir: string }>;
    const delivered = this.done.get(record.id) ?? new Set<string>();
    this.done.set(record.id, delivered);
    const upstream = await Upstream.connect({
      host: target.host,
      port: target.port,
      name: target.name ?? 'tsmtpd-worker',
      lmtp: target.lmtp === true,
      ...(target.secure !== undefined ? { secure: target.secure } : {}),
      ...(target.ignoreTLS !== undefined ? { ignoreTLS: target.ignoreTLS } : {}),
      ...(target.tls !== undefined ? { tls: target.tls } : {}),
      ...(target.timeout !== undefined ? { timeout: target.timeout } : {}),
    });
    const result: RecipientResult = { retry: [], rejected: [] };
    try {
      let params = '';
      if (record.smtputf8 && upstream.supports('SMTPUTF8')) params += ' SMTPUTF8';
      if (record.mailOptions.body === '8BITMIME' && upstream.supports('8BITMIME')) params += ' BODY=8BITMIME';
      const mail = await upstream.command(`MAIL FROM:<${record.mailFrom}>${params}`);
      if (mail.code >= 300) {
        const left = record.rcptTos.filter((r) => !delivered.has(r));
        (mail.code >= 500 ? result.rejected : result.retry).push(...left);
        return result;
      }
      const accepted: string[] = [];
      for (const rcpt of record.rcptTos) {
        if (delivered.has(rcpt)) continue;
        const reply = await upstream.command(`RCPT TO:<${rcpt}>`);
        if (reply.code < 300) accepted.push(rcpt);
        else (reply.code >= 500 ? result.rejected : result.retry).push(rcpt);
      }
      if (accepted.length === 0) return result;
      const replies = await upstream.dataPerRecipient([body], accepted.length);
      accepted.forEach((rcpt, i) => {
        const code = replies[i]!.code;
        if (code < 300) delivered.add(rcpt);
        else (code >= 500 ? result.rejected : result.retry).push(rcpt);
      });
      return result;
    } finally {
      upstream.quit();
    }
  }
}
