/**
 * `tsmtpd --workers N` (node:cluster) over real sockets: N processes answer on one port, a
 * worker that dies is replaced, SIGTERM stops them all with exit 0, and a worker that cannot
 * start makes the primary give up with a non-zero exit instead of looping.
 * Each reply names the process that answered (a handler module loaded with -c), so the test
 * can tell the workers apart.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { CliProcess, freePort } from './cli-util.js';
import { Probe, alive, parentOf, pool, removeDir, sleep, tempDir, transaction, until } from './scale-util.js';

/** A handler whose DATA reply names the worker that stored the message. */
const HANDLER = `
export class H {
  handleDATA(server, session, envelope) {
    return '250 OK pid=' + process.pid;
  }
}
`;

async function handlerModule(dir: string): Promise<string> {
  const path = join(dir, 'handler.mjs');
  await writeFile(path, HANDLER);
  return path;
}

/** One whole transaction; resolves to the pid that answered. */
async function sendOne(port: number, i: number): Promise<number> {
  const p = await Probe.connect(port);
  try {
    const end = await transaction(p, { body: `Subject: ${i}\r\n\r\nmessage ${i}\r\n` });
    assert.equal(end.code, 250, end.text);
    const m = /pid=(\d+)/.exec(end.text);
    assert.ok(m, `no pid in ${JSON.stringify(end.text)}`);
    return Number(m[1]);
  } finally {
    p.close();
  }
}

function startCli(args: string[]): CliProcess {
  return new CliProcess(['-n', ...args]);
}

async function workersListening(cli: CliProcess, n: number, ms = 10000): Promise<void> {
  const re = new RegExp(`${n} workers listening on`);
  await cli.until(() => re.test(cli.stderr) || cli.exit !== null, `'${n} workers listening'`, ms);
  assert.match(cli.stderr, re, `stderr: ${cli.stderr}`);
}

test('--workers 2: 100 concurrent clients served by two processes on one port; SIGKILL restarts a worker; SIGTERM exits 0', async () => {
  const dir = await tempDir('workers');
  const port = await freePort();
  const cli = startCli(['-c', `${await handlerModule(dir)}:H`, '-l', `127.0.0.1:${port}`, '--workers', '2']);
  try {
    await workersListening(cli, 2);
    const pids = await pool(
      Array.from({ length: 100 }, (_, i) => i),
      100,
      (i) => sendOne(port, i),
    );
    assert.equal(pids.length, 100);
    const distinct = new Set(pids);
    assert.ok(distinct.size >= 2, `only ${[...distinct].join(', ')} answered`);
    for (const pid of distinct) {
      assert.notEqual(pid, cli.pid, 'the primary must not serve');
      assert.equal(parentOf(pid), cli.pid, `pid ${pid} is not a worker of the primary`);
    }

    // Kill one worker: the primary replaces it and the port keeps serving.
    const victim = pids[0]!;
    process.kill(victim, 'SIGKILL');
    await cli.until(() => new RegExp(`worker ${victim} died`).test(cli.stderr), 'the death to be noticed', 5000);
    assert.match(cli.stderr, /restarting/);
    const after: number[] = [];
    for (let i = 0; i < 5; i++) after.push(await sendOne(port, 1000 + i));
    assert.ok(!after.includes(victim), 'a dead worker answered');
    const fresh = await until(async () => {
      const pid = await sendOne(port, 2000);
      return !distinct.has(pid) && pid !== victim;
    }, 8000);
    assert.ok(fresh, `no new worker appeared; stderr: ${cli.stderr}`);
    const workersNow = new Set<number>();
    for (let i = 0; i < 20; i++) workersNow.add(await sendOne(port, 3000 + i));
    for (const pid of workersNow) assert.equal(parentOf(pid), cli.pid);

    // SIGTERM: every process exits, the primary with 0, within a few seconds.
    const all = new Set([...distinct, ...workersNow].filter((pid) => alive(pid)));
    cli.child.kill('SIGTERM');
    const exit = await cli.waitExit(8000);
    assert.deepEqual(exit, { code: 0, signal: null }, `stderr: ${cli.stderr}`);
    assert.ok(await until(() => [...all].every((pid) => !alive(pid)), 3000), 'a worker outlived the primary');
    // And the port is free again.
    assert.ok(
      await until(
        () =>
          new Promise<boolean>((resolve) => {
            const s = net.createServer();
            s.once('error', () => resolve(false));
            s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
          }),
        3000,
      ),
    );
  } finally {
    await cli.stop();
    await removeDir(dir);
  }
});

