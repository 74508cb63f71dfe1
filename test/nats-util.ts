/**
 * nats-server for the JetStream tests: single nodes and three-node clusters with JetStream, on
 * free loopback ports, each with its own temporary store directory, stopped by pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { freePort } from './cli-util.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, type TestContext } from 'node:test';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { readBody } from '../src/handlers/jetstream-connection.js';
import { decodeRecord, type MailRecord } from '../src/handlers/jetstream-record.js';
import type { RawClient } from './helpers.js';
import { expectCmd, requireTool, type Mode } from './lmtp-util.js';

export { freePort };

export const NATS_SERVER = process.env.NATS_SERVER ?? '/usr/sbin/nats-server';

export function needNats(t: TestContext): boolean {
  return requireTool(t, NATS_SERVER, 'nats-server');
}

export function hasNats(): boolean {
  return existsSync(NATS_SERVER);
}

/** A node that could not start (most often: its port was taken meanwhile). */
export class PortTaken extends Error {}

export class NatsNode {
  private child: ChildProcess | null = null;
  readonly url: string;
  constructor(
    readonly name: string,
    readonly port: number,
    readonly config: string,
  ) {
    this.url = `nats://127.0.0.1:${port}`;
  }

  get running(): boolean {
    return this.child !== null;
  }

