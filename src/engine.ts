/**
 * The connection side of the SMTP engine: the socket, the PROXY header, input framing and the
 * command pump, replies and their batching (RFC 2920 §3.1), hooks' replies, the state of the
 * transaction in progress and its body, timeouts, close and shutdown. The commands live in the
 * layers above: transaction-commands.ts (MAIL, RCPT, DATA, BDAT, RSET), security-commands.ts
 * (STARTTLS, AUTH, XCLIENT) and smtp.ts (the rest, and dispatch).
 *
 * Input is framed by the pure readers in framing.ts; commands run one at a time, in order, and
 * input that arrives while a hook is pending waits (the socket is paused). Replies are collected
 * and written in one go when the input runs dry or a hook must be awaited.
 */
import { hostname as osHostname } from 'node:os';
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import { isAscii, isUtf8 } from 'node:buffer';
import type { BodyStream } from './body-stream.js';
import { BARE_LF, Body, ChunkReader, CommandFramer, DataReader, LINE_TOO_LONG, type FramedLine } from './framing.js';
import { DEFAULTS, type Logger, type SMTPOptions } from './options.js';
import { tlsInfo } from './tls-info.js';
import type { Handler, MaybePromise, SMTPServer } from './handler.js';
import { parseCommand } from './parse.js';
import { Reply, normalizeReply, tooManyCalls, unrecognized, type EnhancedDefault } from './replies.js';
import { Envelope, Session, formatPeer, type Peer } from './session.js';
import { parseProxyHeader, type ProxyData } from './proxy-protocol.js';
import { IDLE_TICKS, ON_IDLE, idleSweep, type Idler } from './idle-sweep.js';
import { VERSION } from './version.js';

const FORBIDDEN_COMMANDS = ['CONNECT', 'GET', 'POST'];
const IDENT = `tsmtpd ${VERSION}`;
/** The machine's name, asked once (each call is a system call and a new string per connection). */
let machineName: string | null = null;
function defaultHostname(): string {
  return (machineName ??= osHostname());
}
/** How long a closed connection may linger for the client to close its side. */
const CLOSE_GRACE_MS = 5000;

/** RFC 4954 §4: an AUTH line with an initial response may reach 12288 octets. */
const AUTH_LINE_LIMIT = 12_288;
/** RFC 3207 §4: what a client may say before STARTTLS when TLS is required. */
const ALLOWED_BEFORE_STARTTLS = new Set(['NOOP', 'EHLO', 'LHLO', 'STARTTLS', 'QUIT', 'XCLIENT']);
/** What a client may say before AUTH when authentication is required. */
// XCLIENT too: a trusted proxy may vouch for the client's login (XCLIENT LOGIN=).
const ALLOWED_BEFORE_AUTH = new Set(['AUTH', 'EHLO', 'LHLO', 'HELO', 'NOOP', 'RSET', 'QUIT', 'STARTTLS', 'HELP', 'XCLIENT']);

/** aiosmtpd's allowances over the base line limit for MAIL parameters (SIZE=, SMTPUTF8). */
const SIZE_ALLOWANCE = 26;
const SMTPUTF8_ALLOWANCE = 10;

export const SYNTAX: Record<string, string> = {
  BDAT: 'BDAT chunk-size [LAST]',
  DATA: 'DATA',
  EHLO: 'EHLO hostname',
  EXPN: 'EXPN <mailing-list>',
  HELO: 'HELO hostname',
  HELP: 'HELP [command]',
  LHLO: 'LHLO hostname',
  MAIL: 'MAIL FROM:<address> [SP <mail-parameters>]',
  NOOP: 'NOOP [string]',
  QUIT: 'QUIT',
  RCPT: 'RCPT TO:<address> [SP <rcpt-parameters>]',
  RSET: 'RSET',
  VRFY: 'VRFY <address>',
};
/** Verbs whose lines may be logged (AUTH masked); anything else is logged by size only. */
const KNOWN_VERBS = new Set([...Object.keys(SYNTAX), 'AUTH', 'STARTTLS', 'XCLIENT']);

