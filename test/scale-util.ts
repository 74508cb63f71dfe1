/**
 * Helpers for the "running at scale" tests (proxy-engine, xclient, workers, shutdown, haproxy):
 * PROXY v1/v2 header builders, a handler that records who the engine thinks the client is, a
 * raw client that remembers every byte it ever received (for "closed without a greeting"
 * checks), SMTP transactions over raw sockets, and HAProxy run in the foreground.
 * Every wait is bounded; every child process is killed by its owner in `finally`.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { Handler, SMTPServer } from '../src/handler.js';
import { PROXY_V2_SIGNATURE, crc32c, type ProxyData } from '../src/proxy-protocol.js';
import type { Envelope, Peer, Session } from '../src/session.js';
import { canBind, freePort } from './cli-util.js';
import { RawClient, connectSocket } from './helpers.js';
import type { SMTPReply } from './helpers.js';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// ---- PROXY headers ------------------------------------------------------------------------

export function v1Header(family: 'TCP4' | 'TCP6', src: string, dst: string, srcPort: number, dstPort: number): Buffer {
  return Buffer.from(`PROXY ${family} ${src} ${dst} ${srcPort} ${dstPort}\r\n`, 'latin1');
}

export interface TLV {
  type: number;
  value: Buffer | string;
}

export const TLV_ALPN = 0x01;
export const TLV_AUTHORITY = 0x02;
export const TLV_CRC32C = 0x03;
export const TLV_UNIQUE_ID = 0x05;

function ipv4Bytes(address: string): Buffer {
  return Buffer.from(address.split('.').map(Number));
}

function ipv6Bytes(address: string): Buffer {
  // Expand the text form by hand (no node API returns the bytes); no dotted-quad forms here.
  const text = address;
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const words = [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t].map((w) => parseInt(w, 16));
  const out = Buffer.alloc(16);
  words.forEach((w, i) => out.writeUInt16BE(w, 2 * i));
  return out;
}

/**
 * A v2 header. `crc` adds a CRC32C TLV (last) with the right checksum; `badCrc` makes it wrong.
 * `lengthOverride` writes another value into the length field (for oversized/truncated tests).
 */
export function v2Header(options: {
  command?: 'PROXY' | 'LOCAL';
  family?: 'TCP4' | 'TCP6' | 'UNSPEC';
  src?: string;
  dst?: string;
  srcPort?: number;
  dstPort?: number;
  tlvs?: TLV[];
  crc?: boolean;
  badCrc?: boolean;
  lengthOverride?: number;
}): Buffer {
  const command = options.command ?? 'PROXY';
  const family = options.family ?? (command === 'LOCAL' ? 'UNSPEC' : 'TCP4');
  let famByte = 0x00;
  let addresses = Buffer.alloc(0);
  if (family === 'TCP4') {
    famByte = 0x11;
    const ports = Buffer.alloc(4);
    ports.writeUInt16BE(options.srcPort ?? 0, 0);
    ports.writeUInt16BE(options.dstPort ?? 0, 2);
    addresses = Buffer.concat([ipv4Bytes(options.src ?? '0.0.0.0'), ipv4Bytes(options.dst ?? '0.0.0.0'), ports]);
  } else if (family === 'TCP6') {
    famByte = 0x21;
    const ports = Buffer.alloc(4);
    ports.writeUInt16BE(options.srcPort ?? 0, 0);
    ports.writeUInt16BE(options.dstPort ?? 0, 2);
    addresses = Buffer.concat([ipv6Bytes(options.src ?? '::'), ipv6Bytes(options.dst ?? '::'), ports]);
  }
  const tlvs = [...(options.tlvs ?? [])];
  if (options.crc || options.badCrc) tlvs.push({ type: TLV_CRC32C, value: Buffer.alloc(4) });
  const tlvBytes = Buffer.concat(
    tlvs.map((t) => {
      const value = typeof t.value === 'string' ? Buffer.from(t.value, 'utf8') : t.value;
      const head = Buffer.alloc(3);
      head[0] = t.type;
      head.writeUInt16BE(value.length, 1);
      return Buffer.concat([head, value]);
    }),
  );
  const fixed = Buffer.alloc(4);
  fixed[0] = command === 'LOCAL' ? 0x20 : 0x21;
  fixed[1] = famByte;
  fixed.writeUInt16BE(options.lengthOverride ?? addresses.length + tlvBytes.length, 2);
  const header = Buffer.concat([PROXY_V2_SIGNATURE, fixed, addresses, tlvBytes]);
  if (options.crc || options.badCrc) {
    const sum = crc32c(header);
    header.writeUInt32BE(options.badCrc ? (sum ^ 1) >>> 0 : sum, header.length - 4);
  }
  return header;
}

