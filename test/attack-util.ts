/**
 * Helpers for the attack tests (framing, smuggling, pipelining, limits): random chunking, byte-level
 * reference implementations of the DATA reader and the command framer, and bounded socket
 * utilities on top of helpers.ts's RawClient.
 */
import net from 'node:net';
import { RawClient, Recorder, type SMTPReply } from './helpers.js';
import { SMTP } from '../src/smtp.js';
import type { SMTPOptions } from '../src/options.js';
import type { Handler } from '../src/handler.js';
import type { Envelope, MailOptions, RcptOptions, Session } from '../src/session.js';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

import type { Rng } from './rng.js';

/** Cuts a buffer at random boundaries; about a third of the chunks are a single byte. */
export function randomChunks(rng: Rng, data: Buffer, maxChunk = 16): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  while (pos < data.length) {
    const n = rng.next() < 0.35 ? 1 : rng.int(1, maxChunk);
    out.push(data.subarray(pos, pos + n));
    pos += n;
  }
  return out;
}

// ---- reference DATA reader ---------------------------------------------------------------

export interface RefBody {
  /** Body bytes determined so far (after dot-unstuffing), withheld `.`/`.\r` at a line start excluded. */
  content: Buffer;
  /** Bytes after CRLF.CRLF; empty when not done. */
  rest: Buffer;
  done: boolean;
}

/**
 * A deliberately naive byte-at-a-time state machine over the whole input (RFC 5321 §4.5.2):
 * lines end only at CRLF; a line that is exactly "." ends the body; any other line starting
 * with "." loses that dot; bare CR and bare LF are ordinary content.
 */
export function referenceBody(input: Buffer): RefBody {
  const out: number[] = [];
  type St = 'start' | 'dot' | 'dotcr' | 'text';
  let st: St = 'start';
  let prevCR = false;
  for (let i = 0; i < input.length; i++) {
    const b = input[i]!;
    if (st === 'start') {
      if (b === 0x2e) {
        st = 'dot';
        continue;
      }
      out.push(b);
      st = 'text';
      prevCR = b === 0x0d;
      continue;
    }
    if (st === 'dot') {
      if (b === 0x0d) {
        st = 'dotcr';
        continue;
      }
      // The dot was stuffing: dropped. This byte is text (it is not CR, so no CRLF can end here).
      out.push(b);
      st = 'text';
      prevCR = false;
      continue;
    }
    if (st === 'dotcr') {
      if (b === 0x0a) return { content: Buffer.from(out), rest: input.subarray(i + 1), done: true };
      out.push(0x0d); // ".\r" + other: the dot was stuffing, the CR is content
      prevCR = true;
      st = 'text';
      // fall through to text handling of b
    }
    out.push(b);
    if (prevCR && b === 0x0a) st = 'start';
    prevCR = b === 0x0d;
  }
  return { content: Buffer.from(out), rest: Buffer.alloc(0), done: false };
}

// ---- reference command framer ------------------------------------------------------------

export type RefLine = { kind: 'line'; bytes: Buffer } | { kind: 'bare-lf' } | { kind: 'too-long' };

/** Splits the whole input at LF; returns the complete lines and the unterminated tail. */
export function referenceLines(input: Buffer, maxLine: number): { lines: RefLine[]; pending: Buffer } {
  const lines: RefLine[] = [];
  let start = 0;
  for (let i = 0; i < input.length; i++) {
    if (input[i] !== 0x0a) continue;
    const len = i + 1 - start; // line length, LF included
    if (len > maxLine) lines.push({ kind: 'too-long' });
    else if (len < 2 || input[i - 1] !== 0x0d) lines.push({ kind: 'bare-lf' });
    else lines.push({ kind: 'line', bytes: Buffer.from(input.subarray(start, i - 1)) });
    start = i + 1;
  }
  return { lines, pending: input.subarray(start) };
}

// ---- socket helpers ----------------------------------------------------------------------

/** Reads replies until the server closes; bounded in count and time. */
export async function repliesUntilClose(c: RawClient, max = 1000, ms = 5000): Promise<SMTPReply[]> {
  const out: SMTPReply[] = [];
  const deadline = Date.now() + ms;
  while (out.length < max) {
    try {
      out.push(await c.reply(Math.max(1, deadline - Date.now())));
    } catch (error) {
      if (c.closed && /unread: ""$/.test((error as Error).message)) return out;
      throw error;
    }
  }
  throw new Error(`more than ${max} replies`);
}