const silentLogger: Logger = {
  debugEnabled: false,
  debug() {},
  info() {},
  warn() {},
  error(message, error) {
    console.error(`tsmtpd: ${message}`, error ?? '');
  },
};

export function isThenable<T>(value: MaybePromise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}

/** The client a PROXY header speaks for; null for LOCAL (health checks) and UNKNOWN. */
export function proxiedPeer(data: ProxyData): Peer | null {
  if (data.command !== 'PROXY' || data.srcAddress === null) return null;
  if (data.family === 'TCP4' || data.family === 'UDP4') return { address: data.srcAddress, port: data.srcPort ?? 0, family: 'IPv4' };
  if (data.family === 'TCP6' || data.family === 'UDP6') return { address: data.srcAddress, port: data.srcPort ?? 0, family: 'IPv6' };
  if (data.family === 'UNIX') return { address: data.srcAddress, port: 0, family: 'unix' };
  return null;
}

const OWNER = Symbol('tsmtpd engine');
/** The controllers' way to serve a socket (internal: not exported from the package). */
export const ATTACH = Symbol('tsmtpd attach');
type OwnedSocket = Socket & { [OWNER]: Engine };
/** The engine's private socket handlers, reached from the shared listeners below. */
interface SocketHandlers {
  onData(chunk: Buffer): void;
  onDrain(): void;
  onClose(): void;
  onSocketError(error: Error): void;
}
function ownerOf(socket: Socket): SocketHandlers {
  return (socket as OwnedSocket)[OWNER] as unknown as SocketHandlers;
}
export function onSocketData(this: Socket, chunk: Buffer): void {
  ownerOf(this).onData(chunk);
}
export function onSocketDrain(this: Socket): void {
  ownerOf(this).onDrain();
}
function onSocketClose(this: Socket): void {
  ownerOf(this).onClose();
}
function onSocketError(this: Socket, error: Error): void {
  ownerOf(this).onSocketError(error);
}

const UNSERVED_SESSION = new Session({ address: '', port: 0, family: 'unix' });

function peerOf(socket: Socket): Peer {
  const address = socket.remoteAddress;
  if (address === undefined) return { address: '', port: 0, family: 'unix' };
  return { address, port: socket.remotePort ?? 0, family: socket.remoteFamily === 'IPv6' ? 'IPv6' : 'IPv4' };
}


/** A BDAT chunk's size, whether it is the last, and why it is refused (null: it is not). */
export interface ChunkInfo {
  size: number;
  last: boolean;
  refusal: string | null;
}

export abstract class Engine implements SMTPServer, Idler {
  readonly hostname: string;

  readonly ident: string;

  readonly dataSizeLimit: number;

  readonly enableSMTPUTF8: boolean;

  readonly decodeData: boolean;

  readonly timeout: number;

  get lmtp(): boolean {
    return false;
  }

  /** Set by serve(); a placeholder shared by engines not yet serving costs no memory. */
  session: Session = UNSERVED_SESSION;

  private currentEnvelope: Envelope | null = null;

  /** The transaction in progress; made when first asked for, so an idle connection has none. */
  get envelope(): Envelope {
    return (this.currentEnvelope ??= new Envelope());
  }

  set envelope(value: Envelope) {
    this.currentEnvelope = value;
  }

  /** Is there a MAIL FROM (without making an envelope to ask)? */
  protected get inTransaction(): boolean {
    return this.currentEnvelope !== null && this.currentEnvelope.mailFrom !== null;
  }

  protected readonly handler: Handler;

  protected readonly options: SMTPOptions;

  protected readonly logger: Logger;

  protected socket: Socket | null = null;

  protected readonly framer: CommandFramer;

  protected reader: DataReader | null = null;