  /** Starts (or restarts) the server and waits until it accepts connections. */
  async start(): Promise<void> {
    const child = spawn(NATS_SERVER, ['-c', this.config], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    let log = '';
    child.stderr!.on('data', (d: Buffer) => {
      if (log.length < 20000) log += d.toString();
    });
    child.once('exit', () => {
      if (this.child === child) this.child = null;
    });
    // Its own "ready" line, not a connect to the port: another process may have taken the port
    // between freePort() and now, and would answer in its place.
    const until = Date.now() + 15_000;
    while (!log.includes('Server is ready')) {
      if (this.child !== child) throw new PortTaken(`nats-server ${this.name} exited:\n${log}`);
      if (Date.now() > until) throw new Error(`nats-server ${this.name} did not start:\n${log}`);
      await sleep(50);
    }
  }

  /** kill -9, waiting for the process to be gone. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    if (child === null) return;
    const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    await gone;
    this.child = null;
  }

  /**
   * SIGSTOP / SIGCONT: a server that is there but does not answer. Returns once the kernel shows
   * the process stopped (state T), so nothing sent after it can still be answered.
   */
  async pause(): Promise<void> {
    const child = this.child;
    if (child === null) throw new Error(`nats-server ${this.name} is not running`);
    child.kill('SIGSTOP');
    const until = Date.now() + 5000;
    while (!/^\d+ \(.*\) T/.test(readFileSync(`/proc/${child.pid}/stat`, 'utf8'))) {
      if (Date.now() > until) throw new Error(`nats-server ${this.name} did not stop`);
      await sleep(10);
    }
  }
  resume(): void {
    this.child?.kill('SIGCONT');
  }
}

export class NatsSet {
  constructor(
    readonly nodes: NatsNode[],
    readonly dir: string,
  ) {}
  get urls(): string[] {
    return this.nodes.map((n) => n.url);
  }
  async stop(): Promise<void> {
    for (const node of this.nodes) {
      node.resume();
      await node.kill('SIGTERM');
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** One JetStream node, or a cluster of `size` nodes with JetStream on each, all on loopback. */
export async function startNats(size = 1): Promise<NatsSet> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startNatsOnce(size);
    } catch (error) {
      if (!(error instanceof PortTaken) || attempt === 3) throw error;
    }
  }
}

async function startNatsOnce(size: number): Promise<NatsSet> {
  const dir = await mkdtemp(join(tmpdir(), 'tsmtpd-nats-'));
  const ports = await Promise.all(Array.from({ length: size }, () => freePort()));
  const routes = size > 1 ? await Promise.all(Array.from({ length: size }, () => freePort())) : [];
  const nodes: NatsNode[] = [];
  for (let i = 0; i < size; i++) {
    const name = `n${i + 1}`;
    const lines = [
      `server_name: ${name}`,
      `listen: 127.0.0.1:${ports[i]}`,
      `jetstream { store_dir: "${join(dir, name)}" }`,
    ];
    if (size > 1) {
      lines.push(
        `cluster { name: tsmtpd-test, listen: 127.0.0.1:${routes[i]}, routes: [${routes
          .filter((_, j) => j !== i)
          .map((p) => `"nats-route://127.0.0.1:${p}"`)
          .join(', ')}] }`,
      );
    }
    const config = join(dir, `${name}.conf`);
    await writeFile(config, lines.join('\n') + '\n');
    nodes.push(new NatsNode(name, ports[i]!, config));
  }
  const set = new NatsSet(nodes, dir);
  try {
    await Promise.all(nodes.map((n) => n.start()));
    await jetStreamReady(set.urls);
  } catch (error) {
    await set.stop();
    throw error;
  }
  return set;
}

/** Waits until JetStream answers (a cluster has elected its meta leader). */
export async function jetStreamReady(servers: string[], ms = 20_000): Promise<void> {
  await withJetStream(servers, ms, (jsm) => jsm.getAccountInfo());
}

/**
 * Runs `attempt` with a JetStream manager until it succeeds, for up to `ms` (a cluster that is
 * electing a leader, or a node that just came back, refuses for a few seconds).
 */
export async function withJetStream<T>(servers: string[], ms: number, attempt: (jsm: JetStreamManager) => Promise<T>): Promise<T> {
  const until = Date.now() + ms;
  const nc = await connect({ servers, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  try {
    for (;;) {
      try {
        return await attempt(await jetstreamManager(nc, { timeout: 2000 }));
      } catch (error) {
        if (Date.now() > until) throw error;
        await sleep(200);
      }
    }
  } finally {
    await nc.close();
  }
}


export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface StoredMail {
  seq: number;
  record: MailRecord;
  body: Buffer;
}

/** Every complete mail record in the stream (envelope messages whose body is all there), by sequence. */
export async function storedMail(servers: string[], stream = 'MAIL', subject = 'mail.in'): Promise<StoredMail[]> {
  // Read again from the start if the cluster is still electing (after a node was killed).
  return withJetStream(servers, 30_000, async (jsm) => {
    const info = await jsm.streams.info(stream);
    const out: StoredMail[] = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const msg = await jsm.streams.getMessage(stream, { seq }).catch((error: unknown) => {
        if (/no message found/i.test(String(error))) return null;
        throw error;
      });
      if (msg === null || msg.subject !== subject) continue;
      const { record, inline } = decodeRecord(msg.data);
      const body = await readBody(jsm, stream, record, inline).catch(() => null);
      if (body !== null) out.push({ seq, record, body });
    }
    return out;
  });
}

/** One transaction on an open connection; returns the replies to the body (one per recipient in LMTP). */
export async function transaction(c: RawClient, from: string, to: string[], body: string | Buffer, mode: Mode = 'SMTP'): Promise<string[]> {
  await expectCmd(c, `MAIL FROM:<${from}>`, 250);
  for (const rcpt of to) await expectCmd(c, `RCPT TO:<${rcpt}>`, 250);
  await expectCmd(c, 'DATA', 354);
  c.send(Buffer.concat([Buffer.isBuffer(body) ? body : Buffer.from(body), Buffer.from('.\r\n')]));
  const replies: string[] = [];
  for (let i = 0; i < (mode === 'LMTP' ? to.length : 1); i++) replies.push((await c.reply(20_000)).text);
  return replies;
}


/** Messages in the stream, chunks included. */
export async function streamMessages(servers: string[], stream: string): Promise<number> {
  return withJetStream(servers, 30_000, async (jsm) => (await jsm.streams.info(stream)).state.messages);
}

/** Inside a describe: `size` nodes started before its tests (when nats-server is there), stopped after. */
export function natsForSuite(size: number): () => NatsSet {
  let nats: NatsSet | null = null;
  before(async () => {
    if (hasNats()) nats = await startNats(size);
  });
  after(async () => {
    await nats?.stop();
  });
  return () => nats!;
}