test('--workers 2 with SIGTERM during a transaction: the message finishes on its worker (250), then everything exits 0', async () => {
  const dir = await tempDir('workers-term');
  const port = await freePort();
  const cli = startCli(['-c', `${await handlerModule(dir)}:H`, '-l', `127.0.0.1:${port}`, '--workers', '2', '--shutdown-timeout', '5']);
  try {
    await workersListening(cli, 2);
    const p = await Probe.connect(port);
    try {
      assert.equal((await p.reply()).code, 220);
      assert.equal((await p.cmd('EHLO x')).code, 250);
      assert.equal((await p.cmd('MAIL FROM:<a@example.com>')).code, 250);
      assert.equal((await p.cmd('RCPT TO:<b@example.com>')).code, 250);
      assert.equal((await p.cmd('DATA')).code, 354);
      p.send('Subject: slow\r\n\r\nfirst half\r\n');
      cli.child.kill('SIGTERM');
      await sleep(300);
      p.send('second half\r\n.\r\n');
      const end = await p.reply();
      assert.equal(end.code, 250, end.text);
      const bye = await p.reply().catch((e: Error) => e);
      if (!(bye instanceof Error)) assert.equal(bye.code, 421);
    } finally {
      p.close();
    }
    const exit = await cli.waitExit(8000);
    assert.deepEqual(exit, { code: 0, signal: null }, `stderr: ${cli.stderr}`);
  } finally {
    await cli.stop();
    await removeDir(dir);
  }
});

test('--workers 2, SIGTERM to every process (systemd KillMode=control-group, kill -TERM -PGID): transactions in flight still finish', async () => {
  // The workers get SIGTERM from the sender and a second one from the primary: the second must
  // not cut short the graceful stop the first began.
  const dir = await tempDir('workers-group');
  const port = await freePort();
  const cli = new CliProcess(
    ['-n', '-c', `${await handlerModule(dir)}:H`, '-l', `127.0.0.1:${port}`, '--workers', '2', '--shutdown-timeout', '5'],
    { detached: true },
  );
  const probes: Probe[] = [];
  try {
    await workersListening(cli, 2);
    const workerPids = new Set<number>();
    for (let i = 0; i < 20 && workerPids.size < 2; i++) workerPids.add(await sendOne(port, i));
    assert.equal(workerPids.size, 2);
    for (let i = 0; i < 4; i++) {
      const p = await Probe.connect(port);
      probes.push(p);
      assert.equal((await p.reply()).code, 220);
      assert.equal((await p.cmd('EHLO x')).code, 250);
      assert.equal((await p.cmd('MAIL FROM:<a@example.com>')).code, 250);
      assert.equal((await p.cmd('RCPT TO:<b@example.com>')).code, 250);
      assert.equal((await p.cmd('DATA')).code, 354);
      p.send(`Subject: ${i}\r\n\r\nfirst half\r\n`);
    }
    // systemd signals every process of the unit; the order in which they act on it is the
    // scheduler's. Here the workers get theirs first, then the primary forwards its own.
    for (const pid of workerPids) process.kill(pid, 'SIGTERM');
    await sleep(150);
    process.kill(cli.pid, 'SIGTERM');
    await sleep(350);
    for (const p of probes) p.send('second half\r\n.\r\n');
    for (const [i, p] of probes.entries()) {
      const end = await p.reply(3000).catch((e: Error) => e);
      assert.ok(!(end instanceof Error), `client ${i}: ${end instanceof Error ? end.message : ''}; stderr: ${cli.stderr}`);
      assert.equal(end.code, 250, `client ${i}: ${end.text}`);
    }
    const exit = await cli.waitExit(8000);
    assert.deepEqual(exit, { code: 0, signal: null }, `stderr: ${cli.stderr}`);
  } finally {
    for (const p of probes) p.close();
    try {
      process.kill(-cli.pid, 'SIGKILL');
    } catch {
      // the group is gone already
    }
    await cli.stop();
    await removeDir(dir);
  }
});

