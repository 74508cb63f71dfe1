/**
 * Test helpers: a raw-bytes SMTP client over a real socket, and a Controller on a free port.
 * Every wait is bounded, so a broken server fails a test instead of hanging the run.
 */
import net from 'node:net';
import { Controller, type ControllerOptions } from '../src/controller.js';
import type { Handler } from '../src/handler.js';

export interface SMTPReply {
  code: number;
  lines: string[];
  /** The reply text as received, lines joined with \n, without CRLF. */
  text: string;
}

const WAIT_MS = 5000;

export class RawClient {
  socket: net.Socket;
  /** Bytes received and not yet consumed as replies. */
  protected buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  /** Every byte received, consumed or not. */
  received = Buffer.alloc(0);
  closed = false;
  closedAt = 0;
  protected readonly onData = (chunk: Buffer) => {
    this.buf = Buffer.concat([this.buf, chunk]);
    this.received = Buffer.concat([this.received, chunk]);
    this.wake();
  };
  protected readonly onClose = () => {
    this.closed = true;
    this.closedAt = Date.now();
    this.wake();
  };

  constructor(socket: net.Socket) {
    this.socket = socket;
    this.listen(socket);
  }

  protected listen(socket: net.Socket): void {
    socket.on('data', this.onData);
    socket.on('close', this.onClose);
    socket.on('error', () => {});
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return connectSocket(() => net.connect({ port, host }), 'connect').then((s) => new RawClient(s));
  }

  static connectPath(path: string): Promise<RawClient> {
    return connectSocket(() => net.connect({ path }), 'connect').then((s) => new RawClient(s));
  }

  get unread(): string {
    return this.buf.toString('latin1');
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves true when something arrives or the socket closes, false after ms. */
  protected waitForChange(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /** Sends exact bytes: a string is sent as UTF-8, nothing is added. */
  send(data: string | Buffer): void {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  /** Sends a command line with CRLF. */
  line(text: string): void {
    this.send(text + '\r\n');
  }

  /** Reads one whole (possibly multi-line) reply. Rejects on timeout or close. */
  async reply(ms = WAIT_MS): Promise<SMTPReply> {
    const deadline = Date.now() + ms;
    for (;;) {
      const r = this.tryParse();
      if (r !== null) return r;
      if (this.closed) throw new Error(`connection closed; unread: ${JSON.stringify(this.unread)}`);
      const left = deadline - Date.now();
      if (left <= 0 || !(await this.waitForChange(left))) {
        throw new Error(`no reply within ${ms} ms; unread: ${JSON.stringify(this.unread)}`);
      }
    }
  }

  protected tryParse(): SMTPReply | null {
    const lines: string[] = [];
    let pos = 0;
    for (;;) {
      const end = this.buf.indexOf('\r\n', pos);
      if (end < 0) return null;
      const line = this.buf.subarray(pos, end).toString('utf8');
      lines.push(line);
      pos = end + 2;
      if (line[3] !== '-') {
        this.buf = this.buf.subarray(pos);
        return { code: Number(line.slice(0, 3)), lines, text: lines.join('\n') };
      }
    }
  }

  /** Sends a command and returns its reply. */
  async cmd(text: string, ms = WAIT_MS): Promise<SMTPReply> {
    this.line(text);
    return this.reply(ms);
  }

  /** Asserts no reply arrives within ms (for "nothing more was executed" checks). */
  async noReplyWithin(ms: number): Promise<boolean> {
    if (this.buf.indexOf('\r\n') >= 0) return false;
    await this.waitForChange(ms);
    return this.buf.indexOf('\r\n') < 0;
  }

  /** Resolves when the server closed the connection (or rejects after ms). */
  async waitClosed(ms = WAIT_MS): Promise<void> {
    if (!(await this.closedWithin(ms))) throw new Error('connection still open');
  }

  /** Whether the server closed the connection within ms. */
  async closedWithin(ms = WAIT_MS): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await this.waitForChange(left);
    }
    return true;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Opens a socket (plain or TLS) and resolves once `event` fired; rejects on error or after 5 s. */
export function connectSocket<S extends net.Socket>(open: () => S, event: 'connect' | 'secureConnect'): Promise<S> {
  return new Promise((resolve, reject) => {
    const socket = open();
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${event} timed out`));
    }, WAIT_MS);
    socket.once(event, () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('error', (e) => {
      clearTimeout(timer);
      socket.destroy();
      reject(e);
    });
  });
}

/** Starts a Controller on 127.0.0.1 and a free port. Use with `await using` or stop() it. */
export async function startServer(handler: Handler, options: ControllerOptions = {}): Promise<Controller> {
  const controller = new Controller(handler, { hostname: '127.0.0.1', port: 0, ...options });
  await controller.start();
  return controller;
}

/** Connects, reads the greeting, and says EHLO. */
export async function greeted(port: number, ehlo = 'EHLO client.example'): Promise<RawClient> {
  const client = await RawClient.connect(port);
  const greeting = await client.reply();
  if (greeting.code !== 220) throw new Error(`greeting: ${greeting.text}`);
  const r = await client.cmd(ehlo);
  if (r.code !== 250) throw new Error(`${ehlo}: ${r.text}`);
  return client;
}

/** A handler that records every message it is given. */
export class Recorder implements Handler {
  messages: Array<{ mailFrom: string | null; rcptTos: string[]; content: Buffer; mailParams: string[] }> = [];
  handleDATA(_server: unknown, _session: unknown, envelope: import('../src/session.js').Envelope): string {
    this.messages.push({
      mailFrom: envelope.mailFrom,
      rcptTos: [...envelope.rcptTos],
      content: envelope.originalContent!,
      mailParams: [...envelope.mailParams],
    });
    return '250 OK';
  }
}
