// Would a sync fast path in the hook caller (hooks.ts andThen) pay? Messages/s over loopback
// (bench/loadgen.js, 10 connections, pipelined) and the server's CPU time per message, for
// handlers whose MAIL/RCPT/DATA hooks are absent, synchronous or async, against two builds: dist/
// (every command goes on after its hook in a microtask) and a copy of it whose andThen goes on at
// once when the hook answered at once (the sync fast path the commands had before).
//   node bench/hook-paths.js         REPS=3 COUNT=20000 CONNS=10 HANDLERS="none sync async"
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DIST = path.resolve(HERE, '../dist');
const REPS = Number(process.env.REPS ?? 3);
const COUNT = Number(process.env.COUNT ?? 20000);
const CONNS = Number(process.env.CONNS ?? 10);

// The fast-path copy: andThen goes on in the same tick when the value is already there (what
// MAIL, RCPT, RSET, NOOP and the end of DATA did before every command went on in a microtask).
const tmp = mkdtempSync(path.join(os.tmpdir(), 'tsmtpd-hook-paths-'));
const fastDist = path.join(tmp, 'dist');
cpSync(DIST, fastDist, { recursive: true });
cpSync(path.resolve(HERE, '../package.json'), path.join(tmp, 'package.json'));
symlinkSync(path.resolve(HERE, '../node_modules'), path.join(tmp, 'node_modules'));
{
  const file = path.join(fastDist, 'hooks.js');
  const from = 'return Promise.resolve(value).then(next);';
  const text = readFileSync(file, 'utf8');
  if (!text.includes(from)) throw new Error(`hooks.js: cannot find ${from}`);
  writeFileSync(file, text.replace(from, 'return isThenable(value) ? value.then(next) : next(value);'));
}

const HANDLERS = {
  none: '{}',
  sync: `{ handleMAIL() { return '250 2.1.0 OK'; }, handleRCPT() { return '250 2.1.5 OK'; }, handleDATA() { return '250 2.0.0 OK'; } }`,
  async: `{ async handleMAIL() { return '250 2.1.0 OK'; }, async handleRCPT() { return '250 2.1.5 OK'; }, async handleDATA() { return '250 2.0.0 OK'; } }`,
};

function serve(dist, handler) {
  const code = `const { Controller } = await import(${JSON.stringify(pathToFileURL(path.join(dist, 'index.js')).href)});
const c = new Controller(${handler}, { hostname: '127.0.0.1', port: 0 });
await c.start(); console.log(c.port);
let cpu0 = process.cpuUsage();
process.stdin.on('data', () => { cpu0 = process.cpuUsage(); });
process.stdin.on('end', () => { const u = process.cpuUsage(cpu0); console.log(u.user + u.system); c.stop().then(() => process.exit(0)); });
process.stdin.resume();`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['pipe', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.stdout.once('data', (d) => resolve({ child, port: Number(String(d).trim()) }));
    child.once('exit', (code) => reject(new Error(`server exited (${code}) before listening`)));
  });
}

async function rate(dist, handler) {
  const { child, port } = await serve(dist, handler);
  const cpu = new Promise((resolve) => child.stdout.once('data', (d) => resolve(Number(String(d).trim()))));
  child.stdin.write('go\n');
  await new Promise((resolve) => setTimeout(resolve, 50));
  const r = spawnSync(process.execPath, [path.join(HERE, 'loadgen.js'), 'load', '--port', String(port), '--conns', String(CONNS),
    '--count', String(COUNT), '--pipelining'], { encoding: 'utf8' });
  child.stdin.end();
  const cpuMicros = await cpu;
  await new Promise((resolve) => child.once('exit', resolve));
  const out = JSON.parse(r.stdout.trim().split('\n').pop());
  if (out.ok !== true || out.sent !== COUNT) throw new Error(`loadgen: ${r.stdout} ${r.stderr}`);
  return { rate: COUNT / out.elapsed_s, cpu: cpuMicros / COUNT };
}

const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`hook paths: msg/s, median of ${REPS}, ${CONNS} connections pipelined, ${COUNT} messages of loadgen's default size`);
console.log('| hooks | msg/s sync fast path | msg/s always a promise (dist/) | server CPU µs/msg fast | always | always / fast (CPU) |');
console.log('|---|---:|---:|---:|---:|---:|');
const ONLY = (process.env.HANDLERS ?? 'none sync async').split(/\s+/);
for (const [name, handler] of Object.entries(HANDLERS).filter(([n]) => ONLY.includes(n))) {
  const fast = [];
  const slow = [];
  for (let i = 0; i < REPS; i++) {
    // Interleaved, order flipped every other rep, so drift in the machine's load hits both.
    if (i % 2 === 0) { fast.push(await rate(fastDist, handler)); slow.push(await rate(DIST, handler)); }
    else { slow.push(await rate(DIST, handler)); fast.push(await rate(fastDist, handler)); }
  }
  const f = median(fast.map((x) => x.rate));
  const s = median(slow.map((x) => x.rate));
  const fc = median(fast.map((x) => x.cpu));
  const sc = median(slow.map((x) => x.cpu));
  console.log(`| ${name} | ${f.toFixed(0)} | ${s.toFixed(0)} | ${fc.toFixed(1)} | ${sc.toFixed(1)} | ${(sc / fc).toFixed(3)} |`);
}
rmSync(tmp, { recursive: true, force: true });
