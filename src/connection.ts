/**
 * One client connection: the socket, the input mode (command line, DATA body, BDAT chunk,
 * PROXY header, or a continuation line a command waits for), the pump that runs commands one at
 * a time in order, replies and their batching (RFC 2920 §3.1) with backpressure, timers, the
 * TLS upgrade, close/drain/shutdown. Commands come from a table (commands/table.ts) and see
 * this object only as a Context; every field here is #private.
 *
 * Input that arrives while a command waits for a hook waits too (the socket is paused). Replies
 * are collected and written in one go when the input runs dry or a hook must be awaited.
 *
 * Longer than ~400 lines on purpose: the connection's state is #private, which only methods in
 * the class body can reach, so splitting it further would mean making that state visible again.
 * What is not its state went out: line dispatch (commands/dispatch.ts), the DATA body's input
 * (data-input.ts), the PROXY header's (proxy-intake.ts), the session-ending counters
 * (connection-limits.ts), its log (connection-log.ts), TLS sockets (tls-upgrade.ts), peers and
 * allow-lists (peer.ts), framing (framing.ts).
 */
import { hostname as osHostname } from 'node:os';
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import { ChunkReader, CommandFramer, type Body, type FramedLine } from './framing.js';
import { DataInput } from './data-input.js';
import { ConnectionLog } from './connection-log.js';
import { ConnectionLimits } from './connection-limits.js';
import { DEFAULTS, INTERNAL, type SMTPOptions } from './options.js';
import { secureContextOf, tlsInfo } from './tls-info.js';
import { upgradeAfterPreface, upgradeSocket } from './tls-upgrade.js';
import type { Handler, MaybePromise, SMTPServer } from './handler.js';
import { exceptionReply, replyOf } from './hooks.js';
import { Reply, unrecognized } from './replies.js';
import { Envelope, Session, formatPeer } from './session.js';
import { onAllowList, peerOf, proxiedPeer } from './peer.js';
import { ProxyHeaderInput, proxyAdmitted } from './proxy-intake.js';
import { IDLE_TICKS, ON_IDLE, STRESS_TICKS, idleSweep, type Idler } from './idle-sweep.js';
import type { BodyState, EngineContext, HookArgs, ReadBody, ReplyHook } from './context.js';
import { runLine, type CommandTable } from './commands/dispatch.js';
import { VERSION } from './version.js';

const IDENT = `tsmtpd ${VERSION}`;
/** The machine's name, asked once (each call is a system call and a new string per connection). */
let machineName: string | null = null;
function defaultHostname(): string {
  return (machineName ??= osHostname());
}
/** How long a closed connection may linger for the client to close its side. */
const CLOSE_GRACE_MS = 5000;
/** RFC 4954 §4: an AUTH line with an initial response may reach 12288 octets. */
const LONGEST_LINE = 12_288;
const LF = 0x0a;
/** Octets of one over-long command line that are read and dropped before the connection is closed. */
const MAX_DISCARD = 1_048_576;

const OWNER = Symbol('tsmtpd connection');
type OwnedSocket = Socket & { [OWNER]: Connection };
// Listeners are shared functions that find their connection on the socket: no closures per connection.
function onSocketData(this: Socket, chunk: Buffer): void {
  (this as OwnedSocket)[OWNER].onData(chunk);
}
function onSocketDrain(this: Socket): void {
  (this as OwnedSocket)[OWNER].onDrain();
}
function onSocketClose(this: Socket): void {
  (this as OwnedSocket)[OWNER].onClose();
}
function onSocketError(this: Socket, error: Error): void {
  (this as OwnedSocket)[OWNER].onSocketError(error);
}

const UNSERVED_SESSION = new Session({ address: '', port: 0, family: 'unix' });

/** What input is for now. A continuation line is Command mode with a line waiter set. */
const enum Mode {
  Command,
  Data,
  Chunk,
  Proxy,
}

/** Called once the connection is gone, with the TCP client's address (which XCLIENT does not change). */
export type Closed = (server: SMTPServer, tcpAddress: string) => void;

export class Connection implements EngineContext, Idler {
  readonly server: SMTPServer;
  readonly handler: Handler;
  readonly options: SMTPOptions;
  readonly table: CommandTable;
  readonly lmtp: boolean;
  readonly hostname: string;
  readonly ident: string;
  readonly dataSizeLimit: number;
  readonly enableSMTPUTF8: boolean;
  readonly decodeData: boolean;
  readonly timeout: number;

