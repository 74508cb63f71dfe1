/**
 * Helpers for lmtp.test.ts, bdat.test.ts and lmtp-postfix.test.ts: an LMTP (or SMTP) server on a
 * free port, a greeted raw client, exact reply counting with a marker command, Maildir reading
 * and the "tool missing" rule. Every wait is bounded.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { ControllerOptions } from '../src/controller.js';
import type { Handler } from '../src/handler.js';
import type { Envelope } from '../src/session.js';
import { RawClient, startServer, type SMTPReply } from './helpers.js';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export const b = (s: string): Buffer => Buffer.from(s, 'latin1');

export type Mode = 'SMTP' | 'LMTP';
export const MODES: readonly Mode[] = ['SMTP', 'LMTP'];

/** The greeting verb of a mode. */
export function hello(mode: Mode): string {
  return mode === 'LMTP' ? 'LHLO' : 'EHLO';
}

/** A Controller on 127.0.0.1:0 speaking the mode. */
export function startMode(mode: Mode, handler: Handler, options: ControllerOptions = {}) {
  return startServer(handler, { lmtp: mode === 'LMTP', ...options });
}

/** Connects (TCP port or Unix socket path), reads the 220. */
export async function connect(where: number | string): Promise<RawClient> {
  const c = typeof where === 'number' ? await RawClient.connect(where) : await RawClient.connectPath(where);
  c.socket.setNoDelay(true);
  const greeting = await c.reply();
  assert.equal(greeting.code, 220, `greeting: ${greeting.text}`);
  return c;
}

/** Connects and greets with EHLO (SMTP) or LHLO (LMTP); returns the client and the 250 reply. */
export async function greet(where: number | string, mode: Mode = 'LMTP'): Promise<{ c: RawClient; hello: SMTPReply }> {
  const c = await connect(where);
  const r = await c.cmd(`${hello(mode)} client.example`);
  assert.equal(r.code, 250, `${hello(mode)}: ${r.text}`);
  return { c, hello: r };
}

/** Sends a command and asserts its reply code. */
export async function expectCmd(c: RawClient, command: string, code: number): Promise<SMTPReply> {
  const r = await c.cmd(command);
  assert.equal(r.code, code, `${command}: expected ${code}, got ${JSON.stringify(r.text)}`);
  return r;
}

/**
 * The marker: `HELP QUIT` answers 214, which nothing else in these tests does. Sending it after
 * what is under test and reading replies up to it counts the replies exactly, with no timeouts.
 */
export const MARKER = 'HELP QUIT\r\n';

/** Reads replies until the 214 of MARKER (not included); bounded in count and time. */
export async function repliesUntilMarker(c: RawClient, max = 200, ms = 8000): Promise<SMTPReply[]> {
  const out: SMTPReply[] = [];
  const deadline = Date.now() + ms;
  while (out.length <= max) {
    let r: SMTPReply;
    try {
      r = await c.reply(Math.max(1, deadline - Date.now()));
    } catch (error) {
      const texts = JSON.stringify(out.map((x) => x.text));
      throw new Error(`${(error as Error).message} (before the marker) after ${out.length} replies: ${texts}`);
    }
    if (r.code === 214) return out;
    out.push(r);
  }
  throw new Error(`more than ${max} replies before the marker: ${JSON.stringify(out.map((r) => r.text))}`);
}

/** Reads replies until the server closes; bounded in count and time. */
export async function repliesUntilClose(c: RawClient, max = 200, ms = 8000): Promise<SMTPReply[]> {
  const out: SMTPReply[] = [];
  const deadline = Date.now() + ms;
  while (out.length <= max) {
    try {
      out.push(await c.reply(Math.max(1, deadline - Date.now())));
    } catch (error) {
      if (c.closed && /unread: ""$/.test((error as Error).message)) return out;
      throw error;
    }
  }
  throw new Error(`more than ${max} replies`);
}

export function codes(replies: SMTPReply[]): number[] {
  return replies.map((r) => r.code);
}

