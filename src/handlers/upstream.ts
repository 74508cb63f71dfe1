/**
 * A small SMTP client for the Proxy handler's upstream side (RFC 5321, RFC 3207 STARTTLS): one
 * connection, one command at a time (no pipelining), replies read whole (multi-line included)
 * and returned as values, never thrown: only the connection failing (refused, reset, closed,
 * timed out, TLS, a reply that is not SMTP) rejects, with an UpstreamError.
 *
 * Every wait is bounded: connecting, the greeting and each reply by `timeout`, a blocked write by
 * `timeout` too; between commands, a connection left alone for `idleTimeout` (its client vanished
 * mid-transaction) says QUIT and closes, and does not keep the process alive meanwhile.
 *
 * The message body goes out through DataEncoder (data-encoder.ts); replies are read by
 * ReplyReader (upstream-replies.ts).
 */
import net from 'node:net';
import tls from 'node:tls';
import { DataEncoder } from './data-encoder.js';
import { ReplyReader } from './upstream-replies.js';
import { DEFAULT_IDLE_TIMEOUT, DEFAULT_UPSTREAM_TIMEOUT, UpstreamError, type UpstreamOptions, type UpstreamReply } from './upstream-types.js';

export { DataEncoder, encodeData, toCRLF } from './data-encoder.js';
export {
  DEFAULT_IDLE_TIMEOUT,
  DEFAULT_UPSTREAM_TIMEOUT,
  UpstreamError,
  type UpstreamErrorCode,
  type UpstreamOptions,
  type UpstreamReply,
} from './upstream-types.js';

/** Unasked 421 replies we keep (a server closing on its own); more is not SMTP. */
const MAX_QUEUED = 2;
/** The body is handed to the socket in pieces of this size, for backpressure. */
const WRITE_PIECE = 256 * 1024;
const QUIT_WAIT_MS = 5000;

type Settle = { resolve: (reply: UpstreamReply) => void; reject: (error: UpstreamError) => void };

export class Upstream {
  private readonly options: UpstreamOptions;
  private readonly timeout: number;
  private readonly idleTimeout: number;
  private socket: net.Socket;
  private isSecure: boolean;
  private readonly replies = new ReplyReader();
  private readonly queue: UpstreamReply[] = [];
  private waiter: Settle | null = null;
  /** Rejecters of other waits (connect, TLS handshake, drain): the first failure ends them all. */
  private readonly waits = new Set<(error: UpstreamError) => void>();
  private error: UpstreamError | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  /** QUIT was sent (or is being sent): no more commands. */
  private quitting = false;
  /** The upstream said 421: it is closing its side. */
  private closing = false;
  private ext = new Map<string, string>();
  /** STARTTLS is in flight: what follows its reply in clear is dropped, not read (RFC 3207 §4.2). */
  private dropAfterReply = false;
  private dropping = false;
  /** LMTP replies still to come after the body's first one. */
  private expected = 0;

  private constructor(options: UpstreamOptions) {
    this.options = options;
    this.timeout = options.timeout ?? DEFAULT_UPSTREAM_TIMEOUT;
    this.idleTimeout = options.idleTimeout ?? DEFAULT_IDLE_TIMEOUT;
    this.isSecure = options.secure === true;
    this.socket = this.isSecure
      ? tls.connect({ ...options.tls, host: options.host, port: options.port, servername: this.servername() })
      : net.connect({ host: options.host, port: options.port });
    this.attach(this.socket);
  }

  /**
   * Connects, reads the greeting, says EHLO (HELO when EHLO is refused) and, when the upstream
   * offers it and neither `secure` nor `ignoreTLS` is set, STARTTLS and EHLO again. Rejects with
   * an UpstreamError when any of it fails; the connection is then closed.
   */
  static async connect(options: UpstreamOptions): Promise<Upstream> {
    const upstream = new Upstream(options);
    try {
      await upstream.handshake();
      return upstream;
    } catch (error) {
      upstream.close();
      throw error instanceof UpstreamError ? error : new UpstreamError(String(error), 'ECONNECTION');
    }
  }