  /** A body that ended and waits for its handleDATA turn. */
  private finishedBody: DataReader | null = null;

  /** The BDAT chunk being read, what to do when it ends, and the chunks so far (RFC 3030). */
  protected chunk: ChunkReader | null = null;

  protected chunkInfo: ChunkInfo | null = null;

  private finishedChunk: ChunkInfo | null = null;

  protected bdatBody: Body | null = null;

  /** The streaming body of this transaction (handleDATAStream) and its pending replies. */
  protected stream: { body: BodyStream; replies: string[] | Promise<string[]> } | null = null;

  /** Replies waiting for the next flush, each with its CRLF. */
  private out = '';

  private busy = false;

  private closing = false;

  private draining = false;

  /** close() was called while a command ran: close once its reply is out. */
  private closeRequested = false;

  /** The 421 that shutdown() asked for while a command was running. */
  private pendingShutdown: string | null = null;

  /** The PROXY header read so far, while it is awaited; null otherwise. */
  private proxyHeader: Buffer | null = null;

  private proxyTimer: NodeJS.Timeout | null = null;

  /** The whole-body deadline of the transaction in progress. */
  private dataTimer: NodeJS.Timeout | null = null;

  private waitingForDrain = false;

  protected unrecognizedCount = 0;

  protected errorCount = 0;

  private readonly callBudget: Map<string, number> | null;

  private readonly callLimitDefault: number;

  /** TLS handshake bytes that came in the same read as the PROXY header. */
  protected tlsPreface: Buffer | null = null;

  /** Set while a SASL exchange waits for the client's next line. */
  protected lineWaiter: ((line: FramedLine | null) => void) | null = null;

  private readonly debugLogging: boolean;

  constructor(handler: Handler, options: SMTPOptions = {}) {
    this.handler = handler;
    this.options = options;
    this.hostname = options.hostname ?? defaultHostname();
    this.ident = options.ident ?? IDENT;
    this.dataSizeLimit = options.dataSizeLimit ?? DEFAULTS.dataSizeLimit;
    this.enableSMTPUTF8 = options.enableSMTPUTF8 ?? false;
    this.decodeData = options.decodeData ?? false;
    this.timeout = options.timeout ?? DEFAULTS.timeout;
    this.logger = options.logger ?? silentLogger;
    // Formatting a debug line per command costs, even for a logger that drops it.
    this.debugLogging = this.logger.debugEnabled !== false;
    this.framer = new CommandFramer(Math.max(this.lineLimit('MAIL'), AUTH_LINE_LIMIT));
    const limit = options.commandCallLimit;
    if (limit === undefined || limit === false) {
      this.callBudget = null;
      this.callLimitDefault = 0;
    } else if (typeof limit === 'object') {
      this.callBudget = new Map(Object.entries(limit).map(([k, v]) => [k.toUpperCase(), v]));
      this.callLimitDefault = limit['*'] ?? DEFAULTS.callLimit;
    } else {
      this.callBudget = new Map();
      this.callLimitDefault = limit === true ? DEFAULTS.callLimit : limit;
    }
  }

  /** Longest line allowed for a verb, CRLF included. */
  protected lineLimit(verb: string): number {
    const base = this.options.commandSizeLimit ?? DEFAULTS.commandSizeLimit;
    if (verb === 'AUTH') return Math.max(base, AUTH_LINE_LIMIT);
    // aiosmtpd's allowances are for ESMTP parameters, so only after EHLO.
    if (verb !== 'MAIL' || !this.session.extendedSmtp) return base;
    return base + SIZE_ALLOWANCE + (this.enableSMTPUTF8 ? SMTPUTF8_ALLOWANCE : 0);
  }

  /** Runs the protocol on an accepted socket; resolves when the connection is gone. */
  serve(socket: Socket): Promise<void> {
    return new Promise<void>((resolve) => {
      this[ATTACH](socket, () => resolve());
    });
  }

