/**
 * nats-server for the JetStream tests: single nodes and three-node clusters with JetStream, on
 * free loopback ports, each with its own temporary store directory, stopped by pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { freePort } from './cli-util.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
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
    const until = Date.now() + 15_000;
    while (!(await listening(this.port))) {
      if (this.child === null) throw new Error(`nats-server ${this.name} exited:\n${log}`);
      if (Date.now() > until) throw new Error(`nats-server ${this.name} did not listen:\n${log}`);
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

  /** SIGSTOP / SIGCONT: a server that is there but does not answer. */
  pause(): void {
    this.child?.kill('SIGSTOP');
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
  const until = Date.now() + ms;
  const nc = await connect({ servers, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  try {
    for (;;) {
      try {
        const jsm = await jetstreamManager(nc, { timeout: 2000 });
        await jsm.getAccountInfo();
        return;
      } catch (error) {
        if (Date.now() > until) throw error;
        await sleep(200);
      }
    }
  } finally {
    await nc.close();
  }
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
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
  const nc = await connect({ servers, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  try {
    const jsm = await jetstreamManager(nc, { timeout: 5000 });
    const info = await jsm.streams.info(stream);
    const out: StoredMail[] = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const msg = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
      if (msg === null || msg.subject !== subject) continue;
      const { record, inline } = decodeRecord(msg.data);
      const body = await readBody(jsm, stream, record, inline).catch(() => null);
      if (body !== null) out.push({ seq, record, body });
    }
    return out;
  } finally {
    await nc.close();
  }
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
  const nc = await connect({ servers });
  try {
    return (await (await jetstreamManager(nc)).streams.info(stream)).state.messages;
  } finally {
    await nc.close();
  }
}
