#!/usr/bin/env node
// `npm run bench`: tsmtpd against its peers, in one run, on loopback.
//
// Servers (each a discard-everything sink, a fresh process for every run):
//   tsmtpd       node dist/cli.js -n -c Sink -l 127.0.0.1:PORT          (run `npm run build` first)
//   tsmtpd-w2    the same with --workers 2 (only in the `scaling` row, or when SERVERS names it)
//   tsmtpd-buffered  -c Sink buffered: the body gathered for handleDATA (only when SERVERS names it)
//   smtp-server  node bench/sink-smtp-server.js PORT                      (devDependency)
//   aiosmtpd     /usr/bin/python3 -m aiosmtpd -n -c aiosmtpd.handlers.Sink -l 127.0.0.1:PORT
//                                                                (when `import aiosmtpd` works)
//   smtp-sink    Postfix's C test sink: smtp-sink [-u nobody] -m MAXCONN 127.0.0.1:PORT 1000
//                                                                (when installed)
// Scenarios (SCENARIOS, default "c1 c10 c100 p10 large idle", plus "scaling" on >= 2 cores;
//   "capture" runs bench/capture.js, Capture against MailDev, after the others):
//   c1 c10 c100  N_SMALL messages of SMALL_SIZE bytes over 1 / 10 / 100 connections, each reused
//                for its share (load: Postfix smtp-source -d when installed, else bench/loadgen.js)
//   p10          as c10, always with bench/loadgen.js: EHLO once, RSET between messages,
//                MAIL/RCPT/DATA pipelined when the server offers PIPELINING
//   large        N_LARGE messages of LARGE_SIZE bytes over LARGE_CONC connections (MB/s)
//   idle         IDLE_CONNS connections greeted and EHLO'd, then held: (RSS held - RSS before) / N
//   scaling      the c100 load against tsmtpd and tsmtpd-w2, neither pinned (ratio w2/w1)
// Runs are interleaved server by server, the order reversed every other rep; server pinned to
// CPU 0 and load to CPU 1 (taskset) when there are two cores. Each number is the median of REPS.
//
// Knobs (env): REPS=3 N_SMALL=20000 SMALL_SIZE=1024 N_LARGE=50 LARGE_SIZE=10485760 LARGE_CONC=4
//   IDLE_CONNS=2000 SETTLE=2 SCENARIOS=... SERVERS="tsmtpd smtp-server aiosmtpd smtp-sink"
//   RUN_TIMEOUT=180 (s per run) PIN=1 LOADGEN=auto|smtp-source|node PORT_BASE=27000
//   QUIET_WAIT=10 QUIET_MAX=10: before each run wait up to QUIET_WAIT s for the machine's CPU use
//   by other processes to fall under QUIET_MAX % (of all cores); each run records that background
//   CPU % (machine busy time - server - load generator - this script) in results.jsonl.
//   NOISY_MAX=25 NOISY_RETRIES=1: a run during which that background CPU exceeded NOISY_MAX % is
//   measured again (up to NOISY_RETRIES times); the attempt with the least background counts, the
//   others stay in results.jsonl marked "superseded", out of the medians.
//   SNAPSHOT=1: tsmtpd runs from a copy of dist/ taken at the start (OUT/tsmtpd), so a rebuild
//   during the bench cannot mix two builds; SNAPSHOT=0 runs dist/ in place.
//   TSMTPD_DIST=DIR: measure the build in DIR (e.g. a saved copy of an older dist/) instead of dist/.
//   OUT=/tmp/tsmtpd-bench-<time> (results.jsonl, summary.md, env.txt, server logs)
// Flags: --workers 2  adds tsmtpd-w2 to the servers of every scenario (same as SERVERS naming it).
import { spawn, spawnSync } from 'node:child_process';
import { accessSync, appendFileSync, closeSync, constants, copyFileSync, cpSync, existsSync, mkdirSync, openSync, readdirSync,
  readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuSeconds, isAlive, machineCpu, processTree, selfAndChildrenCpu, statusKb } from './proc.js';
