#!/usr/bin/env node
// Bounded memory, measured (issue 8, item 3): server RSS under a flood of oversized messages, and
// the cost of idle connections. Linux only (reads /proc). Every wait is bounded.
//
//   npm run build && node bench/memory.js [SERVER ...]
//
// SERVER is one of: tsmtpd (`-c Sink`, bodies dropped as they stream), tsmtpd-buffered (`-c Sink
// buffered`, handleDATA: bodies gathered in memory first), aiosmtpd, smtp-server. Default: all four
// (a peer that is not installed is skipped with a note). Each server runs as a child process
// started through `bash -c 'ulimit -n ...; exec ...'`, so its PID is the server itself, and a fresh
// one is started for each scenario:
//
//   flood  FLOOD_CLIENTS (20) clients at once, each sending FLOOD_MIB (16) MiB of DATA to a server
//          whose size limit is 1 MiB (-s 1048576); each must get 552. Reported: server RSS before,
//          its peak (VmHWM, the kernel's high-water mark) and after, and the bytes sent.
//   idle   IDLE_CONNS (2000) connections, each greeted and EHLO'd, then held open. RSS is read
//          after SETTLE_MS (2000), then every connection sends NOOP and RSS is read again after
//          SETTLE_MS more (the "forced settle": every connection's state touched again). KiB per
//          connection = (RSS after - RSS before) / IDLE_CONNS.
//
// Knobs (env): FLOOD_CLIENTS FLOOD_MIB IDLE_CONNS SETTLE_MS SCENARIOS="flood idle" PYTHON=/usr/bin/python3
// Output: a table on stdout, and JSON lines with every figure on stderr when JSON=1.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const FLOOD_CLIENTS = Number(process.env.FLOOD_CLIENTS ?? 20);
const FLOOD_MIB = Number(process.env.FLOOD_MIB ?? 16);
const IDLE_CONNS = Number(process.env.IDLE_CONNS ?? 2000);
const SETTLE_MS = Number(process.env.SETTLE_MS ?? 2000);
const SCENARIOS = (process.env.SCENARIOS ?? 'flood idle').split(/\s+/).filter(Boolean);
const PYTHON = process.env.PYTHON ?? '/usr/bin/python3';
const SIZE_LIMIT = 1048576;

// ---- our own file limit: the idle scenario holds IDLE_CONNS sockets on this side too ----------

function openFilesLimit() {
  const m = readFileSync('/proc/self/limits', 'latin1').match(/^Max open files\s+(\d+|unlimited)/m);
  return m === null || m[1] === 'unlimited' ? Infinity : Number(m[1]);
}
if (SCENARIOS.includes('idle') && openFilesLimit() < IDLE_CONNS + 200 && process.env.MEMORY_REEXEC !== '1') {
  // Node cannot raise its own limit: run again under a shell that does.
  const r = spawnSync('bash', ['-c', `ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"`, process.execPath, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, MEMORY_REEXEC: '1' },
  });
  process.exit(r.status ?? 1);
}

// ---- servers ----------------------------------------------------------------------------------

const SERVERS = {
  tsmtpd: {
    label: 'tsmtpd -c Sink',
    command: (port, size) => `exec node ${q(join(ROOT, 'dist', 'cli.js'))} -n -c Sink -l 127.0.0.1:${port} -s ${size}`,
    available: () => has(join(ROOT, 'dist', 'cli.js')) || 'dist/cli.js missing: npm run build',
  },
  'tsmtpd-buffered': {
    label: 'tsmtpd -c Sink buffered',
    command: (port, size) => `exec node ${q(join(ROOT, 'dist', 'cli.js'))} -n -c Sink -l 127.0.0.1:${port} -s ${size} buffered`,
    available: () => has(join(ROOT, 'dist', 'cli.js')) || 'dist/cli.js missing: npm run build',
  },
  aiosmtpd: {
    label: 'aiosmtpd Sink',
    command: (port, size) => `exec ${q(PYTHON)} -m aiosmtpd -n -c aiosmtpd.handlers.Sink -l 127.0.0.1:${port} -s ${size}`,
    available: () => spawnSync(PYTHON, ['-c', 'import aiosmtpd'], { stdio: 'ignore' }).status === 0 || `${PYTHON} has no aiosmtpd (apt-get install python3-aiosmtpd)`,
  },
  'smtp-server': {
    label: 'smtp-server sink',
    // bench/sink-smtp-server.js advertises 32 MiB and drains every body (smtp-server's limit is
    // advisory); it is the same sink `npm run bench` measures.
    command: (port) => `exec node ${q(join(ROOT, 'bench', 'sink-smtp-server.js'))} ${port}`,
    available: () => has(join(ROOT, 'node_modules', 'smtp-server')) || 'smtp-server not installed (npm ci)',
  },
};

