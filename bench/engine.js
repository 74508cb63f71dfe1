// The engine's own cost per message, without the kernel: an SMTP object serves a stand-in socket
// in this process, fed smtp-source's sequence (EHLO once, then MAIL, RCPT, DATA and a 1 KiB body,
// each after the reply to the one before), so a run measures the protocol code and not syscalls
// (which are most of a loopback bench's CPU and most of its noise). Server CPU µs per message,
// median of REPS runs, each in a fresh process, builds interleaved:
//   dist/                   this build
//   microtask               dist/ with andThen always going on in a microtask (no sync fast path)
//   baseline                BASELINE=/path/to/other/dist, e.g. a build of an older commit
// Handlers: none (no MAIL/RCPT/DATA hooks), sync, async.
//   node bench/engine.js    REPS=5 COUNT=20000 HANDLERS="none sync async" BASELINE=
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HANDLERS = {
  none: '({})',
  sync: `({ handleMAIL() { return '250 2.1.0 OK'; }, handleRCPT() { return '250 2.1.5 OK'; }, handleDATA() { return '250 2.0.0 OK'; } })`,
  async: `({ async handleMAIL() { return '250 2.1.0 OK'; }, async handleRCPT() { return '250 2.1.5 OK'; }, async handleDATA() { return '250 2.0.0 OK'; } })`,
};

/** Enough of a net.Socket for the engine; each write answers the command waiting for it. */
class StandInSocket extends EventEmitter {
  remoteAddress = '127.0.0.1';
  remotePort = 40000;
  remoteFamily = 'IPv4';
  destroyed = false;
  waiter = null;
  setNoDelay() {}
  pause() {}
  resume() {}
  write(text) {
    const w = this.waiter;
    this.waiter = null;
    w?.(String(text));
    return true;
  }
  end() {
    this.destroy();
  }
  destroy() {
    this.destroyed = true;
    this.emit('close');
  }
  send(bytes) {
    const reply = new Promise((resolve) => (this.waiter = resolve));
    this.emit('data', bytes);
    return reply;
  }
}

async function child(dist, handlerName, count) {
  const { SMTP } = await import(pathToFileURL(path.join(dist, 'index.js')).href);
  const handler = eval(HANDLERS[handlerName]);
  // Each its own ArrayBuffer of its own size, as a socket's reads are (a pooled Buffer is not).
  const read = (text) => {
    const bytes = Buffer.allocUnsafeSlow(Buffer.byteLength(text));
    bytes.write(text, 'latin1');
    return bytes;
  };
  const [ehlo, mail, rcpt, data] = ['EHLO client.example', 'MAIL FROM:<sender@example.com>', 'RCPT TO:<rcpt@example.org>', 'DATA'].map((c) => read(`${c}\r\n`));
  const body = read('Subject: bench\r\n\r\n' + ('x'.repeat(78) + '\r\n').repeat(12) + '.\r\n');
  const session = async (n) => {
    const socket = new StandInSocket();
    const greeting = new Promise((resolve) => (socket.waiter = resolve));
    void new SMTP(handler, { hostname: 'bench', timeout: 0 }).serve(socket);
    await greeting;
    await socket.send(ehlo);
    for (let i = 0; i < n; i++) {
      await socket.send(mail);
      await socket.send(rcpt);
      await socket.send(data);
      const reply = await socket.send(body);
      if (!reply.startsWith('250')) throw new Error(`unexpected reply: ${reply}`);
    }
    socket.destroy();
  };
  await session(Math.min(count, 5000)); // warm-up: the JIT, the caches
  const start = process.cpuUsage();
  await session(count);
  const used = process.cpuUsage(start);
  console.log((used.user + used.system) / count);
}

if (process.argv[2] === '--child') {
  await child(process.argv[3], process.argv[4], Number(process.argv[5]));
} else {
  const HERE = path.dirname(fileURLToPath(import.meta.url));
  const DIST = path.resolve(HERE, '../dist');
  const REPS = Number(process.env.REPS ?? 5);
  const COUNT = Number(process.env.COUNT ?? 20000);
  const ONLY = (process.env.HANDLERS ?? 'none sync async').split(/\s+/);

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'tsmtpd-engine-bench-'));
  const microtaskDist = path.join(tmp, 'dist');
  cpSync(DIST, microtaskDist, { recursive: true });
  cpSync(path.resolve(HERE, '../package.json'), path.join(tmp, 'package.json'));
  symlinkSync(path.resolve(HERE, '../node_modules'), path.join(tmp, 'node_modules'));
  const hooks = path.join(microtaskDist, 'hooks.js');
  const fast = 'return isThenable(value) ? value.then(next) : next(value);';
  const text = readFileSync(hooks, 'utf8');
  if (!text.includes(fast)) throw new Error(`hooks.js: cannot find ${fast}`);
  writeFileSync(hooks, text.replace(fast, 'return Promise.resolve(value).then(next);'));

  const builds = { 'dist/': DIST, microtask: microtaskDist };
  if (process.env.BASELINE) builds.baseline = path.resolve(process.env.BASELINE);
  const names = Object.keys(builds);
  const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log(`engine CPU per message (µs, in process, no sockets), median of ${REPS} runs of ${COUNT} messages`);
  console.log(`| hooks | ${names.join(' | ')} | ${names.slice(1).map((n) => `${n} / dist/`).join(' | ')} |`);
  console.log(`|---|${names.map(() => '---:').join('|')}|${names.slice(1).map(() => '---:').join('|')}|`);
  try {
    for (const handler of ONLY) {
      const runs = Object.fromEntries(names.map((n) => [n, []]));
      for (let i = 0; i < REPS; i++) {
        // Interleaved, the order turned every other rep, so drift in the machine's load hits all.
        for (const name of i % 2 === 0 ? names : names.slice().reverse()) {
          const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', builds[name], handler, String(COUNT)], { encoding: 'utf8' });
          if (r.status !== 0) throw new Error(`${name} ${handler}: ${r.stderr}`);
          runs[name].push(Number(r.stdout.trim()));
        }
      }
      const m = Object.fromEntries(names.map((n) => [n, median(runs[n])]));
      console.log(`| ${handler} | ${names.map((n) => m[n].toFixed(2)).join(' | ')} | ${names.slice(1).map((n) => (m[n] / m['dist/']).toFixed(2)).join(' | ')} |`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
