#!/usr/bin/env node
// `npm run bench:jetstream`: what a 250 that waits for JetStream costs, beside -c Sink and
// -c Mailbox, in one run on loopback (run `npm run build` first; needs /usr/sbin/nats-server).
//
// Rows (each a fresh tsmtpd process, `node dist/cli.js -n -l 127.0.0.1:PORT -c ...`):
//   Sink           -c Sink: answers 250 and drops the body (the ceiling)
//   Mailbox        -c Mailbox DIR: a Maildir file written and fsynced per message
//   JetStream-1    -c JetStream: one nats-server with JetStream (file storage, R1)
//   JetStream-3    -c JetStream ... replicas=3: a three-node cluster on loopback, R3
//   JetStream-3x2  two tsmtpd processes sharing that cluster, CONNS connections each
// Load: CONNS connections (default 10) share N messages (default 3000) of SIZE bytes (default
// 1024), each message distinct (its own Message-ID: identical ones would be JetStream
// duplicates, stored once and cheaper), one transaction at a time per connection.
// Reported: messages/s (wall clock, the median of REPS), CPU ms per message of tsmtpd and of the
// nats-server processes (utime+stime from /proc), and how many were answered 250.
// Knobs (env): N=3000 CONNS=10 SIZE=1024 REPS=1 ROWS="Sink Mailbox JetStream-1 JetStream-3 JetStream-3x2"
//   NATS_SERVER=/usr/sbin/nats-server OUT=/tmp/tsmtpd-bench-jetstream-<time>
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuSeconds } from './proc.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const HOST = '127.0.0.1';
const env = process.env;
const N = Number(env.N ?? 3000);
const CONNS = Number(env.CONNS ?? 10);
const SIZE = Number(env.SIZE ?? 1024);
const REPS = Number(env.REPS ?? 1);
const ROWS = (env.ROWS ?? 'Sink Mailbox JetStream-1 JetStream-3 JetStream-3x2').split(/\s+/).filter(Boolean);
const NATS = env.NATS_SERVER ?? '/usr/sbin/nats-server';
const OUT = env.OUT ?? `/tmp/tsmtpd-bench-jetstream-${Date.now()}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (!existsSync(CLI)) fatal('dist/cli.js is missing: run `npm run build` first');
if (ROWS.some((r) => r.startsWith('JetStream')) && !existsSync(NATS)) fatal(`${NATS} is missing (Debian package nats-server)`);
mkdirSync(OUT, { recursive: true });

function fatal(msg) {
  process.stderr.write(`bench:jetstream: ${msg}\n`);
  process.exit(2);
}
function log(msg) {
  process.stderr.write(`[${new Date().toTimeString().slice(0, 8)}] ${msg}\n`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, HOST, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitPort(port, child, what, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const up = await new Promise((resolve) => {
      const s = net.connect({ host: HOST, port });
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (up) return;
    if (child.exitCode !== null || Date.now() > end) fatal(`${what} did not start (see ${OUT})`);
    await sleep(50);
  }
}

function run(cmd, args, logName) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr.on('data', (d) => appendFileSync(path.join(OUT, logName), d));
  return child;
}

function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', resolve);
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 5000).unref();
  });
}

/** `size` nodes with JetStream on loopback, a cluster when more than one; ready once JetStream answers. */
async function startNats(size) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tsmtpd-bench-nats-'));
  const ports = [];
  const routes = [];
  for (let i = 0; i < size; i++) {
    ports.push(await freePort());
    routes.push(await freePort());
  }
  const children = [];
  for (let i = 0; i < size; i++) {
    const lines = [`server_name: b${i + 1}`, `listen: ${HOST}:${ports[i]}`, `jetstream { store_dir: "${path.join(dir, `b${i + 1}`)}" }`];
    if (size > 1) {
      const peers = routes.filter((_, j) => j !== i).map((p) => `"nats-route://${HOST}:${p}"`);
      lines.push(`cluster { name: bench, listen: ${HOST}:${routes[i]}, routes: [${peers.join(', ')}] }`);
    }
    const conf = path.join(dir, `b${i + 1}.conf`);
    writeFileSync(conf, lines.join('\n') + '\n');
    children.push(run(NATS, ['-c', conf], `nats-${size}-b${i + 1}.log`));
  }
  for (let i = 0; i < size; i++) await waitPort(ports[i], children[i], 'nats-server');
  const urls = ports.map((p) => `nats://${HOST}:${p}`);
  // A cluster needs its meta leader before a stream can be made: wait for the election.
  const { connect } = await import('@nats-io/transport-node');
  const { jetstreamManager } = await import('@nats-io/jetstream');
  const nc = await connect({ servers: urls });
  const end = Date.now() + 30000;
  for (;;) {
    try {
      await (await jetstreamManager(nc, { timeout: 2000 })).getAccountInfo();
      break;
    } catch (error) {
      if (Date.now() > end) fatal(`JetStream not ready: ${error}`);
      await sleep(200);
    }
  }
  await nc.close();
  return {
    urls,
    pids: () => children.map((c) => c.pid),
    async stop() {
      await Promise.all(children.map(stop));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function startTsmtpd(args, name) {
  const port = await freePort();
  const child = run(process.execPath, [CLI, '-n', '-l', `${HOST}:${port}`, ...args], `${name}.log`);
  await waitPort(port, child, `tsmtpd ${name}`);
  return { port, child };
}

/** One connection sending `count` distinct messages, one transaction at a time. */
function connection(port, tag, count, size) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port });
    socket.setNoDelay(true);
    const filler = Buffer.alloc(Math.max(0, size), 'x');
    for (let off = 76; off < filler.length; off += 78) filler.write('\r\n', off, 'latin1');
    let buf = '';
    let step = 'greeting';
    let sent = 0;
    let ok = 0;
    const timer = setTimeout(() => socket.destroy(), 600000);
    const send = (text) => socket.write(text);
    const next = () => {
      if (sent === count) {
        step = 'quit';
        send('QUIT\r\n');
        return;
      }
      sent += 1;
      step = 'mail';
      send('MAIL FROM:<bench@bench.invalid>\r\n');
    };
    socket.on('data', (d) => {
      buf += d.toString('latin1');
      let nl;
      while ((nl = buf.indexOf('\r\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        if (line[3] === '-') continue;
        const code = Number(line.slice(0, 3));
        if (step === 'greeting') (step = 'ehlo'), send('EHLO bench.invalid\r\n');
        else if (step === 'ehlo') next();
        else if (step === 'mail') (step = 'rcpt'), send('RCPT TO:<sink@bench.invalid>\r\n');
        else if (step === 'rcpt') (step = 'data'), send('DATA\r\n');
        else if (step === 'data') {
          step = 'body';
          send(`Subject: bench\r\nMessage-ID: <${tag}.${sent}.${process.hrtime.bigint()}@bench.invalid>\r\n\r\n`);
          send(filler);
          send('\r\n.\r\n');
        } else if (step === 'body') {
          if (code === 250) ok += 1;
          next();
        } else if (step === 'quit') socket.end();
      }
    });
    const done = () => {
      clearTimeout(timer);
      resolve(ok);
    };
    socket.on('close', done);
    socket.on('error', () => undefined);
  });
}

