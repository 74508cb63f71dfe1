/**
 * What one connection says in the log: its id on every record, and the switches that skip
 * building a record nobody reads (a line per command costs, even for a logger that drops it).
 */
import { emit, nextConnectionId } from './log.js';
import type { Logger, LogRecord } from './options.js';
import type { TLSInfo } from './session.js';

/** The logger of a server given none: errors only, to stderr. */
const silentLogger: Logger = {
  debugEnabled: false,
  debug() {},
  info() {},
  warn() {},
  error(message, error) {
    console.error(`tsmtpd: ${message}`, error ?? '');
  },
};

export class ConnectionLog {
  readonly id = nextConnectionId();
  readonly #logger: Logger;
  /** The conversation and connect/disconnect events (-d). */
  debug: boolean;
  /** -dd: body sizes, TLS parameters, hook timings. */
  detail: boolean;

  constructor(logger: Logger | undefined) {
    this.#logger = logger ?? silentLogger;
    this.debug = this.#logger.debugEnabled !== false;
    this.detail = this.debug && this.#logger.detailEnabled === true;
  }

  /** Not a client (the controller's readiness probe): nothing but errors. */
  mute(): void {
    this.debug = this.detail = false;
  }

  record(record: Omit<LogRecord, 'connection'>): void {
    emit(this.#logger, { ...record, connection: this.id });
  }

  event(level: LogRecord['level'], text: string): void {
    emit(this.#logger, { level, connection: this.id, text });
  }

  error(message: string, error: unknown): void {
    emit(this.#logger, { level: 'error', connection: this.id, text: message, error });
  }

  /** A line from the client, as shown (secrets masked by the caller). */
  in(text: string): void {
    if (this.debug) emit(this.#logger, { level: 'debug', connection: this.id, direction: 'in', text });
  }

  /** A reply, line by line. */
  out(reply: string): void {
    if (!this.debug) return;
    for (const text of reply.split('\r\n')) emit(this.#logger, { level: 'debug', connection: this.id, direction: 'out', text });
  }

  tls(tls: TLSInfo): void {
    const subject = tls.peerCertificate?.subject?.CN;
    this.event('debug', `TLS ${tls.protocol ?? '?'} ${tls.cipher?.name ?? '?'}${subject === undefined ? '' : `, client certificate CN=${subject}`}`);
  }

  /** -dd: how long a hook took to answer. */
  timed(name: string, run: () => string | Promise<string>): string | Promise<string> {
    if (!this.detail) return run();
    const start = performance.now();
    const done = (reply: string): string => {
      this.event('debug', `${name} answered in ${(performance.now() - start).toFixed(1)} ms`);
      return reply;
    };
    const reply = run();
    return typeof reply === 'string' ? done(reply) : reply.then(done);
  }
}
