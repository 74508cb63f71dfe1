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
  readonly socket: net.Socket;
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {});
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host }, () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  static connectPath(path: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ path }, () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private waitForChange(ms: number): Promise<boolean> {
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
    this.socket.write(data);
  }

  /** Sends a command line with CRLF. */
  line(text: string): void {
    this.socket.write(text + '\r\n');
  }

  /** Reads one whole (possibly multi-line) reply. Rejects on timeout or close. */
  async reply(ms = WAIT_MS): Promise<SMTPReply> {
    const deadline = Date.now() + ms;
    for (;;) {
      const r = this.tryParse();
      if (r !== null) return r;
      if (this.closed) throw new Error(`connection closed; unread: ${JSON.stringify(this.buf.toString('latin1'))}`);
      const left = deadline - Date.now();
      if (left <= 0 || !(await this.waitForChange(left))) {
        throw new Error(`no reply within ${ms} ms; unread: ${JSON.stringify(this.buf.toString('latin1'))}`);
      }
    }
  }

  private tryParse(): SMTPReply | null {
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
  async cmd(text: string): Promise<SMTPReply> {
    this.line(text);
    return this.reply();
  }

  /** Asserts no reply arrives within ms (for "nothing more was executed" checks). */
  async noReplyWithin(ms: number): Promise<boolean> {
    if (this.tryParsePeek()) return false;
    await this.waitForChange(ms);
    return !this.tryParsePeek();
  }

  private tryParsePeek(): boolean {
    return this.buf.indexOf('\r\n') >= 0;
  }

  /** Resolves when the server closed the connection (or rejects after ms). */
  async waitClosed(ms = WAIT_MS): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.closed) {
      const left = deadline - Date.now();
      if (left <= 0 || !(await this.waitForChange(left))) throw new Error('connection still open');
    }
  }

  close(): void {
    this.socket.destroy();
  }
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