  /** The EHLO keywords (upper case) and their parameters; empty after HELO. */
  get extensions(): ReadonlyMap<string, string> {
    return this.ext;
  }

  supports(keyword: string): boolean {
    return this.ext.has(keyword.toUpperCase());
  }

  /**
   * True when the connection runs over TLS whose certificate chain verified against the trusted
   * CAs and whose name matched the host (or `tls.servername`): what RFC 8689 REQUIRETLS asks for.
   */
  get verified(): boolean {
    return this.isSecure && this.socket instanceof tls.TLSSocket && this.socket.authorized;
  }

  /** True once the connection runs over TLS (implicit or STARTTLS). */
  get secure(): boolean {
    return this.isSecure;
  }

  /** True while commands can still be sent. */
  get open(): boolean {
    return this.error === null && !this.quitting && !this.closing && !this.socket.destroyed;
  }

  /** Sends one command line (CRLF added) and resolves to its reply. */
  async command(line: string): Promise<UpstreamReply> {
    if (/[\r\n]/.test(line)) throw new TypeError('an SMTP command must not contain CR or LF');
    this.usable();
    return this.exchange(Buffer.from(line + '\r\n', 'utf8'));
  }

  /**
   * DATA, then the message (normalized to CRLF and dot-stuffed as it goes), then CRLF.CRLF.
   * Resolves to the final reply; when DATA itself is refused, to that refusal.
   */
  async data(chunks: Iterable<Buffer> | AsyncIterable<Buffer>): Promise<UpstreamReply> {
    const go = await this.command('DATA');
    if (go.code !== 354) {
      if (go.code < 400) throw this.fail(new UpstreamError(`unexpected reply to DATA: ${go.code}`, 'EPROTOCOL', go));
      return go;
    }
    return this.sendBody(chunks);
  }

  /** The message, normalized and dot-stuffed, then CRLF.CRLF; resolves to the (first) reply. */
  private async sendBody(chunks: Iterable<Buffer> | AsyncIterable<Buffer>): Promise<UpstreamReply> {
    const encoder = new DataEncoder();
    for await (const chunk of chunks) {
      for (let at = 0; at < chunk.length; at += WRITE_PIECE) {
        await this.write(encoder.push(chunk.subarray(at, at + WRITE_PIECE)));
      }
    }
    return this.exchange(encoder.end());
  }

  /**
   * LMTP (RFC 2033 §4.2): DATA and the message, then one reply per accepted recipient, in RCPT
   * order. A refused DATA stands for every recipient; over SMTP the one reply stands for all.
   */
  async dataPerRecipient(chunks: Iterable<Buffer> | AsyncIterable<Buffer>, recipients: number): Promise<UpstreamReply[]> {
    const n = Math.max(1, recipients);
    const all = (reply: UpstreamReply) => Array.from({ length: n }, () => reply);
    if (this.options.lmtp !== true) return all(await this.data(chunks));
    const go = await this.command('DATA');
    if (go.code !== 354) {
      if (go.code < 400) throw this.fail(new UpstreamError(`unexpected reply to DATA: ${go.code}`, 'EPROTOCOL', go));
      return all(go);
    }
    // The replies after the first come unasked, together: they are kept, not taken for strays.
    this.expected = n - 1;
    const replies = [await this.sendBody(chunks)];
    try {
      while (replies.length < n) replies.push(await this.read());
    } finally {
      this.expected = 0;
    }
    return replies;
  }

  /** Ends politely: QUIT, then closes on its reply (or after a few seconds). Never throws. */
  quit(): void {
    if (this.quitting || this.error !== null || this.waiter !== null) return this.close();
    this.quitting = true;
    this.clearIdle();
    if (this.closing || this.socket.destroyed || !this.socket.writable) return this.close();
    const timer = setTimeout(() => this.close(), Math.min(this.timeout, QUIT_WAIT_MS));
    timer.unref();
    this.waiter = { resolve: () => this.close(), reject: () => clearTimeout(timer) };
    this.socket.write('QUIT\r\n');
  }

