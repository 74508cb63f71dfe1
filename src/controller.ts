/**
 * Controllers start and stop a server for apps and tests (aiosmtpd's Controller): thin wrappers
 * that hand each accepted socket to a new SMTP instance.
 */
import cluster from 'node:cluster';
import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { chmod, lstat, rename, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Handler } from './handler.js';
import { LMTP } from './lmtp.js';
import { INTERNAL, type SMTPOptions } from './options.js';
import { emit } from './log.js';
import { Reply } from './replies.js';
import type { SMTPServer } from './handler.js';
import { ATTACH, SMTP, UNLOGGED } from './smtp.js';
import { commandTable } from './commands/table.js';
import { allowListOf } from './xclient.js';

export interface BaseControllerOptions extends Omit<SMTPOptions, 'hostname'> {
  /** The name in the greeting and EHLO reply (SMTP's `hostname`). Default: the machine's name. */
  serverHostname?: string;
  /**
   * Milliseconds start() waits for the server to answer. Default: TSMTPD_CONTROLLER_TIMEOUT
   * (seconds) when set, else 5000.
   */
  readyTimeout?: number;
  /** Milliseconds stop() lets a transaction in flight finish before it says 421. Default 1000. */
  stopTimeout?: number;
  /** Speak LMTP (RFC 2033) instead of SMTP. Default false. */
  lmtp?: boolean;
  /** Implicit TLS (SMTPS, RFC 8314): every connection starts with a TLS handshake. */
  tls?: tls.TlsOptions;
  /** Open connections at most; past it a new one gets 421 and is closed. Default 10000. */
  maxConnections?: number;
  /**
   * The share of `maxConnections` at which the server is under stress (Postfix's stress mode):
   * while that many connections are open, `stressTimeout` and `stressMaxErrors` apply to all of
   * them; below it the usual limits come back. Default 0.8; a value above 1 turns it off.
   */
  stressThreshold?: number;
  /** Open connections per client address (Postfix's smtpd_client_connection_count_limit). Default 50. */
  maxConnectionsPerClient?: number;
  /** Addresses or CIDR ranges free of the per-client limit. Default: loopback, as Postfix's mynetworks. */
  connectionLimitExempt?: string[];
}

/**
 * How long stop() waits past its deadline for a handler still at work (storing a message it
 * will answer 250): short, so a hook that never settles cannot hold the stop.
 */
const HANDLER_GRACE_MS = 2000;

const CONNECTION_DEFAULTS = { max: 10_000, perClient: 50, exempt: ['127.0.0.0/8', '::1'], stress: 0.8 };

export interface ControllerOptions extends BaseControllerOptions {
  /**
   * Address to bind. Default: both loopbacks, `::1` (where IPv6 works; `hostname` then reads
   * `::1`) and `127.0.0.1` on the same port, so clients of `localhost` reach it either way.
   */
  hostname?: string;
  /** Port to bind; 0 picks a free one, reported by `port` after start(). Default 8025. */
  port?: number;
}

export interface UnixSocketControllerOptions extends BaseControllerOptions {
  unixSocket: string;
  /** File mode for the socket, e.g. 0o660. Default: as the umask leaves it. */
  mode?: number;
}

function defaultReadyTimeout(): number {
  const env = Number.parseFloat(process.env.TSMTPD_CONTROLLER_TIMEOUT ?? '');
  return Number.isFinite(env) && env > 0 ? env * 1000 : 5000;
}

/** A PROXY protocol v2 header with the LOCAL command and no addresses. */
const PROXY_V2_LOCAL = Buffer.concat([Buffer.from('\r\n\r\n\0\r\nQUIT\n', 'latin1'), Buffer.from([0x20, 0x00, 0x00, 0x00])]);

function toContext(value: tls.SecureContext | tls.SecureContextOptions | undefined): tls.SecureContext | undefined {
  if (value === undefined) return undefined;
  return 'context' in value ? (value as tls.SecureContext) : tls.createSecureContext(value as tls.SecureContextOptions);
}