import { detailTable, mainTable, metricOf, unitOf } from './report.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const HOST = '127.0.0.1';
const env = process.env;
const num = (name, def) => {
  const v = env[name] === undefined || env[name] === '' ? def : Number(env[name]);
  if (!Number.isFinite(v) || v < 0) fatal(`${name} must be a number, got ${env[name]}`);
  return v;
};

function fatal(msg) {
  process.stderr.write(`bench: ${msg}\n`);
  process.exit(2);
}
const stamp = () => new Date().toTimeString().slice(0, 8);
function log(msg) {
  const line = `[${stamp()}] ${msg}`;
  process.stderr.write(`${line}\n`);
  if (OUT) appendFileSync(path.join(OUT, 'run.log'), `${line}\n`);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- configuration ---------------------------------------------------------------------------
const argv = process.argv.slice(2);
let cliWorkers = 0;
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--workers') cliWorkers = Number(argv[++i]);
  else if (argv[i].startsWith('--workers=')) cliWorkers = Number(argv[i].slice(10));
  else if (argv[i] === '-h' || argv[i] === '--help') {
    const lines = readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1);
    const end = lines.findIndex((l) => !l.startsWith('//'));
    process.stdout.write(`${lines.slice(0, end).map((l) => l.slice(3)).join('\n')}\n`);
    process.exit(0);
  } else fatal(`unknown argument ${argv[i]} (see --help)`);
}
if (cliWorkers && cliWorkers !== 2) fatal('only --workers 2 is supported (the tsmtpd-w2 variant)');

const REPS = num('REPS', 3);
const N_SMALL = num('N_SMALL', 20000);
const SMALL_SIZE = num('SMALL_SIZE', 1024);
const N_LARGE = num('N_LARGE', 50);
const LARGE_SIZE = num('LARGE_SIZE', 10 * 1024 * 1024);
const LARGE_CONC = num('LARGE_CONC', 4);
const IDLE_CONNS = num('IDLE_CONNS', 2000);
const SETTLE = num('SETTLE', 2);
const RUN_TIMEOUT = num('RUN_TIMEOUT', 180);
const PORT_BASE = num('PORT_BASE', 27000);
const QUIET_WAIT = num('QUIET_WAIT', 10);
const QUIET_MAX = num('QUIET_MAX', 10);
const NOISY_MAX = num('NOISY_MAX', 25);
const NOISY_RETRIES = num('NOISY_RETRIES', 1);
const CORES = os.availableParallelism();

function which(cmd) {
  const dirs = [...(env.PATH ?? '').split(':'), '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  for (const d of dirs) {
    if (!d) continue;
    const p = path.join(d, cmd);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return null;
}
const TASKSET = which('taskset');
const SMTP_SOURCE = which('smtp-source');
const SMTP_SINK = which('smtp-sink');
const PIN = env.PIN !== '0' && TASKSET !== null && CORES >= 2;
const PIN_SERVER = PIN ? [TASKSET, '-c', '0'] : [];
const PIN_LOAD = PIN ? [TASKSET, '-c', '1'] : [];
const LOADGEN = (env.LOADGEN ?? 'auto') === 'auto' ? (SMTP_SOURCE ? 'smtp-source' : 'node') : env.LOADGEN;
if (!['smtp-source', 'node'].includes(LOADGEN)) fatal(`LOADGEN must be auto, smtp-source or node`);
if (LOADGEN === 'smtp-source' && !SMTP_SOURCE) fatal('LOADGEN=smtp-source but smtp-source is not installed');

const require = createRequire(import.meta.url);
let smtpServerVersion = null;
try {
  smtpServerVersion = require('smtp-server/package.json').version;
} catch {
  // not installed (npm install --include=dev)
}
const PYTHON = '/usr/bin/python3';
const aiosmtpdVersion = existsSync(PYTHON)
  ? (spawnSync(PYTHON, ['-c', 'import aiosmtpd; print(aiosmtpd.__version__)'], { encoding: 'utf8' }).stdout ?? '').trim() || null
  : null;
const isRoot = process.getuid?.() === 0;

const DIST = env.TSMTPD_DIST ? path.resolve(env.TSMTPD_DIST) : path.join(ROOT, 'dist');
let CLI = path.join(DIST, 'cli.js');
if (!existsSync(CLI)) fatal(`${CLI} is missing: run \`npm run build\` first`);

/** A short hash of every file under dir: says whether two builds are the same. */
function treeHash(dir) {
  const h = createHash('sha256');
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) h.update(`${path.relative(dir, p)}\0`).update(readFileSync(p));
    }
  };
  walk(dir);
  return h.digest('hex').slice(0, 12);
}