  /**
   * serve() for controllers: `closed` is called once the connection is gone, with the TCP
   * client's address (which XCLIENT does not change). No promise and no closure per connection,
   * which an idle connection would otherwise keep alive.
   */
  [ATTACH](socket: Socket, closed: (engine: Engine, tcpAddress: string) => void): void {
    this.socket = socket;
    this.onClosed = closed;
    this.session = new Session(peerOf(socket));
    this.tcpAddress = this.session.peer.address;
    if (this.debugLogging) this.logger.info(`${formatPeer(this.session.peer)} connected`);
    socket.setNoDelay(true);
    this.attach(socket);
    if (this.timeout > 0) idleSweep(this.timeout).add(this);
    socket.on('close', onSocketClose);
    // Implicit TLS (RFC 8314): the handshake is done before the greeting.
    if (socket instanceof TLSSocket && socket.encrypted) this.session.tls = tlsInfo(socket);
    const proxyTimeout = this.options.proxyProtocolTimeout;
    if (proxyTimeout !== undefined && proxyTimeout > 0) this.awaitProxyHeader(proxyTimeout);
    else this.greet();
  }

  private greet(): void {
    this.push(`220 ${this.hostname} ${this.ident}`);
    this.flush();
  }

  /**
   * PROXY protocol v1/v2 (HAProxy): the header must come first and within the timeout, else
   * the connection is dropped without a greeting. Input is held until then.
   */
  private awaitProxyHeader(timeout: number): void {
    this.proxyHeader = Buffer.alloc(0);
    const timer = setTimeout(() => {
      this.logger.info(`${formatPeer(this.session.peer)} no PROXY header within ${timeout} ms`);
      this.destroy();
    }, timeout);
    this.socket!.once('close', () => clearTimeout(timer));
    this.proxyTimer = timer;
  }

  private onProxyData(chunk: Buffer): void {
    const buf = Buffer.concat([this.proxyHeader!, chunk]);
    const parsed = parseProxyHeader(buf);
    if (parsed.status === 'incomplete') {
      this.proxyHeader = buf;
      return;
    }
    clearTimeout(this.proxyTimer!);
    this.proxyHeader = null;
    if (parsed.status === 'invalid') {
      this.logger.info(`${formatPeer(this.session.peer)} invalid PROXY header: ${parsed.reason}`);
      return this.destroy();
    }
    const data = parsed.data;
    const real = proxiedPeer(data);
    if (real !== null) this.session.peer = real;
    this.session.proxyData = data;
    const rest = buf.subarray(parsed.length);
    if (rest.length > 0) {
      // Behind the header comes either SMTP or, for implicit TLS, the client's TLS handshake.
      if (this.options.tlsAfterProxy !== undefined) this.tlsPreface = rest;
      else this.framer.push(rest);
    }
    this.busy = true;
    this.socket?.pause();
    void this.acceptProxy(data);
  }

  private async acceptProxy(data: ProxyData): Promise<void> {
    const h = this.handler;
    let accepted = true;
    try {
      if (h.handlePROXY !== undefined) accepted = (await h.handlePROXY(this, this.session, this.envelope, data)) === true;
    } catch (error) {
      this.logger.error(`${formatPeer(this.session.peer)} handlePROXY error`, error);
      accepted = false;
    }
    this.busy = false;
    if (!accepted) return this.destroy();
    // Per-client connection limits count the client the proxy names, not the proxy.
    const gate = this.options.connectionGate;
    if (gate !== undefined) {
      const address = this.session.peer.address;
      if (!gate.admit(address)) return this.shutdown(Reply.TOO_MANY_CONNECTIONS);
      this.socket?.once('close', () => gate.leave(address));
    }
    const context = this.options.tlsAfterProxy;
    if (context !== undefined) return this.wrapTLS(context, () => this.greet());
    this.greet();
    void this.pump();
  }

