/**
 * SMTP: the per-connection server (RFC 5321, with RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 2920
 * PIPELINING, RFC 2034/3463 ENHANCEDSTATUSCODES, RFC 6531 SMTPUTF8, RFC 3030 CHUNKING and
 * BINARYMIME). A thin public face over a private Connection (connection.ts) running the SMTP
 * command table (commands/table.ts); the `commands` option changes that table.
 */
import type { Socket } from 'node:net';
import { Connection } from './connection.js';
import { challengeAuth } from './commands/auth.js';
import { commandTable } from './commands/table.js';
import type { Handler, SMTPServer } from './handler.js';
import type { SMTPOptions } from './options.js';
import { Reply } from './replies.js';
import type { Envelope, Session } from './session.js';

/** The controllers' way to serve a socket without a promise per connection (not exported from the package). */
export const ATTACH = Symbol('tsmtpd attach');
/** The controllers' way to keep their own readiness probe out of the log (not exported from the package). */
export const UNLOGGED = Symbol('tsmtpd unlogged');

export class SMTP implements SMTPServer {
  readonly #connection: Connection;

  constructor(handler: Handler, options: SMTPOptions = {}) {
    const lmtp = this.lmtp;
    this.#connection = new Connection(this, handler, options, commandTable(lmtp, options.commands), lmtp);
  }

  /** True for an LMTP server (RFC 2033). */
  get lmtp(): boolean {
    return false;
  }

  get hostname(): string {
    return this.#connection.hostname;
  }

  get ident(): string {
    return this.#connection.ident;
  }

  get dataSizeLimit(): number {
    return this.#connection.dataSizeLimit;
  }

  get enableSMTPUTF8(): boolean {
    return this.#connection.enableSMTPUTF8;
  }

  get decodeData(): boolean {
    return this.#connection.decodeData;
  }

  get timeout(): number {
    return this.#connection.timeout;
  }

  get session(): Session {
    return this.#connection.session;
  }

  get envelope(): Envelope {
    return this.#connection.envelope;
  }

  /** Whether a command (and its hook) is running now. */
  get commandRunning(): boolean {
    return this.#connection.commandRunning;
  }

  /** Runs the protocol on an accepted socket; resolves when the connection is gone. */
  serve(socket: Socket): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#connection.attach(socket, () => resolve());
    });
  }

  /** serve() for controllers: `closed` is called once the connection is gone. */
  [ATTACH](socket: Socket, closed: (server: SMTPServer, tcpAddress: string) => void): void {
    this.#connection.attach(socket, closed);
  }

  /** Before serving: this connection's conversation and connect lines are not logged. */
  [UNLOGGED](): void {
    this.#connection.unlogged();
  }

  /** Writes what is pending and closes the connection; from a hook, after the hook's reply. */
  close(): void {
    this.#connection.close();
  }

  /** Says 421 (or `reply`) and closes; a command running gets its own reply out first. */
  shutdown(reply: string = Reply.SHUTDOWN): void {
    this.#connection.shutdown(reply);
  }

  /**
   * Graceful shutdown: a connection between transactions gets 421 now; one in a transaction
   * finishes it and then gets 421.
   */
  drain(): void {
    this.#connection.drain();
  }

  /** Drops the connection at once, without a reply. */
  destroy(): void {
    this.#connection.destroy();
  }

  challengeAuth(challenge: string | Buffer): Promise<Buffer> {
    return challengeAuth(this.#connection, challenge);
  }
}