/** Every server the bench knows; `available` says whether this machine can run it. */
const SERVERS = {
  tsmtpd: { available: true, pin: true,
    cmd: (port) => [process.execPath, CLI, '-n', '-c', 'Sink', '-l', `${HOST}:${port}`] },
  'tsmtpd-w2': { available: true, pin: false, readyLog: /2 workers listening/,
    cmd: (port) => [process.execPath, CLI, '-n', '-c', 'Sink', '-l', `${HOST}:${port}`, '--workers', '2'] },
  // Opt-in (SERVERS): the buffered Sink (`-c Sink buffered`: the body gathered in memory and handed
  // to handleDATA, as aiosmtpd's Sink does), where the build has it; `-c Sink` drops the body as
  // it streams in.
  'tsmtpd-buffered': { available: true, pin: true,
    cmd: (port) => [process.execPath, CLI, '-n', '-c', 'Sink', '-l', `${HOST}:${port}`, 'buffered'] },
  'smtp-server': { available: smtpServerVersion !== null, pin: true,
    cmd: (port) => [process.execPath, path.join(HERE, 'sink-smtp-server.js'), String(port), HOST] },
  aiosmtpd: { available: aiosmtpdVersion !== null, pin: true,
    cmd: (port) => [PYTHON, '-m', 'aiosmtpd', '-n', '-c', 'aiosmtpd.handlers.Sink', '-l', `${HOST}:${port}`] },
  // -u: smtp-sink refuses to run as root without a user to switch to. -m: its default cap of 256
  // simultaneous connections would leave most of the idle scenario's connections unanswered.
  'smtp-sink': { available: SMTP_SINK !== null, pin: true,
    cmd: (port) => [SMTP_SINK, ...(isRoot ? ['-u', 'nobody'] : []), '-m', String(Math.max(256, IDLE_CONNS + 100)),
      `${HOST}:${port}`, '1000'] },
};

const requested = (env.SERVERS ?? '').split(/[\s,]+/).filter(Boolean);
for (const s of requested) if (!(s in SERVERS)) fatal(`unknown server ${s} (known: ${Object.keys(SERVERS).join(', ')})`);
let servers = requested.length ? requested : ['tsmtpd', 'smtp-server', 'aiosmtpd', 'smtp-sink'];
if (cliWorkers === 2 && !servers.includes('tsmtpd-w2')) servers.push('tsmtpd-w2');
const skipped = servers.filter((s) => !SERVERS[s].available);
servers = servers.filter((s) => SERVERS[s].available);

