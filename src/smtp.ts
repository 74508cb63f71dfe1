/**
 * SMTP: the per-connection protocol engine (RFC 5321, with RFC 1870 SIZE, RFC 6152 8BITMIME,
 * RFC 2920 PIPELINING, RFC 2034/3463 ENHANCEDSTATUSCODES, RFC 6531 SMTPUTF8, RFC 3030 CHUNKING
 * and BINARYMIME).
 *
 * Input is framed by the pure readers in framing.ts; commands run one at a time, in order, and
 * input that arrives while a hook is pending waits (the socket is paused). Replies are collected
 * and written in one go when the input runs dry or a hook must be awaited (RFC 2920 §3.1).
 */
import { hostname as osHostname } from 'node:os';
import { isIPv6, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { TLSSocket, type SecureContext } from 'node:tls';
import { isAscii, isUtf8 } from 'node:buffer';
import { BodyStream } from './body-stream.js';
import { BARE_LF, Body, ChunkReader, CommandFramer, DataReader, LINE_TOO_LONG, type FramedLine } from './framing.js';
import {
  AuthCancelled,
  AuthSyntaxError,
  BUILTIN_MECHANISMS,
  decodeResponse,
  handlerMechanisms,
  runMechanism,
  type AuthData,
  type AuthResult,
} from './auth.js';
import { DEFAULTS, type Logger, type SMTPOptions } from './options.js';
import { secureContextOf, tlsInfo } from './tls-info.js';
import type { Handler, MaybePromise, SMTPServer } from './handler.js';
import { afterKeyword, heloName, parseCommand, parseParams, parsePath, parseSize, type EsmtpParam } from './parse.js';
import { Reply, normalizeReply, tooManyCalls, unknownHelpTopic, unrecognized } from './replies.js';
import { Envelope, Session, formatPeer, type MailOptions, type Peer, type RcptOptions } from './session.js';
import { parseProxyHeader, type ProxyData } from './proxy-protocol.js';
import { IDLE_TICKS, ON_IDLE, idleSweep, type Idler } from './idle-sweep.js';
import { VERSION } from './version.js';
import { allowListOf, decodeXtext, parseXclient } from './xclient.js';

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

const SYNTAX: Record<string, string> = {
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
const COMMANDS = Object.keys(SYNTAX).filter((c) => c !== 'LHLO');
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

function isThenable<T>(value: MaybePromise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}

/** The client a PROXY header speaks for; null for LOCAL (health checks) and UNKNOWN. */
function proxiedPeer(data: ProxyData): Peer | null {
  if (data.command !== 'PROXY' || data.srcAddress === null) return null;
  if (data.family === 'TCP4' || data.family === 'UDP4') return { address: data.srcAddress, port: data.srcPort ?? 0, family: 'IPv4' };
  if (data.family === 'TCP6' || data.family === 'UDP6') return { address: data.srcAddress, port: data.srcPort ?? 0, family: 'IPv6' };
  if (data.family === 'UNIX') return { address: data.srcAddress, port: 0, family: 'unix' };
  return null;
}

const OWNER = Symbol('tsmtpd engine');
/** The controllers' way to serve a socket (internal: not exported from the package). */
export const ATTACH = Symbol('tsmtpd attach');
type OwnedSocket = Socket & { [OWNER]: SMTP };
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
function onSocketData(this: Socket, chunk: Buffer): void {
  ownerOf(this).onData(chunk);
}
function onSocketDrain(this: Socket): void {
  ownerOf(this).onDrain();
}
function onSocketClose(this: Socket): void {
  ownerOf(this).onClose();
}
function onSocketError(this: Socket, error: Error): void {
  ownerOf(this).onSocketError(error);
}

const mechanismCache = new WeakMap<Handler, WeakMap<SMTPOptions, Map<string, string>>>();

const UNSERVED_SESSION = new Session({ address: '', port: 0, family: 'unix' });

function peerOf(socket: Socket): Peer {
  const address = socket.remoteAddress;
  if (address === undefined) return { address: '', port: 0, family: 'unix' };
  return { address, port: socket.remotePort ?? 0, family: socket.remoteFamily === 'IPv6' ? 'IPv6' : 'IPv4' };
}

export class SMTP implements SMTPServer, Idler {
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
  private get inTransaction(): boolean {
    return this.currentEnvelope !== null && this.currentEnvelope.mailFrom !== null;
  }

  protected readonly handler: Handler;
  protected readonly options: SMTPOptions;
  protected readonly logger: Logger;
  protected socket: Socket | null = null;
  private readonly framer: CommandFramer;
  private reader: DataReader | null = null;
  /** A body that ended and waits for its handleDATA turn. */
  private finishedBody: DataReader | null = null;
  /** The BDAT chunk being read, what to do when it ends, and the chunks so far (RFC 3030). */
  private chunk: ChunkReader | null = null;
  private chunkInfo: { size: number; last: boolean; refusal: string | null } | null = null;
  private finishedChunk: { size: number; last: boolean; refusal: string | null } | null = null;
  private bdatBody: Body | null = null;
  /** The streaming body of this transaction (handleDATAStream) and its pending replies. */
  private stream: { body: BodyStream; replies: string[] | Promise<string[]> } | null = null;
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
  private unrecognizedCount = 0;
  private errorCount = 0;
  private readonly callBudget: Map<string, number> | null;
  private readonly callLimitDefault: number;
  private readonly secureContext: SecureContext | null;
  /** Mechanism name → handler method name (or '' for a built-in one). */
  private mechanisms: Map<string, string> | null = null;
  private authFailures = 0;
  private xclientOK: boolean | null = null;
  /** TLS handshake bytes that came in the same read as the PROXY header. */
  private tlsPreface: Buffer | null = null;
  /** Set while a SASL exchange waits for the client's next line. */
  private lineWaiter: ((line: FramedLine | null) => void) | null = null;
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
    this.secureContext = secureContextOf(options.tlsContext);
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
  [ATTACH](socket: Socket, closed: (engine: SMTP, tcpAddress: string) => void): void {
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
  private attach(socket: Socket): void {
    (socket as OwnedSocket)[OWNER] = this;
    socket.on('data', onSocketData);
    socket.on('drain', onSocketDrain);
    socket.on('error', onSocketError);
  }

  private onClosed: ((engine: SMTP, tcpAddress: string) => void) | null = null;
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

  private feedBody(chunk: Buffer): void {
    const reader = this.reader!;
    const rest = reader.push(chunk);
    if (reader.overflowed) this.stream?.body.overflow(this.dataSizeLimit);
    if (rest === null) return;
    this.reader = null;
    this.finishedBody = reader;
    if (rest.length > 0) this.framer.push(rest);
  }

  private feedChunk(chunk: Buffer): void {
    const rest = this.chunk!.push(chunk);
    if (this.chunk!.body.overflowed) this.stream?.body.overflow(this.dataSizeLimit);
    if (rest === null) return;
    this.chunk = null;
    this.finishedChunk = this.chunkInfo;
    if (rest.length > 0) this.framer.push(rest);
  }

  /** Runs every complete command (and finished body) in order; one pump at a time. */
  private async pump(): Promise<void> {
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

  private flush(): void {
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
  private maybeResume(): void {
    if (this.busy || this.waitingForDrain || this.closing || this.stream?.body.holding) return;
    this.socket?.resume();
  }

  /** Sends a reply to a command, counting errors toward the per-connection limit. */
  /** respond() with a reply that may still be coming. */
  private respondWith(reply: string | Promise<string>): void | Promise<void> {
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
   * our insides.
   */
  private async replyFrom(call: () => MaybePromise<string>, enhanced = true): Promise<string> {
    return this.replyOf(call, enhanced);
  }

  /** replyFrom, but a hook that answers at once is answered at once (no promise). */
  private replyOf(call: () => MaybePromise<string>, enhanced = true): string | Promise<string> {
    let result: MaybePromise<string>;
    try {
      result = call();
    } catch (error) {
      return this.exceptionReply(error);
    }
    if (!isThenable(result)) return this.validReply(result, enhanced);
    this.flush();
    return result.then(
      (value) => this.validReply(value, enhanced),
      (error: unknown) => this.exceptionReply(error),
    );
  }

  private validReply(result: unknown, enhanced: boolean): string | Promise<string> {
    // Only the engine may send 3xx (354, 334): from a hook it would desynchronize the client.
    const reply = typeof result === 'string' && !result.startsWith('3') ? normalizeReply(result, enhanced) : null;
    if (reply !== null) return reply;
    return this.exceptionReply(new TypeError(`handler returned an invalid reply: ${JSON.stringify(result)}`));
  }

  private async exceptionReply(error: unknown): Promise<string> {
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

  /**
   * Runs one command; LMTP and custom servers override it to add or replace verbs. A command
   * that finishes at once returns nothing; one that waits for a hook returns its promise.
   */
  protected dispatch(verb: string, arg: string): void | Promise<void> {
    switch (verb) {
      case 'HELO':
        return this.helo(arg);
      case 'EHLO':
        return this.ehlo(arg);
      case 'MAIL':
        return this.mail(arg);
      case 'RCPT':
        return this.rcpt(arg);
      case 'DATA':
        return this.data(arg);
      case 'BDAT':
        return this.bdat(arg);
      case 'RSET':
        return this.rset(arg);
      case 'NOOP':
        return this.respondWith(this.replyOf(() => this.hookNOOP(arg)));
      case 'QUIT':
        return this.quit(arg);
      case 'VRFY':
        return this.vrfy(arg);
      case 'EXPN':
        return this.respond(Reply.EXPN_NOT_IMPLEMENTED);
      case 'HELP':
        return this.help(arg);
      case 'STARTTLS':
        return this.startTLS(arg);
      case 'AUTH':
        return this.auth(arg);
      case 'XCLIENT':
        if (this.xclientAllowed()) return this.xclient(arg);
        return this.unknown(verb);
      default:
        return this.unknown(verb);
    }
  }

  protected unknown(verb: string): void {
    const max = this.options.maxUnrecognizedCommands ?? DEFAULTS.maxUnrecognizedCommands;
    if (++this.unrecognizedCount >= max && max > 0) return this.shutdown(Reply.TOO_MANY_UNRECOGNIZED);
    this.respond(unrecognized(verb));
  }

  private hookNOOP(arg: string): MaybePromise<string> {
    const h = this.handler;
    return h.handleNOOP ? h.handleNOOP(this, this.session, this.envelope, arg) : Reply.NOOP_OK;
  }

  private resetTransaction(): void {
    const env = this.currentEnvelope;
    // A new envelope only when this one was used (a handler may have kept it from EHLO).
    if (env !== null && (env.mailFrom !== null || env.rcptTos.length > 0 || env.content !== null || env.mailParams.length > 0)) {
      this.currentEnvelope = null;
    }
    this.bdatBody = null;
    this.stopDataTimer();
    this.abortStream('transaction aborted');
  }

  /**
   * Starts handleDATAStream for a transaction whose body is about to arrive, if the handler
   * has it; returns where body segments go.
   */
  private startStream(env: Envelope): ((segment: Buffer) => void) | undefined {
    const h = this.handler;
    if (h.handleDATAStream === undefined) return undefined;
    const body = new BodyStream(
      () => this.socket?.pause(),
      () => this.maybeResume(),
    );
    const replies = this.dataReplies(env, () => h.handleDATAStream!(this, this.session, env, body.readable));
    if (Array.isArray(replies)) body.handlerSettled();
    else void replies.finally(() => body.handlerSettled());
    this.stream = { body, replies };
    return (segment) => body.push(segment);
  }

  /** One timer per transaction, not per line: armed when the body starts. */
  private startDataTimer(): void {
    const ms = this.options.dataTimeout ?? DEFAULTS.dataTimeout;
    if (ms <= 0 || this.dataTimer !== null) return;
    this.dataTimer = setTimeout(() => {
      this.dataTimer = null;
      this.logger.info(`${formatPeer(this.session.peer)} message transfer took longer than ${ms} ms`);
      this.shutdown(Reply.DATA_TIMEOUT);
    }, ms);
    this.dataTimer.unref();
  }

  private stopDataTimer(): void {
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

  private async helo(arg: string): Promise<void> {
    const name = heloName(arg);
    if (name === null) return this.respond(Reply.HELO_SYNTAX);
    this.resetTransaction();
    const before = this.session.hostName;
    const h = this.handler;
    const reply = await this.replyFrom(
      () => (h.handleHELO ? h.handleHELO(this, this.session, this.envelope, name) : `250 ${this.hostname}`),
      false,
    );
    if (reply.startsWith('2')) {
      if (this.session.hostName === before) this.session.hostName = name; // unless the hook chose
      this.session.extendedSmtp = false;
    }
    this.respond(reply);
  }

  /** The EHLO keywords, in a stable order. */
  protected extensions(): string[] {
    const ext = [this.dataSizeLimit > 0 ? `SIZE ${this.dataSizeLimit}` : 'SIZE', '8BITMIME', 'PIPELINING'];
    if (this.enableSMTPUTF8) ext.push('SMTPUTF8');
    ext.push('ENHANCEDSTATUSCODES', 'CHUNKING', 'BINARYMIME');
    if (this.secureContext !== null && this.session.tls === null) ext.push('STARTTLS');
    const mechanisms = this.authMechanisms();
    if (mechanisms.size > 0 && (this.session.tls !== null || this.options.authRequireTLS === false)) {
      ext.push(`AUTH ${[...mechanisms.keys()].join(' ')}`);
    }
    if (this.xclientAllowed()) ext.push('XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT');
    ext.push('HELP');
    return ext;
  }

  protected async ehlo(arg: string, verb: 'EHLO' | 'LHLO' = 'EHLO'): Promise<void> {
    const name = heloName(arg);
    if (name === null) return this.respond(`501 5.5.4 Syntax: ${verb} hostname`);
    this.resetTransaction();
    let lines = [this.hostname, ...this.extensions()];
    const h = this.handler;
    if (h.handleEHLO) {
      try {
        let result = h.handleEHLO(this, this.session, this.envelope, name, lines);
        if (isThenable(result)) {
          this.flush();
          result = await result;
        }
        if (!Array.isArray(result) || result.length === 0 || !result.every((l) => typeof l === 'string')) {
          throw new TypeError('handleEHLO must return the list of EHLO lines');
        }
        // aiosmtpd's handlers return lines with their "250-" prefixes: accept those too.
        lines = result.map((l) => l.replace(/^250[ -]/, ''));
        if (lines.some((l) => /[\r\n]/.test(l))) throw new TypeError('EHLO lines must not contain CR or LF');
      } catch (error) {
        return this.respond(await this.exceptionReply(error));
      }
    }
    this.session.hostName = name;
    this.session.extendedSmtp = true;
    this.respond(lines.map((l, i) => `250${i === lines.length - 1 ? ' ' : '-'}${l}`).join('\r\n'));
  }

  private needHelo(): boolean {
    if (this.session.hostName !== null) return false;
    this.respond(Reply.NEED_HELO);
    return true;
  }

  /** MAIL and RCPT share their argument syntax, `FROM:<path> [params]`: the parts, or the error reply. */
  private pathAndParams(arg: string, verb: 'MAIL' | 'RCPT'): { address: string; params: EsmtpParam[] } | string {
    const mail = verb === 'MAIL';
    const esmtp = this.session.extendedSmtp;
    const syntax = mail ? (esmtp ? Reply.MAIL_SYNTAX_EXT : Reply.MAIL_SYNTAX) : esmtp ? Reply.RCPT_SYNTAX_EXT : Reply.RCPT_SYNTAX;
    const rest = afterKeyword(arg, mail ? 'FROM' : 'TO');
    if (rest === null) return syntax;
    const path = parsePath(rest, { allowNull: mail, allowPostmaster: !mail, utf8: this.enableSMTPUTF8 });
    if (path === 'utf8') return Reply.NEED_UTF8;
    if (path === 'syntax') return mail ? Reply.BAD_SENDER : Reply.BAD_ADDRESS;
    if (path.params !== '' && !esmtp) return syntax;
    const params = parseParams(path.params, this.enableSMTPUTF8);
    return params === null ? Reply.BAD_PARAMS : { address: path.address, params };
  }

  private mail(arg: string): void | Promise<void> {
    if (this.needHelo()) return;
    if (this.inTransaction) return this.respond(Reply.NESTED_MAIL);
    const parsed = this.pathAndParams(arg, 'MAIL');
    if (typeof parsed === 'string') return this.respond(parsed);
    const { address, params } = parsed;
    const options: MailOptions = {};
    for (const { keyword, value } of params) {
      if (keyword === 'SIZE') {
        const size = parseSize(value);
        if (size === null) return this.respond(Reply.BAD_SIZE);
        if (this.dataSizeLimit > 0 && size > this.dataSizeLimit) return this.respond(Reply.SIZE_EXCEEDED);
        options.size = size;
      } else if (keyword === 'BODY') {
        const body = value?.toUpperCase();
        if (body !== '7BIT' && body !== '8BITMIME' && body !== 'BINARYMIME') return this.respond(Reply.BAD_BODY);
        options.body = body;
      } else if (keyword === 'AUTH' && this.authMechanisms().size > 0) {
        // RFC 4954 §5: the submitter's identity, xtext-encoded, or <> for unknown.
        const identity = value === null ? null : value === '<>' ? '<>' : decodeXtext(value);
        if (identity === null) return this.respond(Reply.BAD_PARAMS);
        options.auth = identity;
      } else if (keyword === 'SMTPUTF8' && this.enableSMTPUTF8) {
        if (value !== null) return this.respond(Reply.BAD_PARAMS);
        options.smtputf8 = true;
      } else if (this.options.acceptUnknownParameters) {
        options[keyword] = value ?? true;
      } else {
        return this.respond(Reply.PARAM_NOT_RECOGNIZED);
      }
    }
    if (!options.smtputf8 && !isAsciiString(address)) return this.respond(Reply.NEED_UTF8);
    const env = this.envelope;
    const h = this.handler;
    const reply = h.handleMAIL ? this.replyOf(() => h.handleMAIL!(this, this.session, env, address, options)) : Reply.MAIL_OK;
    if (typeof reply === 'string') return this.mailAnswered(env, address, options, params, reply);
    return reply.then((text) => this.mailAnswered(env, address, options, params, text));
  }

  private mailAnswered(env: Envelope, address: string, options: MailOptions, params: EsmtpParam[], reply: string): void {
    if (env !== this.envelope) return this.respond(reply); // the transaction was reset meanwhile
    if (reply.startsWith('2')) {
      env.mailFrom ??= address;
      env.mailOptions = options;
      env.mailParams = params.map(({ keyword, value }) => (value === null ? keyword : `${keyword}=${value}`));
      env.smtputf8 = options.smtputf8 === true;
    } else {
      env.mailFrom = null;
    }
    this.respond(reply);
  }

  private rcpt(arg: string): void | Promise<void> {
    if (this.needHelo()) return;
    const env = this.envelope;
    if (env.mailFrom === null) return this.respond(Reply.NEED_MAIL);
    const parsed = this.pathAndParams(arg, 'RCPT');
    if (typeof parsed === 'string') return this.respond(parsed);
    const { address, params } = parsed;
    const options: RcptOptions = {};
    for (const { keyword, value } of params) {
      if (!this.options.acceptUnknownParameters) return this.respond(Reply.PARAM_NOT_RECOGNIZED);
      options[keyword] = value ?? true;
    }
    if (!env.smtputf8 && !isAsciiString(address)) return this.respond(Reply.NEED_UTF8);
    if (env.rcptTos.length >= (this.options.maxRecipients ?? DEFAULTS.maxRecipients)) {
      return this.respond(Reply.TOO_MANY_RECIPIENTS);
    }
    const before = env.rcptTos.length;
    const h = this.handler;
    const reply = h.handleRCPT ? this.replyOf(() => h.handleRCPT!(this, this.session, env, address, options)) : Reply.RCPT_OK;
    if (typeof reply === 'string') return this.rcptAnswered(env, address, options, before, reply);
    return reply.then((text) => this.rcptAnswered(env, address, options, before, text));
  }

  private rcptAnswered(env: Envelope, address: string, options: RcptOptions, before: number, reply: string): void {
    if (reply.startsWith('2') && env.rcptTos.length === before) {
      env.rcptTos.push(address);
      env.rcptOptions.push(options);
    }
    while (env.rcptOptions.length < env.rcptTos.length) env.rcptOptions.push({});
    this.respond(reply);
  }

  private data(arg: string): void {
    if (this.needHelo()) return;
    const env = this.envelope;
    if (env.mailFrom === null) return this.respond(Reply.NEED_MAIL);
    if (env.rcptTos.length === 0) return this.respond(Reply.NEED_RCPT);
    if (arg !== '') return this.respond(Reply.DATA_SYNTAX);
    if (this.bdatBody !== null) return this.respond(Reply.DATA_AFTER_BDAT);
    if (env.mailOptions.body === 'BINARYMIME') return this.respond(Reply.BINARYMIME_NEEDS_BDAT);
    this.push(Reply.START_DATA);
    this.startDataTimer();
    this.reader = new DataReader({ sizeLimit: this.dataSizeLimit, onSegment: this.startStream(env) });
    const rest = this.framer.takeRest();
    if (rest.length > 0) this.feedBody(rest);
  }

  private endOfData(body: DataReader): void | Promise<void> {
    const env = this.envelope;
    this.stopDataTimer(); // the body is in; the handler's time is not the client's
    if (body.overflowed) {
      this.resetTransaction(); // a streaming handler already saw its stream fail
      // LMTP: one 552 per recipient (RFC 2033 §4.2).
      return this.sendDeliveryReplies(env.rcptTos.map(() => Reply.DATA_TOO_BIG));
    }
    // server.envelope stays the hook's envelope until the reply; commands wait meanwhile.
    this.bdatBody = null;
    const pending = this.deliver(env, body);
    if (pending === undefined) return this.resetTransaction();
    return pending.then(() => this.resetTransaction());
  }

  /**
   * BDAT n [LAST] (RFC 3030): the n bytes that follow are read exactly, even when the command
   * is refused, so chunk bytes can never run as commands.
   */
  private bdat(arg: string, refused: string | null = null): void {
    const m = /^([0-9]{1,15})(?: +(LAST))?$/i.exec(arg);
    if (m === null) {
      // Without a size we cannot know where the chunk ends: the rest cannot be trusted.
      this.push(Reply.BDAT_SYNTAX);
      return this.close();
    }
    const size = Number(m[1]);
    const env = this.envelope;
    let refusal: string | null = refused;
    if (refusal === null && this.session.hostName === null) refusal = Reply.NEED_HELO;
    else if (refusal === null && env.mailFrom === null) refusal = Reply.NEED_MAIL;
    else if (refusal === null && env.rcptTos.length === 0) refusal = Reply.NEED_RCPT;
    const body =
      refusal === null ? (this.bdatBody ??= new Body(this.dataSizeLimit, this.startStream(env))) : new Body(0, () => {});
    if (refusal === null) this.startDataTimer();
    this.chunk = new ChunkReader(size, body);
    this.chunkInfo = { size, last: m[2] !== undefined, refusal };
    this.feedChunk(this.framer.takeRest());
  }

  private async endOfChunk(info: { size: number; last: boolean; refusal: string | null }): Promise<void> {
    // RFC 3030 §4.2: chunks pipelined behind a failed one are discarded, not held against the
    // client (a streaming client has many in flight when the size limit hits).
    if (info.refusal !== null) return this.respond(info.refusal, false);
    if (info.last) this.stopDataTimer();
    const body = this.bdatBody!;
    const env = this.envelope;
    if (body.overflowed) {
      this.resetTransaction();
      // At LAST the message's fate is told per recipient (LMTP); before, the chunk fails.
      if (info.last) return this.sendDeliveryReplies(env.rcptTos.map(() => Reply.DATA_TOO_BIG));
      return this.respond(Reply.DATA_TOO_BIG);
    }
    if (!info.last) return this.respond(`250 2.0.0 ${info.size} octets received`);
    this.bdatBody = null;
    await this.deliver(env, body);
    this.resetTransaction();
  }

  /** Hands a complete message to the handler and sends its reply (LMTP: one per recipient). */
  private deliver(env: Envelope, body: { content(): Buffer }): void | Promise<void> {
    let replies: string[] | Promise<string[]>;
    const stream = this.stream;
    if (stream !== null) {
      // Streamed: the handler has had the body all along; it answers once it has read the end.
      this.stream = null;
      stream.body.end();
      replies = stream.replies;
    } else {
      const content = body.content();
      env.originalContent = content;
      env.content = this.decodeData ? content.toString('utf8') : content;
      const h = this.handler;
      const perRecipient = h.handleDATA === undefined && h.handleDeliver !== undefined;
      replies = perRecipient ? this.perRecipient(env) : this.dataReplies(env);
    }
    if (Array.isArray(replies)) return this.delivered(replies);
    return replies.then((list) => this.delivered(list));
  }

  private delivered(replies: string[]): void {
    // Postfix's hard error limit counts errors "without delivering mail": a delivery resets it.
    if (replies.some((r) => r.startsWith('2'))) this.errorCount = this.unrecognizedCount = 0;
    this.sendDeliveryReplies(replies);
  }

  /**
   * SMTP has one reply per message: the first failure, else the first reply, so a message is
   * never answered 250 while a recipient's delivery failed (the client retries; nothing is lost).
   */
  protected sendDeliveryReplies(replies: string[]): void {
    // A refused delivery is no client error: it does not count toward maxErrors.
    this.respond(replies.find((r) => !r.startsWith('2')) ?? replies[0]!, false);
  }

  /** handleDATA's reply as a list: one reply, or one per recipient when it returned a list. */
  private dataReplies(
    env: Envelope,
    call: (() => MaybePromise<string | string[]>) | undefined = this.handler.handleDATA
      ? () => this.handler.handleDATA!(this, this.session, env)
      : undefined,
  ): string[] | Promise<string[]> {
    const h = this.handler;
    const got: { list: string[] | null } = { list: null };
    const first = this.replyOf(() => {
      if (call !== undefined) {
        const pick = (v: string | string[]): string => {
          if (!Array.isArray(v)) return v;
          if (v.length !== env.rcptTos.length) throw new TypeError('handleDATA must return one reply per recipient');
          got.list = v;
          return v[0]!;
        };
        const r = call();
        return isThenable(r) ? r.then(pick) : pick(r);
      }
      if (h.processMessage) {
        const r = h.processMessage(formatPeer(this.session.peer), env.mailFrom ?? '', env.rcptTos, env.content!);
        return isThenable(r) ? r.then((v) => v ?? Reply.DATA_OK) : (r ?? Reply.DATA_OK);
      }
      return Reply.DATA_OK;
    });
    const each = (reply: string): string[] | Promise<string[]> => {
      const list = got.list;
      if (list === null) return env.rcptTos.map(() => reply);
      const replies = list.map((r) => this.replyOf(() => r));
      return replies.every((r) => typeof r === 'string') ? (replies as string[]) : Promise.all(replies);
    };
    return typeof first === 'string' ? each(first) : first.then(each);
  }

  /** handleDeliver once per recipient, each failure its own. */
  private async perRecipient(env: Envelope): Promise<string[]> {
    const h = this.handler;
    const replies: string[] = [];
    for (const rcpt of env.rcptTos) {
      replies.push(await this.replyFrom(() => h.handleDeliver!(this, this.session, env, rcpt)));
    }
    return replies;
  }

  private rset(arg: string): void | Promise<void> {
    if (arg !== '') return this.respond(Reply.RSET_SYNTAX);
    this.resetTransaction();
    const h = this.handler;
    if (h.handleRSET === undefined) return this.respond(Reply.RSET_OK);
    return this.respondWith(this.replyOf(() => h.handleRSET!(this, this.session, this.envelope)));
  }

  private async quit(arg: string): Promise<void> {
    if (arg !== '') return this.respond(Reply.QUIT_SYNTAX);
    const h = this.handler;
    this.push(await this.replyFrom(() => (h.handleQUIT ? h.handleQUIT(this, this.session, this.envelope) : Reply.BYE)));
    this.close();
  }

  private async vrfy(arg: string): Promise<void> {
    if (arg === '') return this.respond(Reply.VRFY_SYNTAX);
    const address = arg.replace(/^<(.*)>$/, '$1');
    const h = this.handler;
    this.respond(
      await this.replyFrom(() =>
        h.handleVRFY ? h.handleVRFY(this, this.session, this.envelope, address) : Reply.VRFY_DEFAULT,
      ),
    );
  }

  // ---- STARTTLS (RFC 3207) -------------------------------------------------------------

  /** Implicit TLS begun after a PROXY header: handshake, then the greeting. */
  private wrapTLS(context: SecureContext, then: () => void): void {
    const raw = this.socket!;
    raw.off('data', onSocketData);
    raw.off('drain', onSocketDrain);
    // The handshake's first bytes may already have been read with the header, and a TLSSocket
    // over a net.Socket reads only from the kernel: feed it through a stream that replays them.
    const preface = this.tlsPreface;
    this.tlsPreface = null;
    const carrier = new Duplex({
      read: () => void raw.resume(),
      write: (chunk: Buffer, _encoding, callback) => void raw.write(chunk, callback),
      final: (callback) => {
        raw.end();
        callback();
      },
      destroy: (error, callback) => {
        raw.destroy();
        callback(error);
      },
    });
    if (preface !== null) carrier.push(preface);
    raw.on('data', (chunk: Buffer) => {
      if (!carrier.push(chunk)) raw.pause();
    });
    raw.once('end', () => carrier.push(null));
    raw.once('close', () => carrier.destroy());
    const secure = new TLSSocket(carrier as unknown as Socket, { isServer: true, secureContext: context, rejectUnauthorized: false });
    this.socket = secure;
    this.attach(secure);
    const timer = setTimeout(() => secure.destroy(), this.options.tlsHandshakeTimeout ?? DEFAULTS.tlsHandshakeTimeout);
    secure.once('secure', () => {
      clearTimeout(timer);
      this.session.tls = tlsInfo(secure);
      then();
      void this.pump();
    });
    secure.once('close', () => clearTimeout(timer));
    secure.resume();
  }

  private startTLS(arg: string): void {
    if (this.secureContext === null) return this.respond(Reply.TLS_NOT_AVAILABLE);
    if (arg !== '') return this.respond(Reply.STARTTLS_SYNTAX);
    if (this.session.tls !== null) return this.respond(Reply.TLS_ALREADY_ACTIVE);
    if (this.needHelo()) return;
    const raw = this.socket!;
    // What the client pipelined behind STARTTLS came before the handshake: never run it
    // (the STARTTLS command-injection class, CVE-2011-0411).
    this.framer.takeRest();
    this.push(Reply.READY_FOR_TLS);
    this.flush();
    raw.off('data', onSocketData);
    raw.off('drain', onSocketDrain);
    const secure = new TLSSocket(raw, {
      isServer: true,
      secureContext: this.secureContext,
      // Ask for a client certificate to record in session.tls; judging it is the handler's.
      requestCert: this.options.tlsRequestCert === true,
      rejectUnauthorized: false,
    });
    this.socket = secure;
    this.attach(secure);
    // RFC 3207 §4.2: forget everything learnt from the client before TLS.
    const { peer, proxyData } = this.session;
    this.session = new Session(peer);
    this.session.proxyData = proxyData;
    this.resetTransaction();
    const timer = setTimeout(() => {
      this.logger.info(`${formatPeer(peer)} TLS handshake timed out`);
      secure.destroy();
    }, this.options.tlsHandshakeTimeout ?? DEFAULTS.tlsHandshakeTimeout);
    secure.once('secure', () => {
      clearTimeout(timer);
      this.session.tls = tlsInfo(secure);
    });
    secure.once('close', () => clearTimeout(timer));
  }

  // ---- XCLIENT (Postfix) --------------------------------------------------------------

  /** XCLIENT is for the proxies the operator trusts, judged by the real (TCP) peer. */
  /**
   * Judged once per connection, by the client a PROXY header names when there is one (else a
   * load balancer on the allow-list would vouch for everyone behind it), never by what an
   * earlier XCLIENT said.
   */
  private xclientAllowed(): boolean {
    if (this.xclientOK !== null) return this.xclientOK;
    const allow = this.options.xclientAllow;
    const socket = this.socket;
    if (allow === undefined || allow.length === 0 || socket === null) return (this.xclientOK = false);
    const proxied = this.session.proxyData === null ? null : proxiedPeer(this.session.proxyData);
    const address = (proxied?.address ?? socket.remoteAddress)?.replace(/^::ffff:/, '');
    if (address === undefined || address === '') return (this.xclientOK = false);
    return (this.xclientOK = allowListOf(allow).check(address, isIPv6(address) ? 'ipv6' : 'ipv4'));
  }

  private xclient(arg: string): void {
    if (this.inTransaction) return this.respond(Reply.XCLIENT_IN_TRANSACTION);
    const data = parseXclient(arg);
    if (data === null) return this.respond(Reply.XCLIENT_SYNTAX);
    const peer = { ...this.session.peer };
    if (data.ADDR) {
      peer.address = data.ADDR;
      peer.family = isIPv6(data.ADDR) ? 'IPv6' : 'IPv4';
    }
    if (data.PORT) peer.port = Number(data.PORT);
    // As after a new connection: the client greets again (Postfix sends a fresh 220).
    const { tls, proxyData } = this.session;
    this.session = new Session(peer);
    this.session.tls = tls;
    this.session.proxyData = proxyData;
    this.session.xclient = data;
    if (data.LOGIN) {
      this.session.authenticated = true;
      this.session.authData = data.LOGIN;
    }
    this.resetTransaction();
    this.push(`220 ${this.hostname} ${this.ident}`);
  }

  // ---- AUTH (RFC 4954) -----------------------------------------------------------------

  /** Offered mechanisms: built-ins when there is an authenticator, and the handler's own. */
  private authMechanisms(): Map<string, string> {
    if (this.mechanisms !== null) return this.mechanisms;
    // The same for every connection of a handler and options: computed once, shared.
    const o = this.options;
    let perOptions = mechanismCache.get(this.handler);
    if (perOptions === undefined) mechanismCache.set(this.handler, (perOptions = new WeakMap()));
    const cached = perOptions.get(o);
    if (cached !== undefined) return (this.mechanisms = cached);
    const exclude = new Set((o.authExcludeMechanism ?? []).map((m) => m.toUpperCase()));
    const include = new Set((o.authIncludeMechanism ?? []).map((m) => m.toUpperCase()));
    const found = new Map<string, string>();
    if (o.authenticator !== undefined) {
      for (const m of BUILTIN_MECHANISMS) if (m !== 'CRAM-MD5' || include.has(m)) found.set(m, '');
    }
    for (const [name, method] of handlerMechanisms(this.handler)) found.set(name, method);
    for (const name of exclude) found.delete(name);
    perOptions.set(o, found);
    return (this.mechanisms = found);
  }

  /**
   * Sends `334 <base64 challenge>` and returns the client's decoded answer (aiosmtpd's
   * challenge_auth). Throws AuthCancelled on `*` and AuthSyntaxError on bad base64; custom
   * mechanisms may let those propagate.
   */
  async challengeAuth(challenge: string | Buffer): Promise<Buffer> {
    this.push(`334 ${Buffer.from(challenge).toString('base64')}`);
    this.flush();
    let line = this.framer.next();
    if (line === null) {
      line = await new Promise<FramedLine | null>((resolve) => {
        this.lineWaiter = resolve;
        this.socket?.resume();
      });
    }
    if (line === null) throw new AuthCancelled('connection closed');
    if (typeof line === 'symbol') throw new AuthSyntaxError('malformed response line');
    return decodeResponse(line.toString('latin1'));
  }

  private async auth(arg: string): Promise<void> {
    const mechanisms = this.authMechanisms();
    if (mechanisms.size === 0) return this.respond(Reply.AUTH_NOT_AVAILABLE);
    if (this.needHelo()) return;
    if (!this.session.extendedSmtp) return this.respond(Reply.AUTH_NEEDS_EHLO);
    if (this.session.tls === null && this.options.authRequireTLS !== false) return this.respond(Reply.AUTH_NEEDS_TLS);
    if (this.session.authenticated) return this.respond(Reply.ALREADY_AUTHENTICATED);
    if (this.inTransaction) return this.respond(Reply.AUTH_IN_TRANSACTION);
    const args = arg.split(' ');
    if (arg === '' || args.length > 2) return this.respond(Reply.AUTH_SYNTAX);
    const mechanism = args[0]!.toUpperCase();
    const method = mechanisms.get(mechanism);
    if (method === undefined) return this.respond(Reply.AUTH_UNKNOWN_MECHANISM);
    let outcome: AuthResult;
    let login: string | null = null;
    try {
      const h = this.handler;
      if (h.handleAUTH !== undefined) {
        // The handler takes over the whole exchange, as aiosmtpd's handle_AUTH.
        return this.respond(await this.replyFrom(() => h.handleAUTH!(this, this.session, this.envelope, args)));
      }
      let result: AuthResult | boolean | null | undefined;
      if (method === '') {
        const initial = args[1] === undefined ? null : decodeResponse(args[1]);
        const data: AuthData = await runMechanism(
          mechanism as (typeof BUILTIN_MECHANISMS)[number],
          initial,
          { challenge: (c) => this.challengeAuth(c) },
          this.hostname,
        );
        login = data.login;
        result = await this.options.authenticator!(this, this.session, this.envelope, mechanism, data);
      } else {
        const custom = (h as unknown as Record<string, (server: SMTP, args: string[]) => MaybePromise<AuthResult | boolean | null>>)[method]!;
        result = await custom.call(h, this, args);
      }
      outcome = typeof result === 'object' && result !== null ? result : { success: result === true };
    } catch (error) {
      if (error instanceof AuthCancelled) return this.respond(Reply.AUTH_CANCELLED);
      if (error instanceof AuthSyntaxError) return this.respond(Reply.AUTH_BAD_RESPONSE);
      this.logger.error(`${formatPeer(this.session.peer)} authenticator error`, error);
      return this.respond(Reply.AUTH_TEMPORARY_FAILURE);
    }
    // An authenticator's reply is a final one: never a 3xx that would leave the client waiting.
    const message =
      outcome.message === undefined || outcome.message.startsWith('3') ? null : normalizeReply(outcome.message, true);
    if (outcome.success === true) {
      this.session.authenticated = true;
      this.session.authData = outcome.authData ?? login;
      return this.respond(message !== null && message.startsWith('2') ? message : Reply.AUTH_OK);
    }
    const max = this.options.maxAuthFailures ?? DEFAULTS.maxAuthFailures;
    if (++this.authFailures >= max && max > 0) return this.shutdown(Reply.TOO_MANY_AUTH_FAILURES);
    this.respond(message !== null && !message.startsWith('2') ? message : Reply.AUTH_FAILED);
  }

  protected helpCommands(): string[] {
    return COMMANDS;
  }

  private help(arg: string): void {
    const commands = this.helpCommands();
    if (arg === '') return this.respond(`214 2.0.0 Supported commands: ${commands.join(' ')}`);
    const verb = arg.toUpperCase();
    if (!commands.includes(verb)) return this.respond(unknownHelpTopic(commands));
    this.respond(`214 2.0.0 Syntax: ${SYNTAX[verb]}`);
  }
}

function isAsciiString(s: string): boolean {
  return !/[^\x00-\x7f]/.test(s);
}
