/**
 * Controllers start and stop a server for apps and tests (aiosmtpd's Controller): thin wrappers
 * that hand each accepted socket to a new SMTP instance. Binding is in listen.ts and
 * unix-socket.ts, the readiness probe in readiness-probe.ts, the stop's drain in drain.ts.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Handler } from './handler.js';
import { LMTP } from './lmtp.js';
import { INTERNAL, type SMTPOptions } from './options.js';
import { emit } from './log.js';
import { Reply } from './replies.js';
import type { SMTPServer } from './handler.js';
import { ATTACH, SMTP, UNLOGGED } from './smtp.js';
import { commandTable } from './commands/table.js';
import { clientGate, type ClientGate } from './client-gate.js';
import {
  CONNECTION_DEFAULTS,
  defaultReadyTimeout,
  type BaseControllerOptions,
  type ControllerOptions,
  type UnixSocketControllerOptions,
} from './controller-options.js';
import { drainConnections } from './drain.js';
import { listenTcp, type TcpAddress } from './listen.js';
import { probeGreeting } from './readiness-probe.js';
import { listenUnix, removeSocketFile, type SocketFile } from './unix-socket.js';

export type { BaseControllerOptions, ControllerOptions, UnixSocketControllerOptions } from './controller-options.js';
export { getLocalhost } from './listen.js';
export { checkSocketPath } from './unix-socket.js';

function toContext(value: tls.SecureContext | tls.SecureContextOptions | undefined): tls.SecureContext | undefined {
  if (value === undefined) return undefined;
  return 'context' in value ? (value as tls.SecureContext) : tls.createSecureContext(value as tls.SecureContextOptions);
}

/** How a controller binds its listener and how start() reaches it. */
interface Binding {
  listen(server: net.Server): Promise<void>;
  connectOptions(): net.NetConnectOpts;
  /** Called as stop() closes the listener: stop taking connections anywhere else too. */
  closing?(): Promise<void>;
  cleanup?(): Promise<void>;
}

let bind: (controller: BaseController, binding: Binding) => void;

abstract class BaseController implements AsyncDisposable {
  readonly handler: Handler;
  #server: net.Server | null = null;
  #binding: Binding | null = null;
  static {
    bind = (controller, binding) => {
      controller.#binding = binding;
    };
  }
  /** The listener while started, else null. */
  get server(): net.Server | null {
    return this.#server;
  }
  private readonly connections = new Set<SMTP>();
  private readonly baseOptions: BaseControllerOptions;
  /** STARTTLS context, made once (not per connection) and replaced by reloadTLS(). */
  private tlsContext: tls.SecureContext | undefined;
  /** Implicit TLS behind a PROXY header: the engine does the handshake after the header. */
  private tlsAfterProxy: tls.SecureContext | undefined;

  constructor(handler: Handler, options: BaseControllerOptions) {
    this.handler = handler;
    this.baseOptions = options;
    commandTable(options.lmtp === true, options.commands); // a bad table fails here, not per connection
    this.tlsContext = toContext(options.tlsContext);
    if (options.tls !== undefined && (options.proxyProtocolTimeout ?? 0) > 0) {
      this.tlsAfterProxy = tls.createSecureContext(options.tls);
    }
  }

  private gate: ClientGate | null = null;

  private clientGate(): ClientGate {
    const o = this.baseOptions;
    return (this.gate ??= clientGate(o.connectionLimitExempt ?? CONNECTION_DEFAULTS.exempt, o.maxConnectionsPerClient ?? CONNECTION_DEFAULTS.perClient));
  }

  /** Whether open connections are at stressThreshold of maxConnections or more now. */
  get underStress(): boolean {
    const o = this.baseOptions;
    const threshold = o.stressThreshold ?? CONNECTION_DEFAULTS.stress;
    return this.connections.size >= threshold * (o.maxConnections ?? CONNECTION_DEFAULTS.max);
  }

  private stressGauge(): { readonly active: boolean } {
    const controller = this;
    return {
      get active() {
        return controller.underStress;
      },
    };
  }

  /** Makes the server object for one connection (SMTP or LMTP, with the controller's options). */
  factory(): SMTP {
    const Engine = this.baseOptions.lmtp === true ? LMTP : SMTP;
    return new Engine(this.handler, this.engineOptions());
  }