  /** Closes at once. */
  close(): void {
    this.fail(new UpstreamError('connection closed by us', 'ECLOSED'));
  }

  // ---- inside ------------------------------------------------------------------------------

  private servername(): string | undefined {
    return this.options.tls?.servername ?? (net.isIP(this.options.host) === 0 ? this.options.host : undefined);
  }

  private async handshake(): Promise<void> {
    // Waiting for the greeting from the start: over TLS it may come with the end of the handshake.
    const greeted = this.read();
    greeted.catch(() => {});
    await this.waitFor(this.socket, this.isSecure ? 'secureConnect' : 'connect');
    this.socket.setNoDelay(true);
    const greeting = await greeted;
    if (greeting.code !== 220) throw this.fail(new UpstreamError(`greeting ${greeting.code}`, 'EGREETING', greeting));
    await this.hello();
    if (!this.isSecure && this.options.ignoreTLS !== true && this.supports('STARTTLS')) await this.startTLS();
    this.usable();
  }

  private async hello(): Promise<void> {
    this.ext = new Map();
    const ehlo = await this.command(`${this.options.lmtp === true ? 'LHLO' : 'EHLO'} ${this.options.name}`);
    if (ehlo.code >= 200 && ehlo.code < 300) {
      for (const line of ehlo.lines.slice(1)) {
        const m = /^([A-Za-z0-9][A-Za-z0-9-]*)(?:[ =](.*))?$/.exec(line.trim());
        if (m !== null) this.ext.set(m[1]!.toUpperCase(), m[2] ?? '');
      }
      return;
    }
    if (ehlo.code === 421 || this.options.lmtp === true) throw this.fail(new UpstreamError('EHLO refused', 'EHELO', ehlo));
    const helo = await this.command(`HELO ${this.options.name}`);
    if (helo.code < 200 || helo.code >= 300) throw this.fail(new UpstreamError('HELO refused', 'EHELO', helo));
  }

  /** RFC 3207. A refused STARTTLS leaves the session in clear (opportunistic TLS). */
  private async startTLS(): Promise<void> {
    this.dropAfterReply = true;
    const reply = await this.command('STARTTLS');
    if (reply.code === 421) throw this.fail(new UpstreamError('STARTTLS refused', 'EHELO', reply));
    if (reply.code !== 220) {
      // Refused: the session goes on in clear (anything that came after the refusal was dropped).
      this.dropping = false;
      return;
    }
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    // Whatever came after the 220, before the handshake, is not to be trusted (RFC 3207 §4.2).
    this.dropping = false;
    this.replies.reset();
    this.queue.length = 0;
    const secure = tls.connect({ ...this.options.tls, socket: plain, host: this.options.host, servername: this.servername() });
    this.socket = secure;
    this.attach(secure);
    await this.waitFor(secure, 'secureConnect');
    this.isSecure = true;
    await this.hello();
  }

  private attach(socket: net.Socket): void {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    // A TLS error before the handshake ended, without a syscall, is the handshake's (a
    // certificate), not the network's.
    let established = false;
    socket.once('secureConnect', () => void (established = true));
    const tlsError = (error: Error) => socket instanceof tls.TLSSocket && !established && !('syscall' in error);
    socket.on('error', (error: Error) => this.fail(new UpstreamError(error.message, tlsError(error) ? 'ETLS' : 'ECONNECTION')));
    socket.on('close', () => this.fail(new UpstreamError('connection closed by the upstream', 'ECLOSED')));
  }

  private onData(chunk: Buffer): void {
    if (this.dropping) return;
    const error = this.replies.push(chunk, (reply) => this.onReply(reply), () => this.error === null && !this.dropping);
    if (error !== null) this.fail(error);
  }