function q(s) {
  return `'${String(s).replace(/'/g, `'\\''`)}'`;
}
function has(path) {
  try {
    readFileSync(path);
    return true;
  } catch (error) {
    return error.code === 'EISDIR';
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function statusKb(pid, field) {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'latin1').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
    return m === null ? NaN : Number(m[1]);
  } catch {
    return NaN;
  }
}

/** Starts a server; resolves once it greets a client. */
async function startServer(name, size) {
  const port = await freePort();
  const child = spawn('bash', ['-c', `ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; ${SERVERS[name].command(port, size)}`], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (t) => (stderr = (stderr + t).slice(-4000)));
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${name} exited ${child.exitCode}: ${stderr}`);
    try {
      const c = await Client.connect(port);
      await c.expect(220);
      c.socket.destroy();
      return { name, port, pid: child.pid, child, stderr: () => stderr };
    } catch {
      await sleep(100);
    }
  }
  child.kill('SIGKILL');
  throw new Error(`${name} did not greet within 15 s: ${stderr}`);
}

async function stopServer(server) {
  if (server.child.exitCode !== null) return;
  const gone = new Promise((r) => server.child.once('exit', r));
  server.child.kill('SIGTERM');
  const t = setTimeout(() => server.child.kill('SIGKILL'), 5000);
  await gone;
  clearTimeout(t);
}

// ---- a minimal client -------------------------------------------------------------------------

class Client {
  constructor(socket) {
    this.socket = socket;
    this.buf = '';
    this.waiter = null;
    this.closed = false;
    socket.setEncoding('latin1');
    socket.on('data', (t) => {
      this.buf += t;
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {});
  }
  static connect(port) {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1' }, () => resolve(new Client(s)));
      s.once('error', reject);
    });
  }
  wake() {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }
  /** The next whole reply's code; rejects after ms or on close. */
  async reply(ms = 30000) {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = /^(?:\d{3}-[^\r\n]*\r\n)*(\d{3})(?: [^\r\n]*)?\r\n/.exec(this.buf);
      if (m !== null) {
        this.buf = this.buf.slice(m[0].length);
        return Number(m[1]);
      }
      if (this.closed) throw new Error(`closed; unread ${JSON.stringify(this.buf.slice(0, 200))}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no reply within ${ms} ms`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }
  async expect(code, ms) {
    const got = await this.reply(ms);
    if (got !== code) throw new Error(`expected ${code}, got ${got}`);
  }
  async cmd(line, code, ms) {
    this.socket.write(line + '\r\n');
    await this.expect(code, ms);
  }
}

// ---- scenarios --------------------------------------------------------------------------------

/** One client: a message of `bytes` body bytes (lines of 998 octets) over a 1 MiB limit. */
async function floodOne(port, bytes) {
  const c = await Client.connect(port);
  await c.expect(220);
  await c.cmd('EHLO flood.example', 250);
  await c.cmd('MAIL FROM:<flood@example.org>', 250);
  await c.cmd('RCPT TO:<sink@example.com>', 250);
  await c.cmd('DATA', 354);
  const line = 'x'.repeat(998) + '\r\n';
  const block = Buffer.from(line.repeat(64)); // 64,000 bytes
  let sent = 0;
  let endsWithCRLF = true;
  while (sent < bytes) {
    const piece = bytes - sent >= block.length ? block : block.subarray(0, bytes - sent);
    sent += piece.length;
    endsWithCRLF = piece.length >= 2 && piece[piece.length - 2] === 13 && piece[piece.length - 1] === 10;
    if (!c.socket.write(piece)) {
      await new Promise((resolve, reject) => {
        const closed = () => reject(new Error('closed during DATA'));
        c.socket.once('close', closed);
        c.socket.once('drain', () => {
          c.socket.off('close', closed);
          resolve();
        });
      });
    }
  }
  const end = endsWithCRLF ? '.\r\n' : '\r\n.\r\n';
  c.socket.write(end);
  const code = await c.reply(120000);
  c.socket.write('QUIT\r\n');
  c.socket.end();
  return { sent: sent + end.length, code };
}

async function flood(name) {
  const server = await startServer(name, SIZE_LIMIT);
  try {
    await sleep(500);
    const before = statusKb(server.pid, 'VmRSS');
    const hwmBefore = statusKb(server.pid, 'VmHWM');
    let sampledPeak = before;
    const sampler = setInterval(() => (sampledPeak = Math.max(sampledPeak, statusKb(server.pid, 'VmRSS') || 0)), 50);
    const t0 = Date.now();
    const results = await Promise.all(Array.from({ length: FLOOD_CLIENTS }, () => floodOne(server.port, FLOOD_MIB * 1048576)));
    const seconds = (Date.now() - t0) / 1000;
    clearInterval(sampler);
    const peak = statusKb(server.pid, 'VmHWM');
    await sleep(SETTLE_MS);
    const after = statusKb(server.pid, 'VmRSS');
    const sent = results.reduce((n, r) => n + r.sent, 0);
    const codes = [...new Set(results.map((r) => r.code))].join(',');
    return { server: name, scenario: 'flood', clients: FLOOD_CLIENTS, mibEach: FLOOD_MIB, sentBytes: sent, codes, seconds, rssBeforeKb: before, hwmBeforeKb: hwmBefore, peakKb: peak, sampledPeakKb: sampledPeak, rssAfterKb: after };
  } finally {
    await stopServer(server);
  }
}

