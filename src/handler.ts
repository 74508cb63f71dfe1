/**
 * The Handler contract: every hook is optional and may return a value or a promise of one.
 * A missing hook means aiosmtpd's default, documented on each hook. A hook returns the reply
 * line to send ("250 OK", or several lines separated by CRLF); the engine adds an enhanced
 * status code when the reply lacks one. A hook that throws SMTPError (hooks.ts) gets exactly that
 * reply; any other throw goes to handleException.
 */
import type { Readable } from 'node:stream';
import type { ProxyData } from './proxy-protocol.js';
import type { Envelope, MailOptions, RcptOptions, Session, SessionData } from './session.js';

/** What a hook may know of the per-connection engine (the `SMTP` instance). */
export interface SMTPServer {
  /** The name in the greeting and the EHLO reply. */
  readonly hostname: string;
  readonly ident: string;
  /** Bytes; 0 means no limit. */
  readonly dataSizeLimit: number;
  readonly enableSMTPUTF8: boolean;
  /** True for an LMTP server (RFC 2033), where handleDATA may answer per recipient. */
  readonly lmtp: boolean;
  readonly session: Session;
  readonly envelope: Envelope;
  /** Closes the connection after the pending replies are written. */
  close(): void;
  /** Cuts the connection at once, without a reply (a test server's fault, an abuser). */
  destroy(): void;
  /**
   * For custom AUTH mechanisms: sends `334 <base64 challenge>` and resolves to the client's
   * decoded answer; rejects when the client cancels (`*`) or sends bad base64.
   */
  challengeAuth(challenge: string | Buffer): Promise<Buffer>;
}

export type MaybePromise<T> = T | Promise<T>;

/** The hooks; `TData` types `session.data` (the handler's per-connection state). */
export interface Handler<TData = SessionData> {
  /** Default: sets session.hostName and answers `250 <server hostname>`. */
  handleHELO?(server: SMTPServer, session: Session<TData>, envelope: Envelope, hostname: string): MaybePromise<string>;
  /**
   * Receives the EHLO reply lines without codes (the first is the server's hostname, then one
   * per extension) and returns the lines to send, edited. Default: unchanged.
   */
  handleEHLO?(
    server: SMTPServer,
    session: Session<TData>,
    envelope: Envelope,
    hostname: string,
    responses: string[],
  ): MaybePromise<string[]>;
  /** Default: envelope.mailFrom = address, answer 250. A 2xx reply records the sender too. */
  handleMAIL?(
    server: SMTPServer,
    session: Session<TData>,
    envelope: Envelope,
    address: string,
    mailOptions: MailOptions,
  ): MaybePromise<string>;
  /** Default: append the address to envelope.rcptTos and answer 250. A 2xx reply appends it too. */
  handleRCPT?(
    server: SMTPServer,
    session: Session<TData>,
    envelope: Envelope,
    address: string,
    rcptOptions: RcptOptions,
  ): MaybePromise<string>;
  /**
   * Called once the whole body arrived within the size limit. Default: `250 OK`. May return
   * one reply per recipient (in rcptTos order): LMTP sends each (RFC 2033 §4.2); SMTP, which has
   * one reply per message, sends the first failure, else the first reply.
   */
  handleDATA?(server: SMTPServer, session: Session<TData>, envelope: Envelope): MaybePromise<string | string[]>;
  /**
   * Streaming alternative to handleDATA: called when the body starts (after DATA's 354, or at
   * the first BDAT chunk) with a Readable of the message bytes (dot-unstuffed), fed with
   * backpressure as they arrive. It answers once it has read what it needs; if it settles
   * before the end, the rest is read and dropped. Past the size limit the stream errors and
   * the client gets 552 whatever the hook answers. envelope.content stays null.
   */
  handleDATAStream?(
    server: SMTPServer,
    session: Session<TData>,
    envelope: Envelope,
    stream: Readable,
  ): MaybePromise<string | string[]>;
  /**
   * Per-recipient delivery, used when there is no handleDATA: called once per recipient, and a
   * throw fails only that recipient (LMTP). In SMTP one failure fails the whole message.
   */
  handleDeliver?(server: SMTPServer, session: Session<TData>, envelope: Envelope, recipient: string): MaybePromise<string>;
  handleRSET?(server: SMTPServer, session: Session<TData>, envelope: Envelope): MaybePromise<string>;
  handleNOOP?(server: SMTPServer, session: Session<TData>, envelope: Envelope, arg: string): MaybePromise<string>;
  /** Default: `221 Bye`. The connection closes after the reply whatever it is. */
  handleQUIT?(server: SMTPServer, session: Session<TData>, envelope: Envelope): MaybePromise<string>;
  /** Default: 252 (RFC 5321 §3.5.3: cannot verify, will accept). */
  handleVRFY?(server: SMTPServer, session: Session<TData>, envelope: Envelope, address: string): MaybePromise<string>;
  /**
   * Takes over AUTH entirely (aiosmtpd's handle_AUTH): `args` is [mechanism, initial-response?].
   * It may call server.challengeAuth and must set session.authenticated itself.
   */
  handleAUTH?(server: SMTPServer, session: Session<TData>, envelope: Envelope, args: string[]): MaybePromise<string>;
  /**
   * With proxyProtocolTimeout: called once the PROXY header is read, before the greeting;
   * session.peer is already the client the proxy speaks for. Return true to go on; false (or a
   * throw) drops the connection ungreeted. Default: accept.
   */
  handlePROXY?(server: SMTPServer, session: Session<TData>, envelope: Envelope, proxyData: ProxyData): MaybePromise<boolean>;
  /** Chooses the reply when another hook throws or rejects. Default: 451 without details. */
  handleException?(error: unknown): MaybePromise<string>;

  /**
   * The old smtpd-style entry point, used when there is no handleDATA (the migration path from
   * Python's `smtpd.SMTPServer.process_message`). Returns a reply, or nothing for `250 OK`.
   */
  processMessage?(
    peer: string,
    mailFrom: string,
    rcptTos: string[],
    data: Buffer | string,
  ): MaybePromise<string | void | undefined | null>;
}

/** A handler class the CLI can build from its positional arguments (`-c Class arg...`). */
export interface HandlerClass {
  new (...args: never[]): Handler;
  fromCli?(...args: string[]): Handler;
}

/** Thrown by `fromCli` for a usage error; the CLI prints the message and exits 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}