  private onReply(reply: UpstreamReply): void {
    if (reply.code === 421) this.closing = true;
    const waiter = this.waiter;
    if (waiter !== null) {
      this.waiter = null;
      if (this.dropAfterReply) {
        this.dropAfterReply = false;
        this.dropping = true;
      }
      waiter.resolve(reply);
    } else if (this.expected > 0) {
      this.expected -= 1;
      this.queue.push(reply);
    } else if (reply.code !== 421 || this.queue.push(reply) > MAX_QUEUED) {
      // Every command's reply is awaited before the command is written, so this reply answers
      // nothing: taking it for the next command's would pass the wrong replies on. Only a 421
      // (a server closing on its own) is kept, to be read as the next reply.
      this.fail(new UpstreamError(`a reply nobody asked for: ${reply.code}`, 'EPROTOCOL', reply));
    }
  }

  private usable(): void {
    if (this.error !== null) throw this.error;
    if (this.quitting) throw new UpstreamError('the connection is ending', 'ECLOSED');
    if (this.closing) throw new UpstreamError('the upstream said 421', 'ECLOSED');
  }

  /** The next reply, within `timeout`. */
  private read(): Promise<UpstreamReply> {
    const queued = this.queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.error !== null) return Promise.reject(this.error);
    if (this.waiter !== null) return Promise.reject(new UpstreamError('a command is already in flight', 'EPROTOCOL'));
    this.busy();
    return new Promise<UpstreamReply>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new UpstreamError(`no reply within ${this.timeout} ms`, 'ETIMEDOUT')), this.timeout);
      this.waiter = {
        resolve: (reply) => {
          clearTimeout(timer);
          this.idle();
          resolve(reply);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
    });
  }

  /** Writes `data` and resolves to the reply it gets; the wait for it starts before the write. */
  private async exchange(data: Buffer): Promise<UpstreamReply> {
    const reply = this.read();
    reply.catch(() => {}); // a failed write rejects it too; the write's error is the one thrown
    await this.write(data);
    return reply;
  }

  /** Writes, waiting (within `timeout`) while the socket's buffer is full. */
  private async write(data: Buffer): Promise<void> {
    if (this.error !== null) throw this.error;
    if (data.length === 0) return;
    this.busy();
    if (this.socket.write(data)) return;
    await this.waitFor(this.socket, 'drain');
  }

  /** Resolves on `event`, rejects on failure or after `timeout` (which then fails the connection). */
  private waitFor(socket: net.Socket, event: string): Promise<void> {
    if (this.error !== null) return Promise.reject(this.error);
    return new Promise<void>((resolve, reject) => {
      const done = (error: UpstreamError | null) => {
        clearTimeout(timer);
        socket.off(event, onEvent);
        this.waits.delete(onFail);
        if (error === null) resolve();
        else reject(error);
      };
      const onEvent = () => done(null);
      const onFail = (error: UpstreamError) => done(error);
      const timer = setTimeout(() => this.fail(new UpstreamError(`no ${event} within ${this.timeout} ms`, 'ETIMEDOUT')), this.timeout);
      socket.once(event, onEvent);
      this.waits.add(onFail);
    });
  }

  /** The first failure is kept, ends every wait and destroys the socket; returns the kept one. */
  private fail(error: UpstreamError): UpstreamError {
    if (this.error !== null) return this.error;
    this.error = error;
    this.clearIdle();
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.reject(error);
    for (const reject of [...this.waits]) reject(error);
    this.waits.clear();
    this.socket.destroy();
    return error;
  }

  /** Something is in flight: the process waits for it. */
  private busy(): void {
    this.clearIdle();
    this.socket.ref();
  }

  /** Nothing in flight: start the idle clock, and let the process exit if this is all it has. */
  private idle(): void {
    this.clearIdle();
    if (this.error !== null || this.quitting) return;
    this.idleTimer = setTimeout(() => this.quit(), this.idleTimeout);
    this.idleTimer.unref();
    this.socket.unref();
  }

  private clearIdle(): void {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }
}