/** Reads exactly n replies. */
export async function replies(c: RawClient, n: number, ms = 5000): Promise<SMTPReply[]> {
  const out: SMTPReply[] = [];
  for (let i = 0; i < n; i++) out.push(await c.reply(ms));
  return out;
}

/** Writes each piece separately, with a short pause so that the server reads them apart. */
export async function sendPieces(c: RawClient, pieces: Array<string | Buffer>, pauseMs = 2): Promise<void> {
  c.socket.setNoDelay(true);
  for (const p of pieces) {
    c.send(p);
    await sleep(pauseMs);
  }
}

/** Writes every byte on its own, yielding to the event loop in between. */
export async function sendBytewise(c: RawClient, data: Buffer | string, pauseEvery = 1): Promise<void> {
  const buf = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
  c.socket.setNoDelay(true);
  for (let i = 0; i < buf.length; i++) {
    c.send(buf.subarray(i, i + 1));
    if ((i + 1) % pauseEvery === 0) await new Promise((r) => setTimeout(r, 0));
  }
}

/** A fresh connection delivers one message end to end (the server is alive and sane). */
export async function deliverOne(port: number, recorder: Recorder, tag = 'alive'): Promise<void> {
  const before = recorder.messages.length;
  const c = await RawClient.connect(port);
  try {
    const g = await c.reply();
    if (g.code !== 220) throw new Error(`greeting ${g.text}`);
    for (const [cmd, code] of [
      ['EHLO alive.example', 250],
      [`MAIL FROM:<${tag}@example.com>`, 250],
      ['RCPT TO:<rcpt@example.com>', 250],
      ['DATA', 354],
    ] as const) {
      const r = await c.cmd(cmd);
      if (r.code !== code) throw new Error(`${cmd}: ${r.text}`);
    }
    c.send(`Subject: ${tag}\r\n\r\n${tag}\r\n.\r\n`);
    const r = await c.reply();
    if (r.code !== 250) throw new Error(`end of data: ${r.text}`);
    if ((await c.cmd('QUIT')).code !== 221) throw new Error('QUIT');
    await c.waitClosed();
  } finally {
    c.close();
  }
  if (recorder.messages.length !== before + 1) throw new Error('message not recorded');
  const m = recorder.messages[recorder.messages.length - 1]!;
  if (m.content.toString('latin1') !== `Subject: ${tag}\r\n\r\n${tag}\r\n`) throw new Error('content changed');
}

/** A Recorder that also logs every hook call, with a recognizable NOOP reply. */
export class Spy extends Recorder {
  events: string[] = [];
  handleMAIL(_s: unknown, _ss: Session, envelope: Envelope, address: string, _o: MailOptions): string {
    this.events.push(`MAIL ${address}`);
    envelope.mailFrom = address;
    return '250 OK';
  }
  handleRCPT(_s: unknown, _ss: Session, envelope: Envelope, address: string, _o: RcptOptions): string {
    this.events.push(`RCPT ${address}`);
    envelope.rcptTos.push(address);
    return '250 OK';
  }
  override handleDATA(server: unknown, session: unknown, envelope: Envelope): string {
    this.events.push(`DATA ${envelope.mailFrom}`);
    return super.handleDATA(server, session, envelope);
  }
  handleNOOP(_s: unknown, _ss: Session, _e: Envelope, arg: string): string {
    this.events.push(`NOOP ${arg}`);
    return `250 2.0.0 noop-mark ${arg}`.trimEnd();
  }
}

/**
 * The SMTP class as a protocol factory on a plain net.Server ("without a controller"), keeping
 * the server side of each connection so a test can look at it (paused, destroyed).
 */
export interface RawServer extends AsyncDisposable {
  port: number;
  sockets: net.Socket[];
  engines: SMTP[];
  close(): Promise<void>;
}

export async function startRawServer(handler: Handler, options: SMTPOptions = {}): Promise<RawServer> {
  const sockets: net.Socket[] = [];
  const engines: SMTP[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    const smtp = new SMTP(handler, { hostname: 'test.example', ...options });
    engines.push(smtp);
    void smtp.serve(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const close = async (): Promise<void> => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return { port, sockets, engines, close, [Symbol.asyncDispose]: close };
}
