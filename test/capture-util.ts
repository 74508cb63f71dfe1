/** Shared by the capture tests: a Capture with SMTP and HTTP on loopback, an HTTP client, a WebSocket client. */
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import nodemailer from 'nodemailer';
import { Capture, type CaptureOptions } from '../src/capture/capture.js';
import { CaptureHttpServer, type CaptureHttpOptions } from '../src/capture/http.js';
import { Controller, type ControllerOptions } from '../src/controller.js';

type MailOptions = Parameters<ReturnType<typeof nodemailer.createTransport>['sendMail']>[0];

export interface CaptureRig {
  capture: Capture;
  smtp: Controller;
  http: CaptureHttpServer;
  base: string;
  send(mail: MailOptions): Promise<{ response: string }>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** nodemailer on loopback, in the clear, with bounded waits. */
export function smtpTransport(port: number, extra: Record<string, unknown> = {}) {
  return nodemailer.createTransport({
    host: '127.0.0.1',
    port,
    secure: false,
    ignoreTLS: true,
    connectionTimeout: 5000,
    greetingTimeout: 5000,
    socketTimeout: 10000,
    ...extra,
  } as Parameters<typeof nodemailer.createTransport>[0]);
}

export async function captureRig(
  options: { capture?: CaptureOptions; http?: CaptureHttpOptions; smtp?: ControllerOptions; handler?: Capture } = {},
): Promise<CaptureRig> {
  const capture = options.handler ?? new Capture(options.capture);
  const smtp = new Controller(capture, { hostname: '127.0.0.1', port: 0, ...options.smtp });
  await smtp.start();
  const http = new CaptureHttpServer(capture, { host: '127.0.0.1', port: 0, ...options.http });
  await http.start();
  const transport = smtpTransport(smtp.port);
  return {
    capture,
    smtp,
    http,
    base: http.url,
    send: (mail) => transport.sendMail(mail),
    async [Symbol.asyncDispose]() {
      transport.close();
      await http.stop();
      await smtp.stop();
    },
  };
}

/** fetch with a bounded wait. */
export function get(url: string, init: RequestInit = {}): Promise<Response> {
  return fetch(url, { signal: AbortSignal.timeout(5000), ...init });
}

export async function json<T = unknown>(url: string, init: RequestInit = {}): Promise<{ status: number; body: T; headers: Headers }> {
  const res = await get(url, init);
  const text = await res.text();
  const isJSON = (res.headers.get('content-type') ?? '').startsWith('application/json');
  return { status: res.status, body: (isJSON ? JSON.parse(text) : text) as T, headers: res.headers };
}

export function jsonBody(method: string, value: unknown): RequestInit {
  return { method, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(value) };
}

/** A minimal RFC 6455 client over a raw socket (Node 20 has no WebSocket client). */
export class WsClient {
  private buf = Buffer.alloc(0);
  readonly messages: string[] = [];
  closed = false;
  private waiters: Array<() => void> = [];
  constructor(readonly socket: net.Socket, rest: Buffer) {
    socket.on('data', (chunk: Buffer) => this.feed(chunk));
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {});
    if (rest.length > 0) this.feed(rest);
  }

  static async connect(port: number, path = '/api/events', headers: Record<string, string> = {}): Promise<{ status: number; head: string; client: WsClient | null }> {
    const socket = net.connect({ port, host: '127.0.0.1' });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const key = randomBytes(16).toString('base64');
    const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`);
    let data = Buffer.alloc(0);
    const deadline = Date.now() + 5000;
    while (!data.includes('\r\n\r\n')) {
      if (Date.now() > deadline) throw new Error('no handshake reply');
      const chunk = await new Promise<Buffer | null>((resolve) => {
        const t = setTimeout(() => resolve(null), 200);
        socket.once('data', (c: Buffer) => {
          clearTimeout(t);
          resolve(c);
        });
        socket.once('close', () => resolve(null));
      });
      if (chunk !== null) data = Buffer.concat([data, chunk]);
      else if (socket.destroyed) break;
    }
    const end = data.indexOf('\r\n\r\n');
    const head = data.subarray(0, Math.max(0, end)).toString('latin1');
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
    if (status !== 101) {
      socket.destroy();
      return { status, head: data.toString('latin1'), client: null };
    }
    return { status, head, client: new WsClient(socket, data.subarray(end + 4)) };
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private feed(chunk: Buffer): void {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      if (this.buf.length < 2) break;
      let len = this.buf[1]! & 0x7f;
      let at = 2;
      if (len === 126) {
        if (this.buf.length < 4) break;
        len = this.buf.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) break;
        len = Number(this.buf.readBigUInt64BE(2));
        at = 10;
      }
      if (this.buf.length < at + len) break;
      const opcode = this.buf[0]! & 0x0f;
      const payload = this.buf.subarray(at, at + len);
      if (opcode === 1) this.messages.push(payload.toString('utf8'));
      if (opcode === 8) this.messages.push(`close:${payload.length >= 2 ? payload.readUInt16BE(0) : ''}`);
      this.buf = this.buf.subarray(at + len);
    }
    this.wake();
  }

  /** Sends one masked frame. */
  sendFrame(opcode: number, payload: Buffer, masked = true): void {
    const mask = randomBytes(4);
    const head = Buffer.from([0x80 | opcode, (masked ? 0x80 : 0) | payload.length]);
    const body = Buffer.from(payload);
    if (masked) for (let i = 0; i < body.length; i++) body[i]! ^= mask[i & 3]!;
    this.socket.write(Buffer.concat(masked ? [head, mask, body] : [head, body]));
  }

  /** The first message (parsed JSON) passing the test; bounded. */
  async next(test: (message: { Type: string; Data: unknown } | string) => boolean, ms = 5000): Promise<{ Type: string; Data: unknown } | string> {
    const deadline = Date.now() + ms;
    let seen = 0;
    for (;;) {
      for (; seen < this.messages.length; seen++) {
        const raw = this.messages[seen]!;
        const value = raw.startsWith('close:') ? raw : (JSON.parse(raw) as { Type: string; Data: unknown });
        if (test(value)) return value;
      }
      if (this.closed) throw new Error(`closed; got ${JSON.stringify(this.messages)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no such event; got ${JSON.stringify(this.messages)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

/** One raw HTTP/1.1 exchange: for requests fetch will not make (a forged Host, garbage). */
export function rawHttp(port: number, request: string, ms = 3000): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let data = '';
    socket.on('error', () => {});
    socket.on('data', (c: Buffer) => (data += c.toString('latin1')));
    socket.on('close', () => resolve(data));
    socket.write(request);
    setTimeout(() => socket.destroy(), ms);
  });
}