  /** Listeners are shared functions that find their engine on the socket: no closures per connection. */
  protected attach(socket: Socket): void {
    (socket as OwnedSocket)[OWNER] = this;
    socket.on('data', onSocketData);
    socket.on('drain', onSocketDrain);
    socket.on('error', onSocketError);
  }

  private onClosed: ((engine: Engine, tcpAddress: string) => void) | null = null;

  /** @internal Idle sweeps since the last input or output (idle-sweep.ts). */
  [IDLE_TICKS] = 0;

  private tcpAddress = '';

  /**
   * A client's FIN means it is gone: what it pipelined and was not run yet never runs, so a
   * client that vanishes mid-transaction delivers nothing. (Half-closing and still waiting for
   * replies is not SMTP.)
   */
  private onClose(): void {
    this.closing = true;
    if (this.timeout > 0) idleSweep(this.timeout).delete(this);
    this.reader = null;
    this.stopDataTimer();
    this.abortStream('connection lost');
    this.lineWaiter?.(null);
    if (this.debugLogging) this.logger.info(`${formatPeer(this.session.peer)} disconnected`);
    this.onClosed?.(this, this.tcpAddress);
  }

  private onSocketError(error: Error): void {
    if (this.debugLogging) this.logger.debug(`${formatPeer(this.session.peer)} socket error: ${error.message}`);
  }

  /**
   * Writes what is pending and closes the connection. Called from a hook, it waits until the
   * hook's own reply is written.
   */
  close(): void {
    if (this.busy) {
      this.closeRequested = true;
      return;
    }
    this.closeNow();
  }

  private closeNow(): void {
    if (this.socket === null || this.closing) return;
    this.closing = true;
    this.flush();
    const socket = this.socket;
    socket.end();
    // Read and drop what the client still sends, so it can see our FIN and close; but a client
    // that never closes its side (or never stops sending) loses the socket soon after.
    socket.resume();
    const cut = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
    cut.unref();
    socket.once('close', () => clearTimeout(cut));
  }

  /** Says 421 and closes: used by controllers on stop. */
  shutdown(reply: string = Reply.SHUTDOWN): void {
    if (this.closing) return;
    if (this.busy && this.lineWaiter === null) {
      // A command is running (a handler storing a message, say): its own reply goes first, so a
      // message the handler accepted is never answered 421 (the client would send it again).
      this.pendingShutdown ??= reply;
      this.closeRequested = true;
      return;
    }
    this.push(reply);
    this.closeNow();
  }

  /** Whether a command (and its hook) is running now. */
  get commandRunning(): boolean {
    return this.busy && this.lineWaiter === null;
  }

  /**
   * Graceful shutdown: a connection between transactions gets 421 now; one in a transaction
   * finishes it (its body is read, its handler answers) and then gets 421.
   */
  drain(): void {
    this.draining = true;
    if (!this.busy && this.betweenTransactions()) this.shutdown();
  }

  private betweenTransactions(): boolean {
    return !this.inTransaction && this.reader === null && this.chunk === null && this.bdatBody === null;
  }

  /** Drops the connection at once, without a reply. */
  destroy(): void {
    this.socket?.destroy();
  }