test('a worker that cannot start (port in use): the primary exits non-zero, without a restart loop', async () => {
  const dir = await tempDir('workers-busy');
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const port = (blocker.address() as net.AddressInfo).port;
  const cli = startCli(['-c', `${await handlerModule(dir)}:H`, '-l', `127.0.0.1:${port}`, '--workers', '2']);
  try {
    const exit = await cli.waitExit(10000);
    assert.notEqual(exit.code, 0, `exit ${JSON.stringify(exit)}; stderr: ${cli.stderr}`);
    assert.doesNotMatch(cli.stderr, /restarting/);
    assert.match(cli.stderr, /EADDRINUSE|cannot listen|failed to start/);
  } finally {
    await cli.stop();
    blocker.close();
    await removeDir(dir);
  }
});

test('a replacement worker that cannot start: the primary stops and exits non-zero (not 0)', async () => {
  const dir = await tempDir('workers-broken');
  const port = await freePort();
  const module = await handlerModule(dir);
  const cli = startCli(['-c', `${module}:H`, '-l', `127.0.0.1:${port}`, '--workers', '2']);
  try {
    await workersListening(cli, 2);
    const victim = await sendOne(port, 0);
    // The handler module breaks (a bad deploy); the replacement for a dead worker cannot load it.
    await writeFile(module, "throw new Error('broken deploy');\n");
    process.kill(victim, 'SIGKILL');
    const exit = await cli.waitExit(10000);
    assert.match(cli.stderr, /failed to start/, `stderr: ${cli.stderr}`);
    assert.notEqual(exit.code, 0, `the primary gave up after a failed restart but exited ${JSON.stringify(exit)}; stderr: ${cli.stderr}`);
  } finally {
    await cli.stop();
    await removeDir(dir);
  }
});

test('--workers auto starts one worker per core and serves', async () => {
  const dir = await tempDir('workers-auto');
  const port = await freePort();
  const n = availableParallelism();
  const cli = startCli(['-c', `${await handlerModule(dir)}:H`, '-l', `127.0.0.1:${port}`, '--workers', 'auto']);
  try {
    if (n > 1) await workersListening(cli, n);
    else await cli.listening();
    const pids = await pool(
      Array.from({ length: 4 * n }, (_, i) => i),
      4 * n,
      (i) => sendOne(port, i),
    );
    for (const pid of new Set(pids)) {
      if (n > 1) assert.equal(parentOf(pid), cli.pid);
      else assert.equal(pid, cli.pid);
    }
    cli.child.kill('SIGTERM');
    assert.deepEqual(await cli.waitExit(8000), { code: 0, signal: null });
  } finally {
    await cli.stop();
    await removeDir(dir);
  }
});

test('--workers rejects nonsense with a usage error (exit 2)', async () => {
  for (const bad of ['0', '-1', 'many', '1.5', '']) {
    const cli = startCli(['-c', 'Sink', '-l', '127.0.0.1:0', '--workers', bad]);
    try {
      const exit = await cli.waitExit(5000);
      assert.equal(exit.code, 2, `--workers ${JSON.stringify(bad)}: ${JSON.stringify(exit)} ${cli.stderr}`);
      assert.match(cli.stderr, /--workers/);
    } finally {
      await cli.stop();
    }
  }
});