  #session: Session = UNSERVED_SESSION;
  /** The BDAT chunks of this transaction so far (RFC 3030). */
  #bdat: Body | null = null;
  #stream: BodyState['stream'] = null;
  #envelope: Envelope | null = null;
  readonly #log: ConnectionLog;
  readonly #limits: ConnectionLimits;
  #socket: Socket | null = null;
  readonly #framer: CommandFramer;
  #mode: Mode = Mode.Command;
  #data: DataInput | null = null;
  #chunk: ChunkReader | null = null;
  /** What to run, in command order, once a body or chunk has been read. */
  #finished: (() => void | Promise<void>) | null = null;
  #afterBody: ((body: ReadBody) => void | Promise<void>) | null = null;
  #afterChunk: (() => void | Promise<void>) | null = null;
  /** Replies waiting for the next flush, each with its CRLF. */
  #out = '';
  #busy = false;
  #closing = false;
  #draining = false;
  /** close() was called while a command ran: close once its reply is out. */
  #closeRequested = false;
  /** The 421 that shutdown() asked for while a command was running. */
  #pendingShutdown: string | null = null;
  /** The PROXY header, while it is awaited. */
  #proxyHeader: ProxyHeaderInput | null = null;
  #proxyTimer: NodeJS.Timeout | null = null;
  /** TLS handshake bytes that came in the same read as the PROXY header. */
  #tlsPreface: Buffer | null = null;
  /** The whole-body deadline of the transaction in progress. */
  #dataTimer: NodeJS.Timeout | null = null;
  #waitingForDrain = false;
  /** Octets dropped of the over-long command line being read now. */
  #discarded = 0;
  #xclientOK: boolean | null = null;
  #xforwardOK: boolean | null = null;
  /** Set while a command waits for the client's next line. */
  #lineWaiter: ((line: FramedLine | null) => void) | null = null;
  #onClosed: Closed | null = null;
  #tcpAddress = '';
  /** @internal Idle sweeps since the last complete line in or reply out (idle-sweep.ts). */
  [IDLE_TICKS] = 0;
  [STRESS_TICKS] = 0;
  /** The controller's stress gauge, and the timeout under stress (0: none). */
  readonly #stress: { readonly active: boolean } | null;
  readonly #stressTimeout: number;

  constructor(server: SMTPServer, handler: Handler, options: SMTPOptions, table: CommandTable, lmtp: boolean) {
    this.server = server;
    this.handler = handler;
    this.options = options;
    this.table = table;
    this.lmtp = lmtp;
    this.hostname = options.hostname ?? defaultHostname();
    this.ident = options.ident ?? IDENT;
    this.dataSizeLimit = options.dataSizeLimit ?? DEFAULTS.dataSizeLimit;
    this.enableSMTPUTF8 = options.enableSMTPUTF8 ?? false;
    this.decodeData = options.decodeData ?? false;
    this.timeout = options.timeout ?? DEFAULTS.timeout;
    this.#log = new ConnectionLog(options.logger);
    this.#limits = new ConnectionLimits(options);
    const base = options.commandSizeLimit ?? DEFAULTS.commandSizeLimit;
    this.#framer = new CommandFramer(Math.max(base, LONGEST_LINE));
    this.#stress = options[INTERNAL]?.stress ?? null;
    const stressTimeout = options.stressTimeout ?? DEFAULTS.stressTimeout;
    const shorter = stressTimeout > 0 && (this.timeout <= 0 || stressTimeout < this.timeout);
    this.#stressTimeout = this.#stress !== null && shorter ? stressTimeout : 0;
  }