const defaultScenarios = ['c1', 'c10', 'c100', 'p10', 'large', 'idle', ...(CORES >= 2 ? ['scaling'] : [])];
const scenarioNames = (env.SCENARIOS ?? '').split(/[\s,]+/).filter(Boolean);
// `capture` (Capture against MailDev, stored/s, API latency, memory) is bench/capture.js's, run after the rest.
const runCapture = () => spawnSync(process.execPath, [path.join(HERE, 'capture.js')], { stdio: 'inherit', env }).status ?? 1;
const captureToo = scenarioNames.includes('capture');
if (captureToo && scenarioNames.length === 1) process.exit(runCapture());
const SCENARIOS = (scenarioNames.length ? scenarioNames : defaultScenarios).filter((s) => s !== 'capture');
const smallGen = LOADGEN;
const SCENARIO_DEFS = {
  c1: { conns: 1, count: N_SMALL, size: SMALL_SIZE, gen: smallGen },
  c10: { conns: 10, count: N_SMALL, size: SMALL_SIZE, gen: smallGen },
  c100: { conns: 100, count: N_SMALL, size: SMALL_SIZE, gen: smallGen },
  p10: { conns: 10, count: N_SMALL, size: SMALL_SIZE, gen: 'node', pipelining: true },
  large: { conns: LARGE_CONC, count: N_LARGE, size: LARGE_SIZE, gen: smallGen },
  idle: { conns: IDLE_CONNS, idle: true },
  scaling: { conns: 100, count: N_SMALL, size: SMALL_SIZE, gen: smallGen, unpinned: true,
    servers: ['tsmtpd', 'tsmtpd-w2'] },
};
for (const s of SCENARIOS) if (!(s in SCENARIO_DEFS)) fatal(`unknown scenario ${s} (known: ${Object.keys(SCENARIO_DEFS).join(' ')})`);
if (SCENARIOS.includes('scaling') && CORES < 2) log('note: scaling on one core only shows the cost of a second worker');

const OUT = env.OUT || `/tmp/tsmtpd-bench-${new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15)}`;
mkdirSync(OUT, { recursive: true });
const RESULTS = path.join(OUT, 'results.jsonl');
writeFileSync(RESULTS, '');

// Every run measures the same build: dist/ is copied under OUT first (a rebuild while the bench
// runs would otherwise mix two versions of tsmtpd in one table). SNAPSHOT=0 runs dist/ in place.
const DIST_HASH = treeHash(DIST);
if (env.SNAPSHOT !== '0') {
  const snap = path.join(OUT, 'tsmtpd');
  cpSync(DIST, path.join(snap, 'dist'), { recursive: true });
  copyFileSync(path.join(ROOT, 'package.json'), path.join(snap, 'package.json'));
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(snap, 'node_modules'), 'dir');
  CLI = path.join(snap, 'dist', 'cli.js');
  if (treeHash(path.join(snap, 'dist')) !== DIST_HASH) fatal('dist/ changed while it was being copied; run again');
}

// Enough file descriptors for the idle scenario? Children inherit our limit.
const nofile = Number(spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).stdout);
const raiseNofile = Number.isFinite(nofile) && nofile < IDLE_CONNS + 256;

// ---- environment record ----------------------------------------------------------------------
const cpuModel = (readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.*)$/m) ?? [])[1] ?? 'unknown';
const memMiB = Math.round(os.totalmem() / 1048576);
const postfixVersion = (spawnSync('dpkg-query', ['-W', '-f=${Version}', 'postfix'], { encoding: 'utf8' }).stdout ?? '').trim();
const pyVersion = existsSync(PYTHON) ? (spawnSync(PYTHON, ['--version'], { encoding: 'utf8' }).stdout ?? '').trim() : '';
const tsmtpdVersion = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version;
const envText = [
  `date: ${new Date().toISOString()}`,
  `host: ${os.type()} ${os.release()} ${os.arch()}, ${CORES} cpus (${cpuModel}), ${memMiB} MiB`,
  `node: ${process.version}  ${pyVersion ? `python3 (/usr/bin): ${pyVersion.replace('Python ', '')}` : ''}`,
  `tsmtpd: ${tsmtpdVersion} (${env.TSMTPD_DIST ? DIST : 'dist/'} ${DIST_HASH}${env.SNAPSHOT !== '0' ? ', run from a copy in OUT/tsmtpd' : ''})  smtp-server: ${smtpServerVersion ?? 'not installed'}  aiosmtpd: ${aiosmtpdVersion ?? 'not installed'}` +
    `  postfix (smtp-sink, smtp-source): ${SMTP_SINK || SMTP_SOURCE ? postfixVersion || 'installed' : 'not installed'}`,
  `load: ${LOADGEN === 'smtp-source' ? 'smtp-source -d' : 'bench/loadgen.js'} for c*/large/scaling, bench/loadgen.js for p10/idle;` +
    ` pinning: ${PIN ? 'server on CPU 0, load on CPU 1 (taskset)' : 'none'}`,
  `reps: ${REPS}  scenarios: ${SCENARIOS.join(' ')}  servers: ${servers.join(' ')}` +
    (skipped.length ? `  (not installed, skipped: ${skipped.join(' ')})` : ''),
  `sizes: N_SMALL=${N_SMALL} SMALL_SIZE=${SMALL_SIZE} N_LARGE=${N_LARGE} LARGE_SIZE=${LARGE_SIZE} LARGE_CONC=${LARGE_CONC}` +
    ` IDLE_CONNS=${IDLE_CONNS} RUN_TIMEOUT=${RUN_TIMEOUT}s`,
  ...servers.concat(SCENARIOS.includes('scaling') && !servers.includes('tsmtpd-w2') ? ['tsmtpd-w2'] : [])
    .map((s) => `server ${s}: ${SERVERS[s].cmd('PORT').map((a) => (a.startsWith(`${ROOT}/`) ? a.slice(ROOT.length + 1) : a)).join(' ')}`),
].join('\n');
writeFileSync(path.join(OUT, 'env.txt'), `${envText}\n`);
process.stderr.write(`${envText}\nresults in ${OUT}\n`);

