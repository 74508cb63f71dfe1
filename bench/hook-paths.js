// Does the sync fast path of the hook caller pay? Messages/s over loopback (bench/loadgen.js,
// 10 connections, pipelined) for handlers whose MAIL/RCPT/DATA hooks are absent, synchronous, or
// async, against two builds: dist/ as it is, and a copy of it where every hook result goes
// through a promise (as if the double paths were removed and every command awaited its hook).
//   node bench/hook-paths.js         REPS=3 COUNT=20000 CONNS=10
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

// The always-async copy: a missing hook's default and a sync hook's reply both become promises.
const tmp = mkdtempSync(path.join(os.tmpdir(), 'tsmtpd-hook-paths-'));
const asyncDist = path.join(tmp, 'dist');
cpSync(DIST, asyncDist, { recursive: true });
cpSync(path.resolve(HERE, '../package.json'), path.join(tmp, 'package.json'));
symlinkSync(path.resolve(HERE, '../node_modules'), path.join(tmp, 'node_modules'));
function patch(file, from, to) {
  const p = path.join(asyncDist, file);
  const text = readFileSync(p, 'utf8');
  if (!text.includes(from)) throw new Error(`${file}: cannot find ${from}`);
  writeFileSync(p, text.replace(from, to));
}
patch('connection.js', 'if (fn === undefined)\n            return fallback;', 'if (fn === undefined)\n            return Promise.resolve(fallback);');
patch('hooks.js', 'if (!isThenable(result))\n        return validReply(', 'if (!isThenable(result))\n        return Promise.resolve().then(() => validReply(');
patch('hooks.js', 'validReply(host, result, enhanced, enhancedDefault);\n    host.flush();', 'validReply(host, result, enhanced, enhancedDefault));\n    host.flush();');

const HANDLERS = {
  none: '{}',
  sync: `{ handleMAIL() { return '250 2.1.0 OK'; }, handleRCPT() { return '250 2.1.5 OK'; }, handleDATA() { return '250 2.0.0 OK'; } }`,
  async: `{ async handleMAIL() { return '250 2.1.0 OK'; }, async handleRCPT() { return '250 2.1.5 OK'; }, async handleDATA() { return '250 2.0.0 OK'; } }`,
};

function serve(dist, handler) {
  const code = `const { Controller } = await import(${JSON.stringify(pathToFileURL(path.join(dist, 'index.js')).href)});
const c = new Controller(${handler}, { hostname: '127.0.0.1', port: 0 });
await c.start(); console.log(c.port); process.stdin.on('end', () => c.stop().then(() => process.exit(0))); process.stdin.resume();`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['pipe', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.stdout.once('data', (d) => resolve({ child, port: Number(String(d).trim()) }));
    child.once('exit', (code) => reject(new Error(`server exited (${code}) before listening`)));
  });
}

async function rate(dist, handler) {
  const { child, port } = await serve(dist, handler);
  const r = spawnSync(process.execPath, [path.join(HERE, 'loadgen.js'), 'load', '--port', String(port), '--conns', String(CONNS),
    '--count', String(COUNT), '--pipelining'], { encoding: 'utf8' });
  child.stdin.end();
  await new Promise((resolve) => child.once('exit', resolve));
  const out = JSON.parse(r.stdout.trim().split('\n').pop());
  if (out.ok !== true || out.sent !== COUNT) throw new Error(`loadgen: ${r.stdout} ${r.stderr}`);
  return COUNT / out.elapsed_s;
}

const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`hook paths: msg/s, median of ${REPS}, ${CONNS} connections pipelined, ${COUNT} messages of loadgen's default size`);
console.log('| hooks | fast path (dist/) | always a promise | fast / always |');
console.log('|---|---:|---:|---:|');
for (const [name, handler] of Object.entries(HANDLERS)) {
  const fast = [];
  const slow = [];
  for (let i = 0; i < REPS; i++) {
    // Interleaved, order flipped every other rep, so drift in the machine's load hits both.
    if (i % 2 === 0) { fast.push(await rate(DIST, handler)); slow.push(await rate(asyncDist, handler)); }
    else { slow.push(await rate(asyncDist, handler)); fast.push(await rate(DIST, handler)); }
  }
  const f = median(fast);
  const s = median(slow);
  console.log(`| ${name} | ${f.toFixed(0)} | ${s.toFixed(0)} | ${(f / s).toFixed(3)} |`);
}
rmSync(tmp, { recursive: true, force: true });
