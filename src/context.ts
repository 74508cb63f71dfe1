/**
 * What a command sees of its connection: the session and envelope, replies, the handler's
 * hooks, the next input (a line, a body) and the two ways out (TLS, close). Nothing else of the
 * connection's insides, so a command (built-in or a user's) is a small stateless object.
 */
import type { Handler, MaybePromise, SMTPServer } from './handler.js';
import type { Envelope, Session } from './session.js';
import type { SMTPOptions } from './options.js';

/** The hooks that answer with one reply line (the others have their own shapes). */
export type ReplyHook = {
  [K in keyof Handler]-?: NonNullable<Handler[K]> extends (...args: infer _A) => MaybePromise<string> ? K : never;
}[keyof Handler];

/** The arguments a reply hook takes after (server, session, envelope). */
export type HookArgs<K extends ReplyHook> =
  NonNullable<Handler[K]> extends (server: SMTPServer, session: Session, envelope: Envelope, ...rest: infer R) => unknown ? R : never;

/** How a body ended: its bytes (empty past the size limit), and whether it passed the limit. */
export interface ReadBody {
  content: Buffer;
  overflowed: boolean;
  /** A text line was longer than dataLineLimit before the size limit was passed (DATA answers 500). */
  lineTooLong: boolean;
  /** Bytes seen, kept or not. */
  size: number;
}

export interface Context {
  /** The per-connection server object the hooks receive (`SMTP` or `LMTP`). */
  readonly server: SMTPServer;
  readonly session: Session;
  /** The transaction in progress (made when first asked for). */
  readonly envelope: Envelope;
  readonly options: Readonly<SMTPOptions>;
  /** Server name, as in the greeting. */
  readonly hostname: string;
  readonly lmtp: boolean;
  /**
   * Queues a reply line (or CRLF-separated lines) for the client. A 4xx/5xx counts toward
   * `maxErrors` unless `countsAsError` is false; a 421 closes the connection after it.
   */
  reply(text: string, countsAsError?: boolean): void;
  /**
   * Calls a handler hook that answers with a reply, with its default when the handler lacks it;
   * a throw becomes handleException's reply (an SMTPError: its own). Sync hooks answer at once.
   * `enhancedDefault` is the enhanced code a reply without one gets when its class fits.
   */
  hook<K extends ReplyHook>(name: K, args: HookArgs<K>, fallback: string, enhancedDefault?: string): string | Promise<string>;
  /**
   * Runs any call as a hook (validated, exceptions handled); `enhancedDefault` as for `hook`.
   */
  replyOf(call: () => MaybePromise<string>, enhanced?: boolean, enhancedDefault?: string): string | Promise<string>;
  /**
   * Reads the client's next line (a continuation: SASL, or a custom command's second line);
   * null when the connection closed. Lines are bytes without their CRLF.
   */
  readLine(): Promise<Buffer | null>;
  /**
   * Reads a DATA-style body (dot-terminated, dot-unstuffed, size-capped) after the caller's 354;
   * `then` runs in command order once the body ended.
   */
  readBody(then: (body: ReadBody) => void | Promise<void>): void;
  /** Starts TLS on the connection with the configured context (after the caller's 220). */
  startTLS(): void;
  /** Writes what is pending, then closes the connection. */
  close(): void;
}

/** One SMTP command: a small stateless object; the table maps verbs to these. */
export interface Command<C extends Context = Context> {
  /** `VERB args` as HELP shows it. */
  syntax: string;
  /** May run before STARTTLS when `requireStartTLS` is on. Default false. */
  allowedBeforeStartTLS?: boolean;
  /** May run before AUTH when `authRequired` is on. Default false. */
  allowedBeforeAuth?: boolean;
  /** EHLO keyword(s) this command adds on this connection, if any. */
  ehlo?(ctx: C): string | readonly string[] | null;
  /** False hides the command (HELP, EHLO) and answers it as unrecognized. Default: available. */
  available?(ctx: C): boolean;
  /** Runs the command; return a promise when it waits (the connection reads on after it). */
  run(ctx: C, arg: string): void | Promise<void>;
}

/** The `commands` option: a verb mapped to a command to add or replace, or null to remove it. */
export type CommandOverrides = Record<string, Command | null>;

/** The transaction's body state beyond the public Envelope: the BDAT body, the stream. */
export interface BodyState {
  /** The BDAT chunks so far (RFC 3030). */
  bdat: import('./framing.js').Body | null;
  /** The streaming body of this transaction (handleDATAStream) and its pending replies. */
  stream: { body: import('./body-stream.js').BodyStream; replies: string[] | Promise<string[]> } | null;
}

/** What the built-in commands see beyond Context: still no socket, no framer, no fields. */
export interface EngineContext extends Context {
  readonly handler: Handler;
  readonly ident: string;
  readonly dataSizeLimit: number;
  readonly enableSMTPUTF8: boolean;
  readonly decodeData: boolean;
  readonly inTransaction: boolean;
  /** The transaction's body state (BodyState). */
  bdat: BodyState['bdat'];
  stream: BodyState['stream'];
  readonly table: ReadonlyMap<string, import('./commands/dispatch.js').BuiltinCommand>;
  /** The next framed line for SASL, where a malformed line must be told from an empty one. */
  nextFramedLine(): Promise<import('./framing.js').FramedLine | null>;
  logError(message: string, error: unknown): void;
  /** Whether command lines are logged (debug), and the logging of one. */
  readonly logsCommands: boolean;
  logCommand(shown: string): void;
  /** Spends one call of `verb` under commandCallLimit; false when none is left. */
  spendCall(verb: string): boolean;
  /** Whether this client may use XCLIENT (judged by the TCP or PROXY-named peer). */
  readonly xclientAllowed: boolean;
  /** Whether this client may use XFORWARD (judged as XCLIENT is, by xforwardAllow). */
  readonly xforwardAllowed: boolean;
  /** Queues a reply without counting it (a greeting, 354, 334). */
  push(reply: string): void;
  flush(): void;
  exceptionReply(error: unknown): Promise<string>;
  resetTransaction(): void;
  /** A new Session (STARTTLS, XCLIENT): what was learnt from the client is forgotten. */
  replaceSession(session: Session): void;
  /** Answers a verb the server does not know (and counts it). */
  unknown(verb: string): void;
  shutdown(reply?: string): void;
  startDataTimer(): void;
  stopDataTimer(): void;
  /** A message was delivered: the error counters start over (Postfix's hard limit). */
  resetErrorCounts(): void;
  /** Counts a RCPT past maxRecipients; true once past recipientOvershootLimit (its 452 then counts as an error). */
  overshoot(): boolean;
  /** Counts a failed AUTH; returns the failures so far. */
  countAuthFailure(): number;
  /** Body bytes after a DATA body's 354, as with readBody, and segments to `onSegment`. */
  readData(onSegment: ((segment: Buffer) => void) | undefined, then: (body: ReadBody) => void | Promise<void>): void;
  /** Reads exactly `size` bytes into `body` (a BDAT chunk); `then` runs in command order. */
  readChunk(size: number, body: import('./framing.js').Body, then: () => void | Promise<void>): void;
  /** Holds input (a slow body stream) / lets it flow again. */
  pauseInput(): void;
  resumeInput(): void;
  /** The streaming body's abort, at a reset or a close. */
  abortStream(why: string): void;
}