// ---- child processes: every one is tracked and killed on the way out -------------------------
const children = new Set();

function launch(argvList, opts) {
  let cmd = argvList;
  if (raiseNofile) cmd = ['sh', '-c', 'ulimit -n "$(ulimit -Hn)"; exec "$@"', 'sh', ...cmd];
  const child = spawn(cmd[0], cmd.slice(1), { detached: true, ...opts });
  children.add(child);
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
  }));
  child.once('error', () => children.delete(child));
  return child;
}

function killGroup(child, signal) {
  for (const target of [-child.pid, child.pid]) {
    try {
      process.kill(target, signal);
    } catch {
      // already gone
    }
  }
}

function killAll() {
  for (const child of children) {
    for (const pid of child.tree ?? []) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    killGroup(child, 'SIGKILL');
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    process.stderr.write(`\nbench: ${sig}, stopping every server and load generator\n`);
    killAll();
    process.exit(130);
  });
}
process.on('uncaughtException', (err) => {
  process.stderr.write(`bench: ${err.stack}\n`);
  killAll();
  process.exit(1);
});

function portFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, HOST, () => srv.close(() => resolve(true)));
  });
}

let nextPort = PORT_BASE;
async function freshPort() {
  for (let i = 0; i < 1000; i++) {
    const p = nextPort++;
    if (nextPort > PORT_BASE + 5000) nextPort = PORT_BASE;
    if (await portFree(p)) return p;
  }
  throw new Error('no free port');
}

/** Connects, reads a 220 greeting, says QUIT. Resolves true on a 220. */
function probe(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: HOST, port });
    let buf = '';
    const done = (ok) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 5000);
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      if (!buf.startsWith('220')) return done(false);
      sock.write('QUIT\r\n', () => setTimeout(() => done(true), 20));
    });
    sock.on('error', () => done(false));
    sock.on('close', () => done(buf.startsWith('220')));
  });
}

async function startServer(name, port, logFile, pinned) {
  const def = SERVERS[name];
  const fd = openSync(logFile, 'w');
  const child = launch([...(pinned && def.pin ? PIN_SERVER : []), ...def.cmd(port)],
    { stdio: ['ignore', fd, fd], env: { ...env, PORT: String(port) }, cwd: ROOT });
  closeSync(fd);
  let exited = false;
  child.exited.then(() => { exited = true; });
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`${name} exited during start-up (see ${logFile})`);
    if (await probe(port)) {
      if (def.readyLog) {
        while (!def.readyLog.test(readFileSync(logFile, 'utf8'))) {
          if (exited || Date.now() > deadline) throw new Error(`${name}: not all workers listening (see ${logFile})`);
          await sleep(100);
        }
      }
      await sleep(300);
      child.tree = processTree(child.pid);
      return child;
    }
    await sleep(100);
  }
  throw new Error(`${name}: no 220 greeting on port ${port} within 30 s (see ${logFile})`);
}