/** Writes each byte on its own, waiting a timer tick in between so the server reads them apart. */
export async function sendBytewise(c: RawClient, data: Buffer | string): Promise<void> {
  const buf = typeof data === 'string' ? b(data) : data;
  for (let i = 0; i < buf.length; i++) {
    c.send(buf.subarray(i, i + 1));
    await sleep(0);
  }
}

/** Writes a large buffer in pieces, honouring backpressure; bounded by `ms`. */
export async function sendLarge(c: RawClient, data: Buffer, piece = 65536, ms = 10000): Promise<void> {
  const deadline = Date.now() + ms;
  for (let pos = 0; pos < data.length; pos += piece) {
    if (!c.socket.write(data.subarray(pos, pos + piece))) {
      await new Promise<void>((resolve, reject) => {
        const left = deadline - Date.now();
        const timer = setTimeout(() => reject(new Error(`write stalled at ${pos} of ${data.length}`)), Math.max(1, left));
        c.socket.once('drain', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

/** What a handler saw of one message. */
export interface Seen {
  mailFrom: string | null;
  rcptTos: string[];
  content: Buffer;
  mailParams: string[];
}

export function snapshot(envelope: Envelope): Seen {
  return {
    mailFrom: envelope.mailFrom,
    rcptTos: [...envelope.rcptTos],
    content: Buffer.from(envelope.originalContent!),
    mailParams: [...envelope.mailParams],
  };
}

export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'tsmtpd-lmtp-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A Maildir message split into the trace headers Mailbox prepends and the bytes after them. */
export interface MaildirFile {
  name: string;
  peer: string;
  mailFrom: string;
  rcptTo: string;
  /** Everything after the three X- lines, byte for byte. */
  body: Buffer;
}

/** Splits off X-Peer, X-MailFrom, X-RcptTo (in that order, CRLF or LF ended). */
export function parseMaildirFile(name: string, data: Buffer): MaildirFile {
  const fields: string[] = [];
  let pos = 0;
  for (const key of ['X-Peer: ', 'X-MailFrom: ', 'X-RcptTo: ']) {
    const lf = data.indexOf(0x0a, pos);
    assert.ok(lf >= 0, `${name}: no ${key} line`);
    const line = data.subarray(pos, lf).toString('utf8').replace(/\r$/, '');
    assert.ok(line.startsWith(key), `${name}: expected ${key}, got ${JSON.stringify(line)}`);
    fields.push(line.slice(key.length));
    pos = lf + 1;
  }
  return { name, peer: fields[0]!, mailFrom: fields[1]!, rcptTo: fields[2]!, body: data.subarray(pos) };
}

/** Every message in DIR/new, parsed; tmp/ must be empty. */
export async function readMaildir(dir: string): Promise<MaildirFile[]> {
  let names: string[];
  try {
    names = await readdir(join(dir, 'new'));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  const out: MaildirFile[] = [];
  for (const name of names.sort()) out.push(parseMaildirFile(name, await readFile(join(dir, 'new', name))));
  const leftovers = await readdir(join(dir, 'tmp')).catch(() => []);
  assert.deepEqual(leftovers, [], 'nothing may be left in tmp/');
  return out;
}

/** Polls until the Maildir holds `n` messages (or the time is up); returns them. */
export async function waitMaildir(dir: string, n: number, ms = 5000): Promise<MaildirFile[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const files = await readMaildir(dir);
    if (files.length >= n || Date.now() > deadline) return files;
    await sleep(20);
  }
}

/**
 * A tool the test needs (e.g. /usr/sbin/smtp-source): true when present. Missing under CI it
 * fails the test (CI installs it); missing elsewhere it skips with a message.
 */
export function requireTool(t: TestContext, path: string, pkg: string): boolean {
  if (existsSync(path)) return true;
  const message = `${path} not found (Debian package ${pkg})`;
  if (process.env.CI) assert.fail(`${message}: CI must install it`);
  t.skip(`${message}: skipped outside CI`);
  return false;
}