  get #stressed(): boolean {
    return this.#stress?.active === true;
  }

  /** A complete line came in or a reply went out: the idle clocks start over. */
  #active(): void {
    this[IDLE_TICKS] = this[STRESS_TICKS] = 0;
  }

  get session(): Session {
    return this.#session;
  }

  /** A connection that is no client (the controller's readiness probe): keep it out of the log. */
  unlogged(): void {
    this.#log.mute();
  }

  /** The transaction in progress; made when first asked for, so an idle connection has none. */
  get envelope(): Envelope {
    return (this.#envelope ??= new Envelope());
  }

  get bdat(): Body | null {
    return this.#bdat;
  }

  set bdat(body: Body | null) {
    this.#bdat = body;
  }

  get stream(): BodyState['stream'] {
    return this.#stream;
  }

  set stream(stream: BodyState['stream']) {
    this.#stream = stream;
  }

  get inTransaction(): boolean {
    return this.#envelope !== null && this.#envelope.mailFrom !== null;
  }

  /** Whether a command (and its hook) is running now. */
  get commandRunning(): boolean {
    return this.#busy && this.#lineWaiter === null;
  }

  /** XCLIENT is for the proxies the operator trusts: judged once per connection (peer.ts). */
  get xclientAllowed(): boolean {
    return (this.#xclientOK ??= onAllowList(this.options.xclientAllow, this.#socket, this.#session.proxyData));
  }

  /** XFORWARD likewise, for the MTAs in front of a content filter (xforwardAllow). */
  get xforwardAllowed(): boolean {
    return (this.#xforwardOK ??= onAllowList(this.options.xforwardAllow, this.#socket, this.#session.proxyData));
  }

  // ---- lifetime --------------------------------------------------------------------------

  /** Runs the protocol on an accepted socket; `closed` is called once it is gone. */
  attach(socket: Socket, closed: Closed | null): void {
    this.#socket = socket;
    this.#onClosed = closed;
    this.#session = new Session(peerOf(socket));
    this.#tcpAddress = this.#session.peer.address;
    if (this.#log.debug) this.#log.record({ level: 'info', peer: formatPeer(this.#session.peer), text: 'connected' });
    socket.setNoDelay(true);
    this.#listen(socket);
    if (this.timeout > 0) idleSweep(this.timeout).add(this);
    if (this.#stressTimeout > 0) idleSweep(this.#stressTimeout, true).add(this);
    socket.on('close', onSocketClose);
    // Implicit TLS (RFC 8314): the handshake is done before the greeting.
    if (socket instanceof TLSSocket && socket.encrypted) {
      this.#session.tls = tlsInfo(socket);
      if (this.#log.detail) this.#log.tls(this.#session.tls);
    }
    const proxyTimeout = this.options.proxyProtocolTimeout;
    if (proxyTimeout !== undefined && proxyTimeout > 0) this.#awaitProxyHeader(proxyTimeout);
    else this.#greet();
  }

  #listen(socket: Socket): void {
    (socket as OwnedSocket)[OWNER] = this;
    socket.on('data', onSocketData);
    socket.on('drain', onSocketDrain);
    socket.on('error', onSocketError);
  }

  #unlisten(socket: Socket): void {
    socket.off('data', onSocketData);
    socket.off('drain', onSocketDrain);
  }

  #greet(): void {
    this.push(`220 ${this.hostname} ${this.ident}`);
    this.flush();
  }

  /**
   * PROXY protocol v1/v2 (HAProxy): the header must come first and within the timeout, else
   * the connection is dropped without a greeting. Input is held until then.
   */
  #awaitProxyHeader(timeout: number): void {
    this.#mode = Mode.Proxy;
    this.#proxyHeader = new ProxyHeaderInput();
    const timer = setTimeout(() => {
      this.#log.event('info', `no PROXY header within ${timeout} ms`);
      this.destroy();
    }, timeout);
    this.#socket!.once('close', () => clearTimeout(timer));
    this.#proxyTimer = timer;
  }

  #onProxyData(chunk: Buffer): void {
    const parsed = this.#proxyHeader!.push(chunk);
    if (parsed.status === 'incomplete') return;
    clearTimeout(this.#proxyTimer!);
    this.#proxyHeader = null;
    this.#mode = Mode.Command;
    if (parsed.status === 'invalid') {
      this.#log.event('info', `invalid PROXY header: ${parsed.reason}`);
      return this.destroy();
    }
    const data = parsed.data;
    const real = proxiedPeer(data);
    if (real !== null) {
      this.#session.peer = real;
      if (this.#log.debug) this.#log.event('info', `PROXY header: the client is ${formatPeer(real)}`);
    }
    this.#session.proxyData = data;
    const rest = parsed.rest;
    if (rest.length > 0) {
      // Behind the header comes either SMTP or, for implicit TLS, the client's TLS handshake.
      if (this.options[INTERNAL]?.tlsAfterProxy !== undefined) this.#tlsPreface = rest;
      else this.#framer.push(rest);
    }
    this.#busy = true;
    this.#socket?.pause();
    void proxyAdmitted(this.handler, this.server, this.#session, this.envelope, data, (m, e) => this.logError(m, e)).then((ok) => this.#admitProxied(ok));
  }

  #admitProxied(accepted: boolean): void {
    this.#busy = false;
    if (!accepted) return this.destroy();
    const internal = this.options[INTERNAL];
    // Per-client connection limits count the client the proxy names, not the proxy.
    const gate = internal?.connectionGate;
    if (gate !== undefined) {
      const address = this.#session.peer.address;
      if (!gate.admit(address)) return this.shutdown(Reply.TOO_MANY_CONNECTIONS);
      this.#socket?.once('close', () => gate.leave(address));
    }
    const context = internal?.tlsAfterProxy;
    if (context !== undefined) return this.#wrapTLS(context);
    this.#greet();
    void this.#pump();
  }

  /** Implicit TLS begun after a PROXY header: handshake, then the greeting. */
  #wrapTLS(context: SecureContext): void {
    const raw = this.#socket!;
    this.#unlisten(raw);
    const preface = this.#tlsPreface;
    this.#tlsPreface = null;
    const secure = upgradeAfterPreface(raw, preface, context);
    this.#socket = secure;
    this.#listen(secure);
    this.#handshake(secure, () => {
      this.#greet();
      void this.#pump();
    });
    secure.resume();
  }

  /** The handshake's deadline, and session.tls once it is done. */
  #handshake(secure: TLSSocket, then: (() => void) | null): void {
    const timer = setTimeout(() => {
      this.#log.event('info', 'TLS handshake timed out');
      secure.destroy();
    }, this.options.tlsHandshakeTimeout ?? DEFAULTS.tlsHandshakeTimeout);
    secure.once('secure', () => {
      clearTimeout(timer);
      this.#session.tls = tlsInfo(secure);
      if (this.#log.detail) this.#log.tls(this.#session.tls);
      then?.();
    });
    secure.once('close', () => clearTimeout(timer));
  }

  startTLS(): void {
    const context = secureContextOf(this.options.tlsContext);
    const raw = this.#socket;
    if (context === null || raw === null) return;
    // What the client pipelined behind STARTTLS came before the handshake: never run it
    // (the STARTTLS command-injection class, CVE-2011-0411).
    this.#framer.takeRest();
    this.flush();
    this.#unlisten(raw);
    const secure = upgradeSocket(raw, context, this.options.tlsRequestCert === true);
    this.#socket = secure;
    this.#listen(secure);
    // RFC 3207 §4.2: forget everything learnt from the client before TLS.
    const { peer, proxyData } = this.#session;
    const fresh = new Session(peer);
    fresh.proxyData = proxyData;
    this.replaceSession(fresh);
    this.#handshake(secure, null);
  }

  replaceSession(session: Session): void {
    if (this.#log.debug && session.peer !== this.#session.peer) this.#log.event('info', `the client is now ${formatPeer(session.peer)}`);
    this.#session = session;
    this.resetTransaction();
  }

  /**
   * A client's FIN means it is gone: what it pipelined and was not run yet never runs, so a
   * client that vanishes mid-transaction delivers nothing. (Half-closing and still waiting for
   * replies is not SMTP.)
   */
  onClose(): void {
    this.#closing = true;
    if (this.timeout > 0) idleSweep(this.timeout).delete(this);
    if (this.#stressTimeout > 0) idleSweep(this.#stressTimeout, true).delete(this);
    this.#data = null;
    this.stopDataTimer();
    this.abortStream('connection lost');
    this.#lineWaiter?.(null);
    if (this.#log.debug) this.#log.event('info', 'disconnected');
    this.#onClosed?.(this.server, this.#tcpAddress);
  }

  onSocketError(error: Error): void {
    if (this.#log.debug) this.#log.event('debug', `socket error: ${error.message}`);
  }

  /** Writes what is pending and closes. Called from a hook, it waits for the hook's reply. */
  close(): void {
    if (this.#busy) {
      this.#closeRequested = true;
      return;
    }
    this.#closeNow();
  }

  /**
   * Dropping input costs the socket's read buffers until the GC frees them, so a command line
   * (or AUTH response) this long is not read to its end: 421, and nothing more is read.
   */
  #refuseEndlessLine(): void {
    this.#log.event('info', `command line longer than ${MAX_DISCARD} octets`);
    // A running hook's reply goes first; the socket is paused meanwhile.
    if (this.#busy && this.#lineWaiter === null) return this.shutdown(Reply.LINE_FAR_TOO_LONG);
    this.push(Reply.LINE_FAR_TOO_LONG);
    this.#closeNow(false);
  }

  #closeNow(readOn = true): void {
    if (this.#socket === null || this.#closing) return;
    this.#closing = true;
    this.flush();
    const socket = this.#socket;
    socket.end();
    // Read and drop what the client still sends, so it can see our FIN and close; but a client
    // that never closes its side (or never stops sending) loses the socket soon after.
    if (readOn) socket.resume();
    else socket.pause();
    const cut = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
    cut.unref();
    socket.once('close', () => clearTimeout(cut));
  }

  /** Says 421 and closes: used by controllers on stop. */
  shutdown(reply: string = Reply.SHUTDOWN): void {
    if (this.#closing) return;
    if (this.#busy && this.#lineWaiter === null) {
      // A command is running (a handler storing a message, say): its own reply goes first, so a
      // message the handler accepted is never answered 421 (the client would send it again).
      this.#pendingShutdown ??= reply;
      this.#closeRequested = true;
      return;
    }
    this.push(reply);
    this.#closeNow();
  }

  /**
   * Graceful shutdown: a connection between transactions gets 421 now; one in a transaction
   * finishes it (its body is read, its handler answers) and then gets 421.
   */
  drain(): void {
    this.#draining = true;
    if (!this.#busy && this.#betweenTransactions()) this.shutdown();
  }

  #betweenTransactions(): boolean {
    return !this.inTransaction && this.#mode === Mode.Command && this.#bdat === null;
  }

  /** Drops the connection at once, without a reply. */
  destroy(): void {
    this.#socket?.destroy();
  }

  /**
   * Called by the idle sweep after `timeout` ms (the stress sweep: `stressTimeout` ms) without a
   * complete line in or a reply out.
   */
  [ON_IDLE](stress: boolean): boolean {
    if (stress && !this.#stressed) return false;
    // A slow hook is not an idle client.
    if (this.#closing || (this.#busy && this.#lineWaiter === null)) return true;
    this.#log.event('info', stress ? 'timed out (under stress)' : 'timed out');
    this.shutdown(Reply.TIMEOUT);
    return true;
  }

  // ---- input -----------------------------------------------------------------------------

  onData(chunk: Buffer): void {
    // Per record, not per byte: a client trickling a byte at a time must still finish a line
    // within the timeout (an LF ends a command line and a body line; BDAT's binary has them too,
    // and the data timeout bounds the whole body). A TLS socket gives whole records only.
    if (chunk.indexOf(LF) >= 0) this.#active();
    if (this.#closing) return;
    switch (this.#mode) {
      case Mode.Proxy:
        return this.#onProxyData(chunk);
      case Mode.Data:
        this.#feedBody(chunk);
        break;
      case Mode.Chunk:
        this.#feedChunk(chunk);
        break;
      case Mode.Command:
        if (this.#framer.discarding && chunk.indexOf(LF) < 0 && (this.#discarded += chunk.length) > MAX_DISCARD) {
          return this.#refuseEndlessLine();
        }
        this.#framer.push(chunk);
        if (!this.#framer.discarding) this.#discarded = 0;
    }
    if (this.#lineWaiter !== null) {
      const line = this.#framer.next();
      if (line === null) return;
      const waiter = this.#lineWaiter;
      this.#lineWaiter = null;
      this.#socket?.pause();
      return waiter(line);
    }
    if (this.#busy) this.#socket?.pause();
    else void this.#pump();
  }

  #feedBody(chunk: Buffer): void {
    const input = this.#data!;
    const rest = input.push(chunk);
    if (input.overflowed) this.#stream?.body.overflow(this.dataSizeLimit);
    if (rest === null) return;
    if (this.#log.detail) this.#log.event('debug', `message body: ${input.size} octets${input.overflowed ? ' (over the size limit)' : ''}`);
    this.#data = null;
    this.#mode = Mode.Command;
    const then = this.#afterBody!;
    this.#afterBody = null;
    const ended: ReadBody = { content: input.content(), overflowed: input.overflowed, lineTooLong: input.lineTooLong, size: input.size };
    this.#finished = () => then(ended);
    if (rest.length > 0) this.#framer.push(rest);
  }

  #feedChunk(chunk: Buffer): void {
    const reader = this.#chunk!;
    const rest = reader.push(chunk);
    if (reader.body.overflowed) this.#stream?.body.overflow(this.dataSizeLimit);
    if (rest === null) return;
    this.#chunk = null;
    this.#mode = Mode.Command;
    this.#finished = this.#afterChunk;
    this.#afterChunk = null;
    if (rest.length > 0) this.#framer.push(rest);
  }

  readData(onSegment: ((segment: Buffer) => void) | undefined, then: (body: ReadBody) => void | Promise<void>): void {
    this.#mode = Mode.Data;
    this.#afterBody = then;
    this.#data = new DataInput({ sizeLimit: this.dataSizeLimit, onSegment }, this.options.dataLineLimit ?? DEFAULTS.dataLineLimit);
    const rest = this.#framer.takeRest();
    if (rest.length > 0) this.#feedBody(rest);
  }

  readBody(then: (body: ReadBody) => void | Promise<void>): void {
    this.readData(undefined, then);
  }

  readChunk(size: number, body: Body, then: () => void | Promise<void>): void {
    this.#mode = Mode.Chunk;
    this.#afterChunk = then;
    this.#chunk = new ChunkReader(size, body);
    this.#feedChunk(this.#framer.takeRest());
  }

  readLine(): Promise<Buffer | null> {
    return this.nextFramedLine().then((line) => {
      if (line === null || typeof line !== 'symbol') return line;
      // A malformed continuation is still a line: its text is unknown, so it reads as empty.
      return Buffer.alloc(0);
    });
  }

  /** The next framed line, waiting for the client when none is buffered. */
  #nextLine(): Promise<FramedLine | null> {
    this.flush();
    const line = this.#framer.next();
    if (line !== null) return Promise.resolve(line);
    return new Promise<FramedLine | null>((resolve) => {
      this.#lineWaiter = resolve;
      this.#socket?.resume();
    });
  }

  /** For SASL: the raw framed line, so a malformed one can be told from an empty one. */
  nextFramedLine(): Promise<FramedLine | null> {
    const next = this.#nextLine();
    if (!this.#log.debug) return next;
    // A continuation line is SASL's (credentials) or a custom command's: never shown.
    return next.then((line) => {
      if (line !== null) this.#log.in('****');
      return line;
    });
  }

  /** Runs every complete command (and finished body) in order; one pump at a time. */
  async #pump(): Promise<void> {
    this.#busy = true;
    try {
      while (!this.#closing && !this.#closeRequested) {
        const finished = this.#finished;
        if (finished !== null) {
          this.#finished = null;
          const pending = finished();
          if (pending !== undefined) await pending;
          continue;
        }
        if (this.#mode !== Mode.Command) break;
        if (this.#draining && this.#betweenTransactions()) {
          this.shutdown();
          break;
        }
        const line = this.#framer.next();
        if (line === null) break;
        // A command that calls no hook (HELP, a refusal, a syntax error) finishes here, at once.
        const pending = runLine(this, line);
        if (pending !== undefined) await pending;
      }
    } catch (error) {
      // Only a bug in the engine (or a custom command) lands here; the connection goes, the server lives on.
      this.logError('internal error', error);
      this.#socket?.destroy();
    } finally {
      this.#busy = false;
      if (this.#pendingShutdown !== null) this.push(this.#pendingShutdown);
      if (this.#closeRequested) this.#closeNow();
      else if (this.#draining && this.#betweenTransactions()) this.shutdown();
      this.flush();
      this.#maybeResume();
    }
  }

  // ---- output ----------------------------------------------------------------------------

  push(reply: string): void {
    this.#out += reply + '\r\n';
    this.#log.out(reply);
  }

  flush(): void {
    const text = this.#out;
    this.#out = '';
    const socket = this.#socket;
    if (text === '' || socket === null || socket.destroyed) return;
    this.#active();
    if (!socket.write(text) && !this.#closing) {
      // A client that does not read its replies must not grow our memory: stop reading.
      this.#waitingForDrain = true;
      socket.pause();
    }
  }

  onDrain(): void {
    this.#waitingForDrain = false;
    this.#maybeResume();
  }

  /** Reads on unless something holds input back: a pending hook, unread replies, a slow body stream. */
  #maybeResume(): void {
    if (this.#busy || this.#waitingForDrain || this.#closing || this.#stream?.body.holding) return;
    this.#socket?.resume();
  }

  pauseInput(): void {
    this.#socket?.pause();
  }

  resumeInput(): void {
    this.#maybeResume();
  }

  /** Sends a reply to a command, counting errors toward the per-connection limit. */
  reply(text: string, countsAsError = true): void {
    this.push(text);
    // RFC 5321 §3.8: 421 means the server closes, whoever chose the reply.
    if (text.startsWith('421')) return this.close();
    if (!countsAsError) return;
    const c = text.charCodeAt(0);
    if ((c === 0x34 /* 4 */ || c === 0x35) /* 5 */ && this.#limits.error(this.#stressed)) this.shutdown(Reply.TOO_MANY_ERRORS);
  }

  resetErrorCounts(): void {
    this.#limits.resetErrors();
  }

  overshoot(): boolean {
    return this.#limits.overshoot();
  }

  countAuthFailure(): number {
    return this.#limits.authFailure();
  }

  // ---- hooks -----------------------------------------------------------------------------

  replyOf(call: () => MaybePromise<string>, enhanced = true, enhancedDefault?: string): string | Promise<string> {
    return this.#log.timed('handler', () => replyOf(this, call, enhanced, enhancedDefault));
  }

  hook<K extends ReplyHook>(name: K, args: HookArgs<K>, fallback: string, enhancedDefault?: string): string | Promise<string> {
    const fn = this.handler[name] as ((...a: unknown[]) => MaybePromise<string>) | undefined;
    if (fn === undefined) return fallback;
    return this.#log.timed(name, () => replyOf(this, () => fn.call(this.handler, this.server, this.#session, this.envelope, ...args), true, enhancedDefault));
  }

  exceptionReply(error: unknown): Promise<string> {
    return exceptionReply(this, error);
  }

  // ---- commands --------------------------------------------------------------------------

  /** Spends one call of `verb` under commandCallLimit; false when none is left. */
  spendCall(verb: string): boolean {
    return this.#limits.spendCall(verb);
  }

  logCommand(shown: string): void {
    this.#log.in(shown);
  }

  get logsCommands(): boolean {
    return this.#log.debug;
  }

  unknown(verb: string): void {
    if (this.#limits.unrecognized()) return this.shutdown(Reply.TOO_MANY_UNRECOGNIZED);
    this.reply(unrecognized(verb));
  }

  resetTransaction(): void {
    const env = this.#envelope;
    // A new envelope only when this one was used (a handler may have kept it from EHLO).
    if (env !== null && (env.mailFrom !== null || env.rcptTos.length > 0 || env.content !== null || env.mailParams.length > 0)) {
      this.#envelope = null;
    }
    this.#bdat = null;
    this.#limits.resetTransaction();
    // XFORWARD_README: the forwarded attributes are for one transaction.
    this.#session.xforward = null;
    this.stopDataTimer();
    this.abortStream('transaction aborted');
  }

  /** One timer per transaction, not per line: armed when the body starts. */
  startDataTimer(): void {
    const ms = this.options.dataTimeout ?? DEFAULTS.dataTimeout;
    if (ms <= 0 || this.#dataTimer !== null) return;
    this.#dataTimer = setTimeout(() => {
      this.#dataTimer = null;
      this.#log.event('info', `message transfer took longer than ${ms} ms`);
      this.shutdown(Reply.DATA_TIMEOUT);
    }, ms);
    this.#dataTimer.unref();
  }

  stopDataTimer(): void {
    if (this.#dataTimer === null) return;
    clearTimeout(this.#dataTimer);
    this.#dataTimer = null;
  }

  abortStream(why: string): void {
    const stream = this.#stream;
    if (stream === null) return;
    this.#stream = null;
    if (!stream.body.readable.destroyed) stream.body.readable.destroy(new Error(why));
    stream.body.handlerSettled();
  }

  logError(message: string, error: unknown): void {
    this.#log.error(message, error);
  }
}