// ---- a handler that records who the client is --------------------------------------------

export interface SeenPeer {
  peer: Peer;
  proxyData: ProxyData | null;
  xclient: Record<string, string | null> | null;
  authenticated: boolean;
  authData: unknown;
  hostName: string | null;
}

/**
 * Records, at MAIL, who the engine says the client is; counts handlePROXY calls; keeps each
 * message. `proxyVerdict` decides handlePROXY (default: accept everything).
 */
export class PeerRecorder implements Handler {
  seen: SeenPeer[] = [];
  proxyCalls: ProxyData[] = [];
  messages: Array<{ peer: Peer; content: Buffer }> = [];
  proxyVerdict: ((data: ProxyData) => boolean | Promise<boolean>) | null = null;

  handlePROXY(_server: SMTPServer, _session: Session, _envelope: Envelope, proxyData: ProxyData): boolean | Promise<boolean> {
    this.proxyCalls.push(proxyData);
    return this.proxyVerdict === null ? true : this.proxyVerdict(proxyData);
  }

  handleMAIL(_server: SMTPServer, session: Session, envelope: Envelope, address: string): string {
    this.seen.push({
      peer: { ...session.peer },
      proxyData: session.proxyData,
      xclient: session.xclient,
      authenticated: session.authenticated,
      authData: session.authData,
      hostName: session.hostName,
    });
    envelope.mailFrom = address;
    return `250 OK peer=${session.peer.address}:${session.peer.port}`;
  }

  handleDATA(_server: SMTPServer, session: Session, envelope: Envelope): string {
    this.messages.push({ peer: { ...session.peer }, content: envelope.originalContent! });
    return '250 OK';
  }
}

// ---- a raw client that keeps everything it received -----------------------------------------

/**
 * Like helpers.ts's RawClient, plus `received` (every byte ever read) and `closedAt`, for
 * "closed without a greeting, at about this time" checks.
 */
/** The raw client of helpers.ts, connectable from a chosen local address. */
export class Probe extends RawClient {
  readonly openedAt = Date.now();

  /** Connects (optionally from a chosen local address); rejects after 5 s. */
  static override connect(port: number, options: { host?: string; localAddress?: string } | string = {}): Promise<Probe> {
    const o = typeof options === 'string' ? { host: options } : options;
    return connectSocket(() => {
      const socket = net.connect({ port, host: o.host ?? '127.0.0.1', localAddress: o.localAddress });
      socket.setNoDelay(true);
      return socket;
    }, 'connect').then((s) => new Probe(s));
  }

  /** Waits until at least one complete line arrived or the socket closed; false after `ms`. */
  async waitLineOrClose(ms = 5000): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.closed && this.buf.indexOf('\r\n') < 0) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await this.waitForChange(left);
    }
    return true;
  }
}

/** Asserts the server closed the connection within `ms` and never sent a byte. */
export async function assertClosedUngreeted(p: Probe, ms: number, what: string): Promise<number> {
  const closed = await p.closedWithin(ms);
  assert.ok(closed, `${what}: still open after ${ms} ms (received ${JSON.stringify(p.received.toString('latin1'))})`);
  assert.equal(p.received.length, 0, `${what}: the server sent ${JSON.stringify(p.received.toString('latin1'))}`);
  return p.closedAt - p.openedAt;
}

/** Sends bytes one at a time with a pause between writes (separate TCP segments). */
export async function drip(p: Probe, data: Buffer, pauseMs = 1): Promise<void> {
  for (let i = 0; i < data.length && !p.closed; i++) {
    p.send(data.subarray(i, i + 1));
    await sleep(pauseMs);
  }
}

// ---- transactions ------------------------------------------------------------------------