async function idle(name) {
  const server = await startServer(name, 33554432);
  const clients = [];
  try {
    // One connection first, so lazily loaded code is in before the baseline.
    const warm = await Client.connect(server.port);
    await warm.expect(220);
    await warm.cmd('EHLO warm.example', 250);
    await warm.cmd('QUIT', 221);
    await sleep(SETTLE_MS);
    const before = statusKb(server.pid, 'VmRSS');
    const t0 = Date.now();
    // Open in batches of 100 so the listen backlog never overflows.
    for (let i = 0; i < IDLE_CONNS; i += 100) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(100, IDLE_CONNS - i) }, async () => {
          const c = await Client.connect(server.port);
          await c.expect(220);
          await c.cmd('EHLO idle.example', 250);
          return c;
        }),
      );
      clients.push(...batch);
    }
    const openSeconds = (Date.now() - t0) / 1000;
    await sleep(SETTLE_MS);
    const settled = statusKb(server.pid, 'VmRSS');
    // The forced settle: every connection is used once more, then left alone again.
    await Promise.all(clients.map((c) => c.cmd('NOOP', 250)));
    await sleep(SETTLE_MS);
    const after = statusKb(server.pid, 'VmRSS');
    const alive = clients.filter((c) => !c.closed).length;
    return {
      server: name,
      scenario: 'idle',
      connections: IDLE_CONNS,
      alive,
      openSeconds,
      rssBeforeKb: before,
      rssSettledKb: settled,
      rssAfterKb: after,
      kibPerConnSettled: (settled - before) / IDLE_CONNS,
      kibPerConn: (after - before) / IDLE_CONNS,
    };
  } finally {
    for (const c of clients) c.socket.destroy();
    await stopServer(server);
  }
}

// ---- main -------------------------------------------------------------------------------------

const names = process.argv.slice(2).length > 0 ? process.argv.slice(2) : Object.keys(SERVERS);
for (const n of names) {
  if (!(n in SERVERS)) {
    console.error(`unknown server ${n}; one of ${Object.keys(SERVERS).join(', ')}`);
    process.exit(2);
  }
}

const mib = (kb) => (kb / 1024).toFixed(1);
const rows = [];
console.log(`# bench/memory.js  ${new Date().toISOString()}  ${os.cpus().length} CPU ${os.cpus()[0]?.model ?? ''}, ${mib(os.totalmem() / 1024)} MiB RAM, node ${process.version}`);
for (const name of names) {
  const ok = SERVERS[name].available();
  if (ok !== true) {
    console.log(`# skipped ${name}: ${ok}`);
    continue;
  }
  for (const scenario of SCENARIOS) {
    try {
      const r = scenario === 'flood' ? await flood(name) : await idle(name);
      rows.push(r);
      if (process.env.JSON === '1') console.error(JSON.stringify(r));
    } catch (error) {
      console.log(`# ${name} ${scenario} failed: ${error.message}`);
    }
  }
}

const floods = rows.filter((r) => r.scenario === 'flood');
if (floods.length > 0) {
  console.log(`\n## flood: ${FLOOD_CLIENTS} clients x ${FLOOD_MIB} MiB of DATA at a ${SIZE_LIMIT}-byte size limit\n`);
  console.log('| server | sent (MiB) | replies | seconds | RSS before (MiB) | peak VmHWM (MiB) | peak - before (MiB) | RSS after (MiB) |');
  console.log('|---|---:|---|---:|---:|---:|---:|---:|');
  for (const r of floods) {
    console.log(`| ${SERVERS[r.server].label} | ${(r.sentBytes / 1048576).toFixed(0)} | ${r.codes} | ${r.seconds.toFixed(1)} | ${mib(r.rssBeforeKb)} | ${mib(r.peakKb)} | ${mib(r.peakKb - r.rssBeforeKb)} | ${mib(r.rssAfterKb)} |`);
  }
}
const idles = rows.filter((r) => r.scenario === 'idle');
if (idles.length > 0) {
  console.log(`\n## idle: ${IDLE_CONNS} connections after EHLO (settle ${SETTLE_MS} ms, NOOP on each, settle again)\n`);
  console.log('| server | alive | RSS before (MiB) | RSS settled (MiB) | RSS after NOOP (MiB) | KiB per connection (settled) | KiB per connection (after NOOP) |');
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const r of idles) {
    console.log(`| ${SERVERS[r.server].label} | ${r.alive} | ${mib(r.rssBeforeKb)} | ${mib(r.rssSettledKb)} | ${mib(r.rssAfterKb)} | ${r.kibPerConnSettled.toFixed(1)} | ${r.kibPerConn.toFixed(1)} |`);
  }
}