/** CONNS connections on each port, N messages in all; returns 250s, seconds, CPU seconds of each pid list. */
async function load(ports, pidGroups) {
  const cpu0 = pidGroups.map((g) => cpuSeconds(g()));
  const t0 = process.hrtime.bigint();
  const conns = [];
  const all = ports.length * CONNS;
  for (const [p, port] of ports.entries()) {
    for (let i = 0; i < CONNS; i++) {
      const k = p * CONNS + i;
      conns.push(connection(port, `c${k}`, Math.floor(N / all) + (k < N % all ? 1 : 0), SIZE));
    }
  }
  const oks = await Promise.all(conns);
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = pidGroups.map((g, i) => cpuSeconds(g()) - cpu0[i]);
  return { ok: oks.reduce((a, b) => a + b, 0), elapsed, cpu };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function row(name) {
  let nats = null;
  const servers = [];
  const maildir = mkdtempSync(path.join(os.tmpdir(), 'tsmtpd-bench-maildir-'));
  try {
    const stream = `BENCH${name.replace(/[^A-Za-z0-9]/g, '')}${Date.now()}`;
    const subject = `${stream.toLowerCase()}.in`;
    let args;
    if (name === 'Sink') args = ['-c', 'Sink'];
    else if (name === 'Mailbox') args = ['-c', 'Mailbox', maildir];
    else {
      nats = await startNats(name === 'JetStream-1' ? 1 : 3);
      args = ['-c', 'JetStream', nats.urls.join(','), stream, `subject=${subject}`, `replicas=${name === 'JetStream-1' ? 1 : 3}`];
    }
    servers.push(await startTsmtpd(args, `${name}-1`));
    if (name === 'JetStream-3x2') servers.push(await startTsmtpd(args, `${name}-2`));
    // One message per server first, so connecting to NATS and making the stream are not timed.
    for (const s of servers) await connection(s.port, 'warm', 1, SIZE);
    const runs = [];
    for (let r = 0; r < REPS; r++) {
      runs.push(await load(servers.map((s) => s.port), [() => servers.map((s) => s.child.pid), () => (nats ? nats.pids() : [])]));
    }
    const result = {
      row: name,
      servers: servers.length,
      conns: servers.length * CONNS,
      messages: N,
      size: SIZE,
      ok: median(runs.map((x) => x.ok)),
      msgs_per_s: median(runs.map((x) => x.ok / x.elapsed)),
      tsmtpd_cpu_ms_per_msg: median(runs.map((x) => (x.cpu[0] * 1000) / Math.max(1, x.ok))),
      nats_cpu_ms_per_msg: median(runs.map((x) => (x.cpu[1] * 1000) / Math.max(1, x.ok))),
    };
    appendFileSync(path.join(OUT, 'results.jsonl'), JSON.stringify(result) + '\n');
    return result;
  } finally {
    await Promise.all(servers.map((s) => stop(s.child)));
    await nats?.stop();
    rmSync(maildir, { recursive: true, force: true });
  }
}

const results = [];
log(`N=${N} CONNS=${CONNS} SIZE=${SIZE} REPS=${REPS} cores=${os.cpus().length}; logs in ${OUT}`);
for (const name of ROWS) {
  log(`${name} ...`);
  const r = await row(name);
  log(`${name}: ${r.msgs_per_s.toFixed(0)} msg/s, ${r.ok}/${N} answered 250`);
  results.push(r);
}
const base = results.find((r) => r.row === 'Sink');
const lines = [
  `| row | tsmtpd processes x connections | msg/s | vs Sink | tsmtpd CPU ms/msg | nats-server CPU ms/msg | 250s |`,
  `| --- | --- | ---: | ---: | ---: | ---: | ---: |`,
  ...results.map(
    (r) =>
      `| ${r.row} | ${r.servers} x ${CONNS} | ${r.msgs_per_s.toFixed(0)} | ${base ? (r.msgs_per_s / base.msgs_per_s).toFixed(2) : '-'} | ` +
      `${r.tsmtpd_cpu_ms_per_msg.toFixed(3)} | ${r.nats_cpu_ms_per_msg.toFixed(3)} | ${r.ok}/${r.messages} |`,
  ),
];
writeFileSync(path.join(OUT, 'summary.md'), lines.join('\n') + '\n');
process.stdout.write(lines.join('\n') + '\n');
process.exit(0);