/** A whole transaction on a greeted (or not yet greeted) probe; returns the final reply. */
export async function transaction(
  p: Probe,
  options: { greet?: boolean; from?: string; to?: string; body?: string; quit?: boolean } = {},
): Promise<SMTPReply> {
  if (options.greet !== false) {
    const g = await p.reply();
    assert.equal(g.code, 220, `greeting: ${g.text}`);
  }
  const e = await p.cmd('EHLO client.example');
  assert.equal(e.code, 250, `EHLO: ${e.text}`);
  const m = await p.cmd(`MAIL FROM:<${options.from ?? 'a@example.com'}>`);
  assert.equal(m.code, 250, `MAIL: ${m.text}`);
  const r = await p.cmd(`RCPT TO:<${options.to ?? 'b@example.com'}>`);
  assert.equal(r.code, 250, `RCPT: ${r.text}`);
  const d = await p.cmd('DATA');
  assert.equal(d.code, 354, `DATA: ${d.text}`);
  p.send(`${options.body ?? 'Subject: t\r\n\r\nhello\r\n'}.\r\n`);
  const end = await p.reply(10000);
  if (options.quit !== false) {
    p.line('QUIT');
    await p.reply().catch(() => undefined);
  }
  return end;
}


/** Runs `fn` over `items` with at most `limit` running at once. */
export async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  });
  await Promise.all(workers);
  return out;
}

// ---- tools, temporary directories, processes ---------------------------------------------

export function hasTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore', timeout: 5000 }).status === 0;
}

/** True when installed; otherwise fails under CI and skips elsewhere. */
export function needTool(t: TestContext, tool: string, pkg = tool): boolean {
  if (hasTool(tool)) return true;
  if (process.env.CI) assert.fail(`${tool} is missing: CI must install the Debian package ${pkg}`);
  t.skip(`${tool} not installed (Debian package ${pkg}); skipped outside CI`);
  return false;
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `tsmtpd-${prefix}-`));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export async function listDir(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

export async function readFiles(dir: string): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (const name of await listDir(dir)) out.push(await readFile(join(dir, name)));
  return out;
}

/** True while a process with this pid exists (and is not a zombie we could still reap). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie answers kill(0) but is gone for our purposes.
  try {
    const stat = spawnSync('cat', [`/proc/${pid}/stat`], { encoding: 'utf8', timeout: 2000 }).stdout;
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return true;
  }
}

/** The parent pid of a process (Linux /proc), or null. */
export function parentOf(pid: number): number | null {
  const r = spawnSync('cat', [`/proc/${pid}/stat`], { encoding: 'utf8', timeout: 2000 });
  const m = /^\d+ \(.*\) \S+ (\d+)/.exec(r.stdout ?? '');
  return m === null ? null : Number(m[1]);
}

/** Polls `predicate` every 20 ms; false after `ms`. */
export async function until(predicate: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await predicate()) return true;
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
}

// ---- HAProxy -----------------------------------------------------------------------------

export interface HAProxy {
  child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

/**
 * Runs `haproxy -db -f CONFIG` in the foreground (never a daemon) and waits until `port` on
 * 127.0.0.1 is taken by it. Checks the configuration with `-c` first, for a clear message.
 */
export async function startHAProxy(dir: string, config: string, port: number): Promise<HAProxy> {
  const path = join(dir, 'haproxy.cfg');
  await writeFile(path, config);
  const check = spawnSync('haproxy', ['-c', '-f', path], { encoding: 'utf8', timeout: 10000 });
  assert.equal(check.status, 0, `haproxy -c rejected the configuration:\n${config}\n${check.stdout}${check.stderr}`);
  const child = spawn('haproxy', ['-db', '-f', path], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  let exited = false;
  const gone = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), resolve())));
  const stop = async () => {
    if (!exited) {
      child.kill('SIGKILL');
      await Promise.race([gone, sleep(3000)]);
    }
  };
  const up = await until(async () => exited || !(await canBind(port)), 5000);
  if (!up || exited) {
    await stop();
    assert.fail(`haproxy did not start listening on ${port}: ${out}`);
  }
  return { child, output: () => out, stop };
}

/**
 * Starts HAProxy on a free front port, retrying with another when a parallel test took the one
 * picked (ports are found by binding and releasing, which races).
 */
export async function startHAProxyAnywhere(
  dir: string,
  config: (front: number) => string,
): Promise<HAProxy & { front: number }> {
  for (let attempt = 1; ; attempt++) {
    const front = await freePort();
    try {
      return { ...(await startHAProxy(dir, config(front), front)), front };
    } catch (error) {
      if (attempt >= 5 || !/failed to start their listeners|did not start listening/.test(String(error))) throw error;
    }
  }
}