  // ---- input ---------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    this[IDLE_TICKS] = 0;
    if (this.closing) return;
    if (this.proxyHeader !== null) return this.onProxyData(chunk);
    if (this.reader !== null) this.feedBody(chunk);
    else if (this.chunk !== null) this.feedChunk(chunk);
    else this.framer.push(chunk);
    if (this.lineWaiter !== null) {
      const line = this.framer.next();
      if (line === null) return;
      const waiter = this.lineWaiter;
      this.lineWaiter = null;
      this.socket?.pause();
      return waiter(line);
    }
    if (this.busy) this.socket?.pause();
    else void this.pump();
  }

  protected feedBody(chunk: Buffer): void {
    const reader = this.reader!;
    const rest = reader.push(chunk);
    if (reader.overflowed) this.stream?.body.overflow(this.dataSizeLimit);
    if (rest === null) return;
    this.reader = null;
    this.finishedBody = reader;
    if (rest.length > 0) this.framer.push(rest);
  }

  protected feedChunk(chunk: Buffer): void {
    const rest = this.chunk!.push(chunk);
    if (this.chunk!.body.overflowed) this.stream?.body.overflow(this.dataSizeLimit);
    if (rest === null) return;
    this.chunk = null;
    this.finishedChunk = this.chunkInfo;
    if (rest.length > 0) this.framer.push(rest);
  }

  /** Runs every complete command (and finished body) in order; one pump at a time. */
  protected async pump(): Promise<void> {
    this.busy = true;
    try {
      while (!this.closing && !this.closeRequested) {
        if (this.finishedBody !== null) {
          const body = this.finishedBody;
          this.finishedBody = null;
          const pending = this.endOfData(body);
          if (pending !== undefined) await pending;
          continue;
        }
        if (this.finishedChunk !== null) {
          const info = this.finishedChunk;
          this.finishedChunk = null;
          await this.endOfChunk(info);
          continue;
        }
        if (this.reader !== null || this.chunk !== null) break;
        if (this.draining && this.betweenTransactions()) {
          this.shutdown();
          break;
        }
        const line = this.framer.next();
        if (line === null) break;
        // Commands whose hooks answer at once finish here: no promise, no microtask.
        const pending = this.command(line);
        if (pending !== undefined) await pending;
      }
    } catch (error) {
      // Only a bug in the engine lands here; the connection goes, the server lives on.
      this.logger.error('internal error', error);
      this.socket?.destroy();
    } finally {
      this.busy = false;
      if (this.pendingShutdown !== null) this.push(this.pendingShutdown);
      if (this.closeRequested) this.closeNow();
      else if (this.draining && this.betweenTransactions()) this.shutdown();
      this.flush();
      this.maybeResume();
    }
  }

  /** Called by the idle sweep after `timeout` ms without input or output. */
  [ON_IDLE](): void {
    // A slow hook is not an idle client.
    if (this.closing || (this.busy && this.lineWaiter === null)) return;
    this.logger.info(`${formatPeer(this.session.peer)} timed out`);
    this.shutdown(Reply.TIMEOUT);
  }

  // ---- output --------------------------------------------------------------------------

  /** Queues a reply line (or lines) for the next flush. */
  protected push(reply: string): void {
    this.out += reply + '\r\n';
  }

  protected flush(): void {
    const text = this.out;
    this.out = '';
    if (text === '' || this.socket === null || this.socket.destroyed) return;
    this[IDLE_TICKS] = 0;
    if (!this.socket.write(text) && !this.closing) {
      // A client that does not read its replies must not grow our memory: stop reading.
      this.waitingForDrain = true;
      this.socket.pause();
    }
  }

  private onDrain(): void {
    this.waitingForDrain = false;
    this.maybeResume();
  }

  /** Reads on unless something holds input back: a pending hook, unread replies, a slow body stream. */
  protected maybeResume(): void {
    if (this.busy || this.waitingForDrain || this.closing || this.stream?.body.holding) return;
    this.socket?.resume();
  }

  /** Sends a reply to a command, counting errors toward the per-connection limit. */
  /** respond() with a reply that may still be coming. */
  protected respondWith(reply: string | Promise<string>): void | Promise<void> {
    if (typeof reply === 'string') return this.respond(reply);
    return reply.then((text) => this.respond(text));
  }

  protected respond(reply: string, countsAsError = true): void {
    this.push(reply);
    // RFC 5321 §3.8: 421 means the server closes, whoever chose the reply.
    if (reply.startsWith('421')) return this.close();
    if (!countsAsError) return;
    const c = reply.charCodeAt(0);
    if (c === 0x34 /* 4 */ || c === 0x35 /* 5 */) {
      const max = this.options.maxErrors ?? DEFAULTS.maxErrors;
      if (++this.errorCount >= max && max > 0) this.shutdown(Reply.TOO_MANY_ERRORS);
    }
  }

  // ---- hooks ---------------------------------------------------------------------------

  /**
   * Calls a hook and turns its result into a wire reply. A hook that throws, rejects or returns
   * something that is not a reply gets handleException's reply or a 451 that tells nothing of
   * our insides. A hook that answers at once is answered at once (no promise).
   */
  protected replyOf(call: () => MaybePromise<string>, enhanced = true, success?: EnhancedDefault): string | Promise<string> {
    let result: MaybePromise<string>;
    try {
      result = call();
    } catch (error) {
      return this.exceptionReply(error);
    }
    if (!isThenable(result)) return this.validReply(result, enhanced, success);
    this.flush();
    return result.then(
      (value) => this.validReply(value, enhanced, success),
      (error: unknown) => this.exceptionReply(error),
    );
  }

  private validReply(result: unknown, enhanced: boolean, success?: EnhancedDefault): string | Promise<string> {
    // Only the engine may send 3xx (354, 334): from a hook it would desynchronize the client.
    const reply = typeof result === 'string' && !result.startsWith('3') ? normalizeReply(result, enhanced, success) : null;
    if (reply !== null) return reply;
    return this.exceptionReply(new TypeError(`handler returned an invalid reply: ${JSON.stringify(result)}`));
  }

  protected async exceptionReply(error: unknown): Promise<string> {
    this.logger.error(`${formatPeer(this.session.peer)} handler error`, error);
    const hook = this.handler.handleException;
    if (hook !== undefined) {
      try {
        const text = await hook.call(this.handler, error);
        const reply = typeof text === 'string' && !text.startsWith('3') ? normalizeReply(text, true) : null;
        if (reply !== null) return reply;
      } catch (inner) {
        this.logger.error('handleException failed', inner);
      }
    }
    return Reply.HANDLER_ERROR;
  }

  // ---- commands ------------------------------------------------------------------------

  private command(framed: FramedLine): void | Promise<void> {
    if (framed === LINE_TOO_LONG) return this.respond(Reply.LINE_TOO_LONG);
    if (framed === BARE_LF) return this.respond(Reply.BARE_LF);
    let line: string;
    if (isAscii(framed)) {
      line = framed.toString('latin1');
    } else if (!this.enableSMTPUTF8) {
      return this.respond(Reply.NON_ASCII);
    } else if (!isUtf8(framed)) {
      return this.respond(Reply.BAD_UTF8);
    } else {
      line = framed.toString('utf8');
    }
    // NUL, bare CR and other controls have no place in a command (RFC 5321 §4.1.2).
    const parsed = /[\x00-\x08\x0a-\x1f\x7f]/.test(line) ? null : parseCommand(line);
    this.logCommand(line, parsed);
    if (parsed === null) return this.respond(Reply.BAD_SYNTAX);
    const { verb, arg } = parsed;
    if ((this.options.forbiddenCommands ?? FORBIDDEN_COMMANDS).includes(verb)) return this.shutdown(Reply.FORBIDDEN_COMMAND);
    if (framed.length + 2 > this.lineLimit(verb)) {
      // A BDAT line we cannot trust leaves the chunk's length unknown: nothing after it can be.
      if (verb === 'BDAT') return this.shutdown(Reply.LINE_TOO_LONG);
      return this.respond(Reply.LINE_TOO_LONG);
    }
    if (this.callBudget !== null) {
      const budget = this.callBudget.get(verb) ?? this.callLimitDefault;
      if (budget < 1) return this.shutdown(tooManyCalls(verb));
      this.callBudget.set(verb, budget - 1);
    }
    let refusal: string | null = null;
    if (this.options.requireStartTLS && this.session.tls === null && !ALLOWED_BEFORE_STARTTLS.has(verb)) {
      refusal = Reply.NEED_STARTTLS;
    } else if (this.options.authRequired && !this.session.authenticated && !ALLOWED_BEFORE_AUTH.has(verb)) {
      refusal = Reply.NEED_AUTH;
    }
    // A refused BDAT still consumes its chunk, so the chunk never runs as commands.
    if (refusal !== null) return verb === 'BDAT' ? this.bdat(arg, refusal) : this.respond(refusal);
    return this.dispatch(verb, arg);
  }

  /**
   * Logs a command at debug level without secrets: AUTH shows its mechanism only, and a line
   * that is no known command (perhaps credentials sent behind a refused AUTH) shows its size.
   */
  private logCommand(line: string, parsed: { verb: string; arg: string } | null): void {
    if (!this.debugLogging) return;
    let shown: string;
    if (parsed === null || !KNOWN_VERBS.has(parsed.verb)) shown = `<unrecognized, ${line.length} characters>`;
    else if (parsed.verb === 'AUTH') shown = `AUTH ${parsed.arg.split(' ')[0]} ****`;
    else shown = line.replace(/[\x00-\x1f\x7f]/g, '?');
    this.logger.debug(`${formatPeer(this.session.peer)} >> ${shown}`);
  }

  protected unknown(verb: string): void {
    const max = this.options.maxUnrecognizedCommands ?? DEFAULTS.maxUnrecognizedCommands;
    if (++this.unrecognizedCount >= max && max > 0) return this.shutdown(Reply.TOO_MANY_UNRECOGNIZED);
    this.respond(unrecognized(verb));
  }

  protected resetTransaction(): void {
    const env = this.currentEnvelope;
    // A new envelope only when this one was used (a handler may have kept it from EHLO).
    if (env !== null && (env.mailFrom !== null || env.rcptTos.length > 0 || env.content !== null || env.mailParams.length > 0)) {
      this.currentEnvelope = null;
    }
    this.bdatBody = null;
    this.stopDataTimer();
    this.abortStream('transaction aborted');
  }

  /** One timer per transaction, not per line: armed when the body starts. */
  protected startDataTimer(): void {
    const ms = this.options.dataTimeout ?? DEFAULTS.dataTimeout;
    if (ms <= 0 || this.dataTimer !== null) return;
    this.dataTimer = setTimeout(() => {
      this.dataTimer = null;
      this.logger.info(`${formatPeer(this.session.peer)} message transfer took longer than ${ms} ms`);
      this.shutdown(Reply.DATA_TIMEOUT);
    }, ms);
    this.dataTimer.unref();
  }

  protected stopDataTimer(): void {
    if (this.dataTimer === null) return;
    clearTimeout(this.dataTimer);
    this.dataTimer = null;
  }

  private abortStream(why: string): void {
    const stream = this.stream;
    if (stream === null) return;
    this.stream = null;
    if (!stream.body.readable.destroyed) stream.body.readable.destroy(new Error(why));
    stream.body.handlerSettled();
  }

  // ---- what the command layers provide ------------------------------------------------

  /** Runs one command; LMTP and custom servers override it to add or replace verbs. */
  protected abstract dispatch(verb: string, arg: string): void | Promise<void>;
  /** BDAT; `refused` is why a chunk that must still be read is refused. */
  protected abstract bdat(arg: string, refused?: string | null): void;
  /** A DATA body has ended: deliver it. */
  protected abstract endOfData(body: DataReader): void | Promise<void>;
  /** A BDAT chunk has been read. */
  protected abstract endOfChunk(info: ChunkInfo): Promise<void>;
  /** Implicit TLS after a PROXY header: handshake, then `then`. */
  protected abstract wrapTLS(context: SecureContext, then: () => void): void;
  abstract challengeAuth(challenge: string | Buffer): Promise<Buffer>;
}
