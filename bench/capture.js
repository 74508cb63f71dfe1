#!/usr/bin/env node
// Capture against MailDev, in one run, on loopback (`SCENARIOS=capture npm run bench`, or
// `node bench/capture.js`). For each server, a fresh process:
//   tsmtpd   node dist/cli.js -n -c Capture -l 127.0.0.1:P --http 127.0.0.1:H --max-messages 0
//   maildev  node MAILDEV -s P --ip 127.0.0.1 -w H --web-ip 127.0.0.1 --silent   (a peer, not a
//            dependency: npm install --prefix /tmp/tsmtpd-bench-peers maildev)
// Measures:
//   stored/s     N messages of SIZE bytes over CONNS connections (bench/loadgen.js), timed from the
//                first connection until the API reports all N stored (polled every 20 ms)
//   list, search median latency of LAT requests for the newest 50 with STORE messages stored
//                (tsmtpd: GET /api/v1/messages?limit=50, /api/v1/search?query=...; MailDev:
//                GET /api/email/summary?limit=50, ...&search=...); the search term matches none, so
//                both scan everything
//   KiB/msg      (server RSS with STORE messages - RSS at start) / STORE
// Knobs (env): N=5000 CONNS=10 SIZE=1024 STORE=10000 LAT=30 MAILDEV=path PORT_BASE=27400
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { processTree, statusKb } from './proc.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const env = process.env;
const num = (name, def) => (env[name] ? Number(env[name]) : def);
const N = num('N', 5000);
const CONNS = num('CONNS', 10);
const SIZE = num('SIZE', 1024);
const STORE = Math.max(num('STORE', 10000), N);
const LAT = num('LAT', 30);
const PORT_BASE = num('PORT_BASE', 27400);
const MAILDEV = env.MAILDEV ?? '/tmp/tsmtpd-bench-peers/node_modules/maildev/dist/bin/maildev.js';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (m) => process.stderr.write(`[capture-bench] ${m}\n`);

const SERVERS = {
  tsmtpd: {
    available: existsSync(path.join(ROOT, 'dist', 'cli.js')),
    args: (smtp, web) => [path.join(ROOT, 'dist', 'cli.js'), '-n', '-c', 'Capture', '-l', `127.0.0.1:${smtp}`, '--http', `127.0.0.1:${web}`, '--max-messages', '0'],
    count: async (web) => (await getJSON(`http://127.0.0.1:${web}/api/v1/messages?limit=1`)).total,
    list: (web) => `http://127.0.0.1:${web}/api/v1/messages?limit=50`,
    search: (web) => `http://127.0.0.1:${web}/api/v1/search?limit=50&query=nosuchwordanywhere`,
  },
  maildev: {
    available: existsSync(MAILDEV),
    args: (smtp, web) => [MAILDEV, '-s', String(smtp), '--ip', '127.0.0.1', '-w', String(web), '--web-ip', '127.0.0.1', '--silent'],
    count: async (web) => {
      const r = await getJSON(`http://127.0.0.1:${web}/api/email/summary?limit=1`);
      return r.storeTotal ?? r.total;
    },
    list: (web) => `http://127.0.0.1:${web}/api/email/summary?limit=50`,
    search: (web) => `http://127.0.0.1:${web}/api/email/summary?limit=50&search=nosuchwordanywhere`,
  },
};

async function getJSON(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
  if (!res.ok) throw new Error(`${url}: ${res.status}`);
  return res.json();
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function load(port, count) {
  const r = spawnSync(process.execPath, [path.join(HERE, 'loadgen.js'), 'load', '--port', String(port), '--conns', String(CONNS), '--count', String(count), '--size', String(SIZE)], {
    encoding: 'utf8',
    timeout: 600_000,
  });
  const line = (r.stdout ?? '').trim().split('\n').pop();
  const out = line ? JSON.parse(line) : null;
  if (out === null || out.ok !== true || out.sent !== count) throw new Error(`loadgen: ${r.stdout} ${r.stderr}`);
  return out;
}

async function until(test, what, ms = 600_000) {
  const deadline = Date.now() + ms;
  while (!(await test())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function latency(url) {
  const times = [];
  await getJSON(url); // warm
  for (let i = 0; i < LAT; i++) {
    const t = performance.now();
    await getJSON(url);
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

async function measure(name, index) {
  const def = SERVERS[name];
  const smtp = PORT_BASE + index * 2;
  const web = smtp + 1;
  const child = spawn(process.execPath, def.args(smtp, web), { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c) => (stderr += c));
  try {
    await until(async () => (await canConnect(smtp)) && (await canConnect(web)), `${name} to listen`, 30_000);
    await sleep(500);
    const rss0 = statusKb(processTree(child.pid), 'VmRSS');
    const t0 = performance.now();
    load(smtp, N);
    await until(async () => (await def.count(web)) >= N, `${name} to show ${N} messages`);
    const storedPerSecond = N / ((performance.now() - t0) / 1000);
    if (STORE > N) load(smtp, STORE - N);
    await until(async () => (await def.count(web)) >= STORE, `${name} to show ${STORE} messages`);
    await sleep(1000);
    const rss1 = statusKb(processTree(child.pid), 'VmRSS');
    const list = await latency(def.list(web));
    const search = await latency(def.search(web));
    return { name, storedPerSecond, list, search, kibPerMessage: (rss1 - rss0) / STORE, rssMiB: rss1 / 1024 };
  } catch (error) {
    log(`${name} failed: ${error.message}; stderr: ${stderr.slice(-500)}`);
    return null;
  } finally {
    child.kill('SIGKILL');
  }
}

const rows = [];
let i = 0;
for (const name of Object.keys(SERVERS)) {
  if (!SERVERS[name].available) {
    log(`${name}: not available (${name === 'maildev' ? `npm install --prefix /tmp/tsmtpd-bench-peers maildev, or MAILDEV=path` : 'npm run build'})`);
    continue;
  }
  log(`${name}: ${N} messages over ${CONNS} connections, then ${STORE} stored`);
  const r = await measure(name, i++);
  if (r !== null) rows.push(r);
}
const fmt = (v, d = 1) => (v === undefined ? '-' : v.toFixed(d));
const lines = [
  `| server | stored and visible, msg/s (${CONNS} conns) | list newest 50 of ${STORE}, ms | search ${STORE}, ms | KiB per stored message | RSS with ${STORE}, MiB |`,
  '| --- | --- | --- | --- | --- | --- |',
  ...rows.map((r) => `| ${r.name} | ${fmt(r.storedPerSecond, 0)} | ${fmt(r.list)} | ${fmt(r.search)} | ${fmt(r.kibPerMessage)} | ${fmt(r.rssMiB)} |`),
];
const ts = rows.find((r) => r.name === 'tsmtpd');
const md = rows.find((r) => r.name === 'maildev');
if (ts && md) lines.push('', `tsmtpd/MailDev: stored ${(ts.storedPerSecond / md.storedPerSecond).toFixed(2)}x, list ${(md.list / ts.list).toFixed(2)}x faster, search ${(md.search / ts.search).toFixed(2)}x faster, memory per message ${(ts.kibPerMessage / md.kibPerMessage).toFixed(2)}x`);
process.stdout.write(`${lines.join('\n')}\n`);
process.stdout.write(`${JSON.stringify({ N, CONNS, SIZE, STORE, LAT, rows })}\n`);