async function stopServer(child) {
  if (!child) return;
  child.tree = [...new Set([...(child.tree ?? []), ...processTree(child.pid)])];
  killGroup(child, 'SIGTERM');
  const gone = await Promise.race([child.exited.then(() => true), sleep(5000).then(() => false)]);
  if (!gone) log(`server pid ${child.pid} ignored SIGTERM for 5 s; killing it`);
  // Whatever is left of the group or the tree (workers, helpers) does not outlive the run.
  killGroup(child, 'SIGKILL');
  for (const pid of child.tree) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  await child.exited;
}

/** Runs a load generator to completion (or RUN_TIMEOUT); resolves with its exit and output. */
async function runClient(argvList, pinned, stdinLines) {
  const child = launch([...(pinned ? PIN_LOAD : []), ...argvList], { stdio: ['pipe', 'pipe', 'pipe'], cwd: ROOT });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(child, 'SIGKILL');
  }, (RUN_TIMEOUT + 10) * 1000);
  if (stdinLines) stdinLines(child);
  else child.stdin.end();
  const t0 = process.hrtime.bigint();
  const { code, signal } = await child.exited;
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  clearTimeout(timer);
  return { code, signal, wall, out, err, timedOut };
}

const lastJson = (text) => {
  const lines = text.trim().split('\n').filter((l) => l.startsWith('{'));
  try {
    return lines.length ? JSON.parse(lines[lines.length - 1]) : null;
  } catch {
    return null;
  }
};
const tail = (s) => s.replace(/\s+/g, ' ').trim().slice(-300);

/** Waits (up to QUIET_WAIT s) until other processes use less than QUIET_MAX % of the machine. */
async function waitQuiet() {
  const t0 = Date.now();
  let pct = 0;
  do {
    const a = machineCpu();
    const s0 = selfAndChildrenCpu();
    await sleep(1000);
    const b = machineCpu();
    const s1 = selfAndChildrenCpu();
    pct = ((b.busy - a.busy - (s1.self - s0.self) - (s1.children - s0.children)) / (b.total - a.total)) * 100;
    if (pct < QUIET_MAX) return pct;
  } while (Date.now() - t0 < QUIET_WAIT * 1000);
  log(`machine still ${pct.toFixed(0)}% busy with other work after ${QUIET_WAIT} s; measuring anyway`);
  return pct;
}