/** aiosmtpd's get_localhost(): `::1` when this machine can bind it, else `127.0.0.1`. */
export async function getLocalhost(): Promise<string> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve('127.0.0.1'));
    probe.listen(0, '::1', () => probe.close(() => resolve('::1')));
  });
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

  private gate: { admit(address: string): boolean; leave(address: string): void } | null = null;

  /** Counts open connections per client address (maxConnectionsPerClient); exempt ones are free. */
  private clientGate(): { admit(address: string): boolean; leave(address: string): void } {
    if (this.gate !== null) return this.gate;
    const o = this.baseOptions;
    const perClient = new Map<string, number>();
    const exempt = allowListOf(o.connectionLimitExempt ?? CONNECTION_DEFAULTS.exempt);
    const limit = o.maxConnectionsPerClient ?? CONNECTION_DEFAULTS.perClient;
    const free = (address: string) => {
      const a = address.replace(/^::ffff:/, '');
      return a === '' || !net.isIP(a) || exempt.check(a, net.isIPv6(a) ? 'ipv6' : 'ipv4');
    };
    return (this.gate = {
      admit(address) {
        if (free(address)) return true;
        const n = (perClient.get(address) ?? 0) + 1;
        if (n > limit) return false;
        perClient.set(address, n);
        return true;
      },
      leave(address) {
        if (free(address)) return;
        const n = (perClient.get(address) ?? 1) - 1;
        if (n <= 0) perClient.delete(address);
        else perClient.set(address, n);
      },
    });
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
    return new Promise((resolve, reject) => {
      let socket: net.Socket;
      let raw: net.Socket;
      if (this.baseOptions.tls === undefined) {
        socket = raw = net.connect(this.#binding!.connectOptions());
      } else if (this.tlsAfterProxy !== undefined) {
        // The header in clear, then TLS: as HAProxy does.
        raw = net.connect(this.#binding!.connectOptions());
        raw.write(PROXY_V2_LOCAL);
        raw.on('error', () => {});
        socket = tls.connect({ socket: raw, rejectUnauthorized: false });
      } else {
        socket = raw = tls.connect({ ...this.#binding!.connectOptions(), rejectUnauthorized: false } as tls.ConnectionOptions);
      }
      this.#probe = raw;
      let got = '';
      const fail = (error: Error) => {
        clearTimeout(timer);
        this.#probe = null;
        socket.destroy();
        reject(error);
      };
      const timer = setTimeout(() => fail(new Error(`server not ready within ${timeout} ms`)), timeout);
      // Behind a load balancer the server waits for a PROXY header: send the health-check
      // kind (v2 LOCAL), which keeps the socket's own address.
      if (this.baseOptions.proxyProtocolTimeout && this.tlsAfterProxy === undefined) socket.write(PROXY_V2_LOCAL);
      socket.setEncoding('latin1');
      socket.on('data', (text: string) => {
        got += text;
        if (!got.includes('\n')) return;
        clearTimeout(timer);
        this.#probe = null;
        socket.destroy();
        if (got.startsWith('220')) resolve();
        else reject(new Error(`unexpected greeting: ${got.trim()}`));
      });
      socket.on('error', (error) => fail(error));
      socket.on('end', () => fail(new Error('server closed the connection before its greeting')));
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
    for (const smtp of this.connections) smtp.drain();
    const deadline = options.deadline ?? this.baseOptions.stopTimeout ?? 1000;
    const force = setTimeout(() => {
      for (const smtp of this.connections) smtp.shutdown();
    }, deadline);
    // A client that ignores the 421 and keeps its side open is cut off shortly after; one whose
    // handler is still at work (storing a message) is given until a hard limit.
    const cut = setTimeout(() => {
      for (const smtp of this.connections) if (!smtp.commandRunning) smtp.destroy();
    }, deadline + 1000);
    const hard = setTimeout(() => {
      for (const smtp of this.connections) smtp.destroy();
    }, deadline + HANDLER_GRACE_MS);
    await closed;
    clearTimeout(force);
    clearTimeout(cut);
    clearTimeout(hard);
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
  #hostname: string | undefined;
  #port: number;
  /**
   * With no hostname: the 127.0.0.1 listener beside the ::1 one, so a client that resolves
   * `localhost` to either address finds the server (as the CLI's `localhost` does).
   */
  #ipv4Twin: net.Server | null = null;

  constructor(handler: Handler, options: ControllerOptions = {}) {
    const { hostname, port, ...rest } = options;
    super(handler, rest);
    this.#hostname = hostname;
    this.#port = port ?? 8025;
    bind(this, {
      listen: (server) => this.#listen(server),
      connectOptions: () => this.#connectOptions(),
      closing: () => this.#closeTwin(),
    });
  }

  /** The bound address (after start(), the local default when none was given). */
  get hostname(): string | undefined {
    return this.#hostname;
  }

  /** The bound port (after start(), the one the system picked for port 0). */
  get port(): number {
    return this.#port;
  }

  async #listen(server: net.Server): Promise<void> {
    const both = this.#hostname === undefined && (await getLocalhost()) === '::1';
    this.#hostname ??= both ? '::1' : '127.0.0.1';
    const requested = this.#port;
    // Port 0 picks a free port on ::1 that another program may hold on 127.0.0.1: pick again.
    for (let attempt = 1; ; attempt++) {
      await listenOn(server, this.#port, this.#hostname);
      const address = server.address();
      if (address !== null && typeof address === 'object') this.#port = address.port;
      if (!both) return;
      // The twin hands its sockets to the main server, which serves them (TLS included).
      const twin = net.createServer((socket) => server.emit('connection', socket));
      try {
        await listenOn(twin, this.#port, '127.0.0.1');
        this.#ipv4Twin = twin;
        return;
      } catch (error) {
        if (requested !== 0 || attempt === 5 || (error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
        await new Promise<void>((resolve) => server.close(() => resolve()));
        this.#port = 0;
      }
    }
  }

  async #closeTwin(): Promise<void> {
    const twin = this.#ipv4Twin;
    this.#ipv4Twin = null;
    if (twin !== null) await new Promise<void>((resolve) => twin.close(() => resolve()));
  }

  #connectOptions(): net.NetConnectOpts {
    const host = this.#hostname === '0.0.0.0' ? '127.0.0.1' : this.#hostname === '::' ? '::1' : this.#hostname;
    return { host, port: this.#port };
  }
}

function listenOn(server: net.Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export class UnixSocketController extends BaseController {
  readonly unixSocket: string;
  readonly #mode: number | undefined;

  constructor(handler: Handler, options: UnixSocketControllerOptions) {
    const { unixSocket, mode, ...rest } = options;
    super(handler, rest);
    this.unixSocket = unixSocket;
    this.#mode = mode;
    bind(this, {
      listen: (server) => this.#listen(server),
      connectOptions: () => ({ path: this.unixSocket }),
      cleanup: () => this.#cleanup(),
    });
  }

  /** Identity of the socket file we created, so stop() never removes another server's. */
  #inode: { dev: number; ino: number; ctimeMs: number } | null = null;

  async #listen(server: net.Server): Promise<void> {
    if (cluster.isWorker) {
      // Under --workers the cluster primary binds the path once and shares it; every worker
      // names the same path (the CLI's primary cleared a stale file before forking).
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.unixSocket, () => {
          server.off('error', reject);
          resolve();
        });
      });
      if (this.#mode !== undefined) await chmod(this.unixSocket, this.#mode).catch(() => undefined);
      return;
    }
    await checkSocketPath(this.unixSocket);
    // Listen on a temporary name, set the mode, then rename into place: the socket never
    // appears with the umask's permissions, a stale file is replaced atomically, and libuv
    // (which unlinks the name it listened on when the server closes) never touches the
    // final path, which may belong to another server by then.
    const temp = join(dirname(this.unixSocket), `.tsmtpd-${process.pid}-${randomBytes(4).toString('hex')}.sock`);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(temp, () => {
        server.off('error', reject);
        resolve();
      });
    });
    if (this.#mode !== undefined) await chmod(temp, this.#mode);
    await rename(temp, this.unixSocket);
    const { dev, ino, ctimeMs } = await lstat(this.unixSocket);
    this.#inode = { dev, ino, ctimeMs };
  }

  async #cleanup(): Promise<void> {
    const mine = this.#inode;
    this.#inode = null;
    if (mine === null) return;
    try {
      const now = await lstat(this.unixSocket);
      // Inode numbers are reused at once on some file systems: the change time tells them apart.
      if (now.dev === mine.dev && now.ino === mine.ino && now.ctimeMs === mine.ctimeMs) await unlink(this.unixSocket);
    } catch (error) {
      // Gone already, or no longer ours to remove (privileges dropped after binding): leave it;
      // the next start replaces a stale socket anyway.
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'EACCES' && code !== 'EPERM') throw error;
    }
  }
}

/**
 * A socket file left by an earlier run may be replaced; a socket some live server still answers
 * on may not (EADDRINUSE, as for a TCP port), nor anything that is not a socket.
 */
export async function checkSocketPath(path: string): Promise<void> {
  try {
    if (!(await lstat(path)).isSocket()) {
      throw Object.assign(new Error(`listen EADDRINUSE: ${path} exists and is not a socket`), { code: 'EADDRINUSE' });
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw Object.assign(new Error(`listen EADDRINUSE: a server is running on ${path}`), { code: 'EADDRINUSE' });
}