  /** The readiness probe's socket while start() waits for the greeting. */
  #probe: net.Socket | null = null;

  /**
   * Whether an accepted socket is our own readiness probe (matched by its port; on a Unix
   * socket, which has none, the first connection while the probe is out).
   */
  #isProbe(socket: net.Socket): boolean {
    const probe = this.#probe;
    if (probe === null || probe.localPort !== socket.remotePort || probe.localAddress !== socket.remoteAddress) return false;
    this.#probe = null;
    return true;
  }

  /** One options object that every connection's engine shares (rebuilt when certificates change). */
  private sharedOptions: SMTPOptions | null = null;
  private engineOptions(): SMTPOptions {
    if (this.sharedOptions !== null) return this.sharedOptions;
    const {
      serverHostname,
      readyTimeout: _r,
      stopTimeout: _s,
      lmtp: _l,
      tls: _t,
      maxConnections: _m,
      stressThreshold: _st,
      maxConnectionsPerClient: _p,
      connectionLimitExempt: _e,
      ...smtp
    } = this.baseOptions;
    // aiosmtpd's Controller enables SMTPUTF8 unless told otherwise (the bare SMTP class does not).
    return (this.sharedOptions = {
      enableSMTPUTF8: true,
      ...smtp,
      hostname: serverHostname,
      tlsContext: this.tlsContext,
      [INTERNAL]: { tlsAfterProxy: this.tlsAfterProxy, connectionGate: this.clientGate(), stress: this.stressGauge() },
    });
  }

  /**
   * Swaps certificates without a restart: new connections use them, open ones keep theirs.
   * `tlsContext` is for STARTTLS, `tls` for the implicit-TLS listener.
   */
  reloadTLS(options: { tlsContext?: tls.SecureContext | tls.SecureContextOptions; tls?: tls.SecureContextOptions }): void {
    this.sharedOptions = null;
    if (options.tlsContext !== undefined) this.tlsContext = toContext(options.tlsContext);
    if (options.tls !== undefined) {
      if (this.tlsAfterProxy !== undefined) this.tlsAfterProxy = tls.createSecureContext(options.tls);
      else if (this.server instanceof tls.Server) this.server.setSecureContext(options.tls);
      else throw new Error('this controller has no implicit-TLS listener');
    }
  }


  /** Binds and resolves once the server answers a connection with its 220 greeting. */
  async start(): Promise<void> {
    if (this.#server !== null) throw new Error('controller already started');
    const o = this.baseOptions;
    const gate = this.clientGate();
    // Behind a load balancer the TCP peer is the balancer: count the client the PROXY header
    // names instead, in the engine, once the header is read.
    const byHeader = (o.proxyProtocolTimeout ?? 0) > 0;
    const serve = (socket: net.Socket) => {
      const address = socket.remoteAddress ?? '';
      const full = this.connections.size >= (o.maxConnections ?? CONNECTION_DEFAULTS.max);
      if (full || (!byHeader && !gate.admit(address))) {
        socket.on('error', () => {});
        socket.end(`${Reply.TOO_MANY_CONNECTIONS}\r\n`);
        setTimeout(() => socket.destroy(), 1000).unref();
        return;
      }
      const smtp = this.factory();
      if (this.#isProbe(socket)) smtp[UNLOGGED]();
      this.connections.add(smtp);
      if (smtp.serve === SMTP.prototype.serve) return smtp[ATTACH](socket, released);
      // An engine class with its own serve() runs it, at a promise and a closure per connection.
      void smtp.serve(socket);
      socket.once('close', () => released(smtp, address));
    };
    const released = (smtp: SMTPServer, address: string) => {
      this.connections.delete(smtp as SMTP);
      if (!byHeader) gate.leave(address);
    };
    const tlsOptions = this.baseOptions.tls;
    let server: net.Server;
    if (tlsOptions === undefined || this.tlsAfterProxy !== undefined) {
      server = net.createServer(serve);
    } else {
      const handshakeTimeout = this.baseOptions.tlsHandshakeTimeout ?? 30_000;
      server = tls.createServer({ handshakeTimeout, ...tlsOptions }, serve);
      // A failed or stalled handshake costs that connection only.
      // Node emits this on a handshake timeout but leaves the socket open: close it.
      server.on('tlsClientError', (error, socket) => {
        const logger = this.baseOptions.logger;
        if (logger !== undefined && logger.debugEnabled !== false) emit(logger, { level: 'debug', text: `TLS handshake failed: ${error.message}` });
        socket.destroy();
      });
    }
    this.#server = server;
    try {
      await this.#binding!.listen(server);
      await this.checkGreeting(this.baseOptions.readyTimeout ?? defaultReadyTimeout());
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  /** Connects as a client and waits for `220`, as aiosmtpd's controller does. */
  private checkGreeting(timeout: number): Promise<void> {
    return probeGreeting({
      connect: this.#binding!.connectOptions(),
      tls: this.baseOptions.tls !== undefined,
      tlsAfterProxy: this.tlsAfterProxy !== undefined,
      proxyProtocol: Boolean(this.baseOptions.proxyProtocolTimeout),
      timeout,
      track: (socket) => void (this.#probe = socket),
    });
  }

  /**
   * Closes the listener and every connection, and frees the port. Connections between
   * transactions get 421 at once; a transaction in flight may finish until `deadline` ms
   * (default: `stopTimeout`, 1000), then gets 421 too. Nothing answered 250 is cut short.
   */
  async stop(options: { deadline?: number } = {}): Promise<void> {
    const server = this.#server;
    if (server === null) return;
    this.#server = null;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    const closing = this.#binding!.closing?.();
    await drainConnections(this.connections, options.deadline ?? this.baseOptions.stopTimeout ?? 1000, closed);
    await closing;
    await this.#binding!.cleanup?.();
  }

  /** The graceful shutdown by name: `close({ deadline })` is `stop({ deadline })`. */
  close(options: { deadline?: number } = {}): Promise<void> {
    return this.stop(options);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

export class Controller extends BaseController {
  readonly #address: TcpAddress;
  /**
   * With no hostname: the 127.0.0.1 listener beside the ::1 one, so a client that resolves
   * `localhost` to either address finds the server (as the CLI's `localhost` does).
   */
  #ipv4Twin: net.Server | null = null;

  constructor(handler: Handler, options: ControllerOptions = {}) {
    const { hostname, port, ...rest } = options;
    super(handler, rest);
    this.#address = { hostname, port: port ?? 8025 };
    bind(this, {
      listen: async (server) => void (this.#ipv4Twin = await listenTcp(server, this.#address)),
      connectOptions: () => this.#connectOptions(),
      closing: () => this.#closeTwin(),
    });
  }

  /** The bound address (after start(), the local default when none was given). */
  get hostname(): string | undefined {
    return this.#address.hostname;
  }

  /** The bound port (after start(), the one the system picked for port 0). */
  get port(): number {
    return this.#address.port;
  }

  async #closeTwin(): Promise<void> {
    const twin = this.#ipv4Twin;
    this.#ipv4Twin = null;
    if (twin !== null) await new Promise<void>((resolve) => twin.close(() => resolve()));
  }

  #connectOptions(): net.NetConnectOpts {
    const { hostname, port } = this.#address;
    const host = hostname === '0.0.0.0' ? '127.0.0.1' : hostname === '::' ? '::1' : hostname;
    return { host, port };
  }
}

export class UnixSocketController extends BaseController {
  readonly unixSocket: string;
  readonly #mode: number | undefined;
  /** The socket file we created, so stop() never removes another server's. */
  #file: SocketFile | null = null;

  constructor(handler: Handler, options: UnixSocketControllerOptions) {
    const { unixSocket, mode, ...rest } = options;
    super(handler, rest);
    this.unixSocket = unixSocket;
    this.#mode = mode;
    bind(this, {
      listen: async (server) => void (this.#file = await listenUnix(server, this.unixSocket, this.#mode)),
      connectOptions: () => ({ path: this.unixSocket }),
      cleanup: () => this.#cleanup(),
    });
  }

  async #cleanup(): Promise<void> {
    const mine = this.#file;
    this.#file = null;
    if (mine !== null) await removeSocketFile(this.unixSocket, mine);
  }
}