async function measure(name, scenario, rep) {
  const def = SCENARIO_DEFS[scenario];
  const quietPct = QUIET_WAIT > 0 ? await waitQuiet() : NaN;
  const pinned = PIN && !def.unpinned;
  const port = await freshPort();
  const logFile = path.join(OUT, `server-${name}-${scenario}-${rep}.log`);
  const base = { server: name, scenario, rep, port, pinned: pinned && SERVERS[name].pin, background_before_pct: quietPct };
  let server;
  try {
    server = await startServer(name, port, logFile, pinned);
  } catch (e) {
    await stopServer(server);
    return { ...base, ok: false, note: e.message };
  }
  try {
    const rss0 = statusKb(processTree(server.pid), 'VmRSS');
    const cpu0 = cpuSeconds(processTree(server.pid));
    if (def.idle) {
      const args = [process.execPath, path.join(HERE, 'loadgen.js'), 'idle', '--host', HOST, '--port', String(port),
        '--conns', String(def.conns), '--timeout', String(RUN_TIMEOUT)];
      let rssIdle = NaN;
      let hwmIdle = NaN;
      const res = await runClient(args, pinned, (child) => {
        let buf = '';
        child.stdout.on('data', async (d) => {
          buf += d;
          if (!buf.includes('"event":"ready"') || child.measured) return;
          child.measured = true;
          await sleep(SETTLE * 1000);
          const tree = processTree(server.pid);
          rssIdle = statusKb(tree, 'VmRSS');
          hwmIdle = statusKb(tree, 'VmHWM');
          child.stdin.end('release\n');
        });
      });
      const ready = res.out.split('\n').filter(Boolean).map((l) => { try { return JSON.parse(l); } catch { return {}; } })
        .find((o) => o.event === 'ready');
      const closed = lastJson(res.out);
      const alive = isAlive(server.pid);
      const ok = !!(closed && closed.event === 'closed' && closed.ok && alive && Number.isFinite(rssIdle));
      return { ...base, ok, loadgen: 'node-idle', conns: def.conns, rss_start_kb: rss0, rss_idle_kb: rssIdle,
        hwm_kb: hwmIdle, kib_per_conn: (rssIdle - rss0) / def.conns, connect_s: ready?.connect_s,
        alive_at_release: closed?.alive_at_release, server_alive: alive,
        note: ok ? '' : tail(`${res.timedOut ? 'timed out; ' : ''}${res.out} ${res.err}`) };
    }

    let args;
    let loadgen;
    if (def.gen === 'smtp-source') {
      loadgen = 'smtp-source';
      args = ['timeout', '-s', 'KILL', String(RUN_TIMEOUT), SMTP_SOURCE, '-d', '-s', String(def.conns), '-m', String(def.count),
        '-l', String(def.size), '-M', 'localhost', `${HOST}:${port}`];
    } else {
      loadgen = def.pipelining ? 'node+pipelining' : 'node';
      args = [process.execPath, path.join(HERE, 'loadgen.js'), 'load', '--host', HOST, '--port', String(port),
        '--conns', String(def.conns), '--count', String(def.count), '--size', String(def.size),
        '--timeout', String(RUN_TIMEOUT), ...(def.pipelining ? ['--pipelining'] : [])];
    }
    const m0 = machineCpu();
    const s0 = selfAndChildrenCpu();
    const res = await runClient(args, pinned);
    const tree = processTree(server.pid);
    const cpu1 = cpuSeconds(tree);
    const m1 = machineCpu();
    const s1 = selfAndChildrenCpu();
    const hwm = statusKb(tree, 'VmHWM');
    const rss1 = statusKb(tree, 'VmRSS');
    const alive = isAlive(server.pid);
    let elapsed = res.wall;
    let ok = res.code === 0 && !res.timedOut && alive;
    let extra = {};
    if (def.gen !== 'smtp-source') {
      const j = lastJson(res.out);
      ok = ok && !!j?.ok;
      if (j?.elapsed_s) elapsed = j.elapsed_s; // the client's own clock leaves node's start-up out
      if (j) extra = { pipelined_conns: j.pipelined_conns, sent: j.sent, client_load_cpu_s: j.client_cpu_s };
    } else if (res.out.trim() || res.err.trim()) {
      extra = { client_output: tail(res.out + res.err) };
    }
    const serverCpu = cpu1 - cpu0;
    const clientCpu = s1.children - s0.children;
    const background = (m1.busy - m0.busy) - serverCpu - clientCpu - (s1.self - s0.self);
    const backgroundPct = Math.max(0, (background / Math.max(1e-9, m1.total - m0.total)) * 100);
    return { ...base, ok, loadgen, conns: def.conns, count: def.count, size: def.size, elapsed_s: elapsed,
      msgs_per_s: def.count / elapsed, mb_per_s: (def.count * def.size) / elapsed / 1e6,
      server_cpu_s: serverCpu, cpu_us_per_msg: (serverCpu / def.count) * 1e6,
      client_cpu_s: clientCpu, background_cpu_pct: backgroundPct,
      rss_start_kb: rss0, rss_end_kb: rss1, hwm_kb: hwm, server_alive: alive, rc: res.code, ...extra,
      note: ok ? '' : tail(`${res.timedOut ? `timed out after ${RUN_TIMEOUT} s; ` : ''}rc ${res.code} ${res.signal ?? ''} ` +
        `${alive ? '' : 'server died; '}${res.out} ${res.err}`) };
  } finally {
    await stopServer(server);
  }
}

