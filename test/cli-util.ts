/**
 * Helpers for tests that run the `tsmtpd` command line (dist/cli.js) as a child process.
 * Every wait is bounded; every child is killed by `stop()` (call it in `finally`).
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file runs from build/test/). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = join(ROOT, 'dist', 'cli.js');

/** A port that was free a moment ago on `host` (listen on 0, read it, close). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address() as net.AddressInfo;
      server.close(() => resolve(address.port));
    });
  });
}

/** True when `port` on `host` can be bound right now (binds and closes at once). */
export function canBind(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

/** True when something accepts a TCP connection on host:port. */
export function canConnect(port: number, host = '127.0.0.1', ms = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), ms);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** True when the user `uid`:`gid` can run the node binary at `path`. */
function canRun(path: string, uid: number, gid: number): boolean {
  const r = spawnSync(path, ['-e', ''], { uid, gid, stdio: 'ignore', timeout: 10000 });
  return r.error === undefined && r.status === 0;
}

const nodeCopies = new Map<string, string | Error>();

/**
 * A node binary that the user `uid`:`gid` can execute: this process's own, or else a copy in a
 * world-readable temporary directory (removed at exit). A Node from `npx -p node@V` lives under
 * root's 0700 home, where `nobody` cannot reach it. An Error says why no copy could be made.
 */
export function nodeBinaryFor(uid: number, gid: number): string | Error {
  const key = `${uid}:${gid}`;
  let found = nodeCopies.get(key);
  if (found === undefined) {
    if (canRun(process.execPath, uid, gid)) {
      found = process.execPath;
    } else {
      try {
        const dir = mkdtempSync(join(tmpdir(), 'tsmtpd-node-'));
        process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
        chmodSync(dir, 0o755);
        const copy = join(dir, 'node');
        copyFileSync(process.execPath, copy);
        chmodSync(copy, 0o755);
        found = canRun(copy, uid, gid) ? copy : new Error(`user ${key} cannot run a copy of node in ${dir} either`);
      } catch (error) {
        found = new Error(`cannot copy ${process.execPath} where user ${key} can run it: ${(error as Error).message}`);
      }
    }
    nodeCopies.set(key, found);
  }
  return found;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class CliProcess {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  exit: Exit | null = null;
  readonly exited: Promise<Exit>;
  private waiters: Array<() => void> = [];

  constructor(args: string[], options: SpawnOptions = {}) {
    const node = options.uid === undefined ? process.execPath : nodeBinaryFor(options.uid, options.gid ?? options.uid);
    if (node instanceof Error) throw node;
    this.child = spawn(node, [CLI, ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      ...options,
    });
    this.child.stdout!.setEncoding('utf8');
    this.child.stderr!.setEncoding('utf8');
    this.child.stdout!.on('data', (text: string) => {
      this.stdout += text;
      this.wake();
    });
    this.child.stderr!.on('data', (text: string) => {
      this.stderr += text;
      this.wake();
    });
    this.exited = new Promise((resolve) => {
      // 'close' comes after both pipes ended, so stdout/stderr are complete.
      this.child.once('close', (code, signal) => {
        this.exit = { code, signal };
        this.wake();
        resolve(this.exit);
      });
      this.child.once('error', () => {
        this.exit ??= { code: null, signal: null };
        this.wake();
        resolve(this.exit);
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Waits until `predicate()` holds; rejects after `ms` with what the child printed. */
  async until(predicate: () => boolean, what: string, ms = 8000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!predicate()) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `timed out after ${ms} ms waiting for ${what}; exit=${JSON.stringify(this.exit)} ` +
            `stdout=${JSON.stringify(this.stdout)} stderr=${JSON.stringify(this.stderr)}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Waits for the "listening on" line on stderr (fails fast if the child exits first). */
  async listening(ms = 8000): Promise<void> {
    await this.until(() => /listening on/.test(this.stderr) || this.exit !== null, "'listening on'", ms);
    if (!/listening on/.test(this.stderr)) {
      throw new Error(`tsmtpd exited before listening: ${JSON.stringify(this.exit)} stderr=${JSON.stringify(this.stderr)}`);
    }
  }

  /** Waits for exit; rejects after ms (the child is left for stop() to kill). */
  async waitExit(ms = 8000): Promise<Exit> {
    await this.until(() => this.exit !== null, 'exit', ms);
    return this.exit!;
  }

  /** Kills the child (SIGKILL) if it still runs, and waits (bounded) for it to be gone. */
  async stop(): Promise<void> {
    if (this.exit === null) {
      this.child.kill('SIGKILL');
      await Promise.race([this.exited, new Promise((r) => setTimeout(r, 3000))]);
    }
  }
}

/** Runs the CLI to completion (bounded) and returns its exit and output. */
export async function runCli(
  args: string[],
  options: SpawnOptions = {},
  ms = 30000,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  const p = new CliProcess(args, options);
  try {
    const exit = await p.waitExit(ms);
    return { ...exit, stdout: p.stdout, stderr: p.stderr };
  } finally {
    await p.stop();
  }
}