// ---- main loop -------------------------------------------------------------------------------
const rows = [];
const t0 = Date.now();
for (let rep = 1; rep <= REPS; rep++) {
  for (const scenario of SCENARIOS) {
    const def = SCENARIO_DEFS[scenario];
    const list = def.servers ?? servers;
    const order = rep % 2 ? list : [...list].reverse();
    for (const name of order) {
      // A run disturbed by other processes is measured again; of the attempts, the one with the
      // least background CPU counts (the others stay in results.jsonl, marked superseded).
      const attempts = [await measure(name, scenario, rep)];
      let r = attempts[0];
      for (let retry = 0; retry < NOISY_RETRIES && r.ok && r.background_cpu_pct > NOISY_MAX; retry++) {
        log(`rep ${rep}/${REPS} ${scenario} ${name}: other processes used ${r.background_cpu_pct.toFixed(0)}% of the` +
          ` machine during the run (${metricOf(r).toFixed(1)} ${unitOf(scenario)}); measuring again`);
        r = await measure(name, scenario, rep);
        attempts.push(r);
      }
      const okAttempts = attempts.filter((a) => a.ok);
      r = okAttempts.length ? okAttempts.reduce((a, b) => (b.background_cpu_pct < a.background_cpu_pct ? b : a)) : r;
      for (const a of attempts) {
        if (a !== r) a.superseded = true;
        rows.push(a);
        appendFileSync(RESULTS, `${JSON.stringify(a)}\n`);
      }
      const v = metricOf(r);
      log(`rep ${rep}/${REPS} ${scenario} ${name}: ${r.ok ? `${Number.isFinite(v) ? v.toFixed(1) : '?'} ${unitOf(scenario)}` : 'FAILED'}` +
        (r.ok && scenario !== 'idle' ? `, server CPU ${Math.round(r.cpu_us_per_msg)} µs/msg, peak RSS ${(r.hwm_kb / 1024).toFixed(1)} MiB` +
          `, client CPU ${Math.round((r.client_cpu_s / r.count) * 1e6)} µs/msg, background ${r.background_cpu_pct.toFixed(0)}%` : '') +
        (r.ok ? '' : ` (${r.note})`));
    }
  }
}

const kept = rows.filter((r) => !r.superseded);
const distNow = treeHash(DIST);
if (distNow !== DIST_HASH) {
  log(`note: dist/ was rebuilt during the bench (now ${distNow}); ` +
    (env.SNAPSHOT !== '0' ? `every tsmtpd number is for the copy taken at the start (${DIST_HASH})` : 'the tsmtpd numbers MIX TWO BUILDS'));
}
const table = mainTable(kept);
const legend = [
  `Medians of ${REPS} run${REPS === 1 ? '' : 's'}; a fresh server per run. msg/s and MB/s (10^6 bytes of payload per second):`,
  'higher is better; KiB/conn = (server RSS with the connections held - RSS before) / connections: lower is',
  'better. tsmtpd/peer > 1 means tsmtpd is faster (for idle: uses more memory). CPU = server user+sys time',
  '(whole process tree) per message; peak RSS = server VmHWM over the run.',
].join('\n');
writeFileSync(path.join(OUT, 'summary.md'), ['# tsmtpd bench', '', '```', envText, '```', '', table, '', legend, '',
  '## Every server, median (min–max)', '', detailTable(kept), '',
  ...(rows.length > kept.length ? [`${rows.length - kept.length} run(s) measured again because other processes used more than` +
    ` ${NOISY_MAX}% of the machine meanwhile (kept in results.jsonl as "superseded").`, ''] : [])].join('\n'));
process.stdout.write(`\n${table}\n\n${legend}\n`);
process.stderr.write(`\nbench: ${kept.filter((r) => r.ok).length}/${kept.length} runs ok (${rows.length - kept.length} noisy re-run) in ${Math.round((Date.now() - t0) / 1000)} s;` +
  ` results.jsonl and summary.md (with min–max) in ${OUT}\n`);
if (captureToo) runCapture();
