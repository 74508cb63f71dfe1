#!/usr/bin/env node
// tsmtpd's own SMTP load client for `npm run bench`. Loopback only; bounded in count and time.
//
//   node bench/loadgen.js load --port P [--host 127.0.0.1] [--conns 10] [--count 20000]
//        [--size 1024] [--pipelining] [--no-rset] [--timeout 180]
//     N connections share COUNT messages. Each connection: greeting, EHLO once, then per message
//     RSET (not before the first), MAIL FROM, RCPT TO, DATA, the message, "." -- with
//     --pipelining and when the server's EHLO offers PIPELINING (RFC 2920), RSET+MAIL+RCPT+DATA
//     go out in one write and the replies are read afterwards; the body is sent after 354.
//     Prints one JSON line: {"mode":"load","ok":...,"sent":...,"elapsed_s":...,"pipelined":...}.
//
//   node bench/loadgen.js idle --port P [--host 127.0.0.1] [--conns 2000] [--inflight 200]
//        [--step-timeout 10] [--timeout 180]
//     Opens N connections (at most INFLIGHT handshakes at once), reads each greeting, sends EHLO,
//     waits for the 250 and holds the connection. When all are up it prints a "ready" JSON line
//     and waits for a line on stdin (or stdin's end); then it prints how many connections are
//     still open, closes them all and prints the final JSON line. Whoever runs it measures the
//     server between the two lines.
import net from 'node:net';
import { createInterface } from 'node:readline';

const [mode, ...rest] = process.argv.slice(2);
const opts = { host: '127.0.0.1', port: 0, conns: 10, count: 20000, size: 1024, pipelining: false,
  rset: true, timeout: 180, inflight: 200, 'step-timeout': 10 };
for (let i = 0; i < rest.length; i++) {
  const arg = rest[i];
  if (!arg.startsWith('--')) die(`unexpected argument ${arg}`);
  const key = arg.slice(2);
  if (key === 'pipelining') opts.pipelining = true;
  else if (key === 'no-rset') opts.rset = false;
  else if (key === 'host') opts.host = rest[++i];
  else if (key in opts) opts[key] = Number(rest[++i]);
  else die(`unknown option ${arg}`);
}
if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(opts.host)) die('loopback (127.0.0.0/8) targets only');
if (!(opts.port > 0 && opts.port < 65536)) die('--port is required');

function die(msg) {
  process.stderr.write(`loadgen: ${msg}\n`);
  process.exit(2);
}
function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

const started = process.hrtime.bigint();
const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
let finished = false;
const hardStop = setTimeout(() => {
  finished = true;
  emit({ mode, ok: false, error: `timed out after ${opts.timeout} s`, ...progress() });
  process.exit(3);
}, opts.timeout * 1000);
let progress = () => ({});

/**
 * One SMTP client connection. Replies are parsed from Buffers: a reply is complete at a line
 * whose fourth byte is a space (or that is just three digits). `expect(codes, cb)` queues the
 * codes the next replies must carry; cb runs once they all arrived, or with an Error.
 */
class Client {
  constructor(onError) {
    this.pending = [];          // expected reply codes, in order
    this.done = null;           // callback once pending is empty
    this.partial = null;        // bytes of an unfinished line
    this.lines = [];            // lines of the reply being read (for EHLO keywords and errors)
    this.onError = onError;
    this.failed = false;
    this.sock = net.connect({ host: opts.host, port: opts.port });
    this.sock.setNoDelay(true);
    this.sock.on('data', (chunk) => this.onData(chunk));
    this.sock.on('error', (err) => this.fail(err));
    this.sock.on('close', () => this.fail(new Error('connection closed by server')));
  }

  expect(codes, cb) {
    this.pending = codes.slice();
    this.done = cb;
  }

  send(data) {
    this.sock.write(data);
  }

  fail(err) {
    if (this.failed || this.closing) return;
    this.failed = true;
    this.sock.destroy();
    this.onError(err);
  }

  close() {
    this.closing = true;
    this.sock.destroy();
  }

  onData(chunk) {
    let buf = this.partial ? Buffer.concat([this.partial, chunk]) : chunk;
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(10, start);
      if (nl < 0) break;
      const end = nl > start && buf[nl - 1] === 13 ? nl - 1 : nl;
      const isLast = end - start === 3 || buf[start + 3] === 32;
      this.lines.push(buf.toString('latin1', start, end));
      start = nl + 1;
      if (isLast) {
        const lines = this.lines;
        this.lines = [];
        this.onReply(Number(lines[lines.length - 1].slice(0, 3)), lines);
        if (this.failed) return;
      }
    }
    this.partial = start < buf.length ? buf.subarray(start) : null;
  }

  onReply(code, lines) {
    const want = this.pending.shift();
    if (want === undefined) return this.fail(new Error(`unexpected reply: ${lines.join(' | ')}`));
    if (code !== want) return this.fail(new Error(`expected ${want}, got ${lines.join(' | ')}`));
    if (this.pending.length === 0) {
      const cb = this.done;
      this.done = null;
      cb(lines);
    }
  }
}

/** This client's own user+sys CPU time: shows when the load generator, not the server, is the limit. */
function cpuSeconds() {
  const u = process.resourceUsage();
  return (u.userCPUTime + u.systemCPUTime) / 1e6;
}

function buildMessage(size) {
  // A few headers, then `size` bytes of body in 78-byte lines (76 letters + CRLF, none starting
  // with a dot, so there is nothing to dot-stuff), then the terminating CRLF.CRLF.
  const head = 'From: <loadgen@bench.invalid>\r\nTo: <sink@bench.invalid>\r\n' +
    'Subject: tsmtpd bench\r\nMessage-ID: <bench@bench.invalid>\r\n\r\n';
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  const line = Buffer.from(`${alphabet}${alphabet}`.slice(0, 76) + '\r\n', 'latin1');
  const body = Buffer.alloc(size);
  for (let off = 0; off < size; off += line.length) line.copy(body, off, 0, Math.min(line.length, size - off));
  if (size >= 2) body.write('\r\n', size - 2, 'latin1');
  return Buffer.concat([Buffer.from(head, 'latin1'), body, Buffer.from('.\r\n', 'latin1')]);
}

function runLoad() {
  const message = buildMessage(opts.size);
  const conns = Math.max(1, Math.min(opts.conns, opts.count));
  let sent = 0;
  let pipelined = 0;
  let open = conns;
  const errors = [];
  progress = () => ({ sent, count: opts.count, conns, elapsed_s: seconds() });
  const t0 = process.hrtime.bigint();

  const finish = () => {
    if (finished) return;
    finished = true;
    clearTimeout(hardStop);
    const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
    emit({ mode: 'load', ok: errors.length === 0 && sent === opts.count, sent, count: opts.count,
      conns, size: opts.size, pipelined_conns: pipelined, rset: opts.rset, elapsed_s: elapsed,
      msgs_per_s: sent / elapsed, client_cpu_s: cpuSeconds(), errors: errors.slice(0, 5), n_errors: errors.length });
    process.exitCode = errors.length === 0 && sent === opts.count ? 0 : 1;
  };

  for (let i = 0; i < conns; i++) {
    let quota = Math.floor(opts.count / conns) + (i < opts.count % conns ? 1 : 0);
    let first = true;
    let pipe = false;
    const c = new Client((err) => {
      errors.push(err.message);
      if (--open === 0) finish();
    });
    const next = () => {
      if (quota === 0) {
        c.send('QUIT\r\n');
        c.expect([221], () => {
          c.close();
          if (--open === 0) finish();
        });
        return;
      }
      const rset = opts.rset && !first;
      first = false;
      const afterData = () => {
        c.send(message);
        c.expect([250], () => {
          quota--;
          sent++;
          next();
        });
      };
      if (pipe) {
        c.send(`${rset ? 'RSET\r\n' : ''}MAIL FROM:<loadgen@bench.invalid>\r\nRCPT TO:<sink@bench.invalid>\r\nDATA\r\n`);
        c.expect(rset ? [250, 250, 250, 354] : [250, 250, 354], afterData);
      } else {
        const mail = () => {
          c.send('MAIL FROM:<loadgen@bench.invalid>\r\n');
          c.expect([250], () => {
            c.send('RCPT TO:<sink@bench.invalid>\r\n');
            c.expect([250], () => {
              c.send('DATA\r\n');
              c.expect([354], afterData);
            });
          });
        };
        if (rset) {
          c.send('RSET\r\n');
          c.expect([250], mail);
        } else mail();
      }
    };
    c.expect([220], () => {
      c.send('EHLO loadgen.bench.invalid\r\n');
      c.expect([250], (lines) => {
        pipe = opts.pipelining && lines.some((l) => /^250[- ]PIPELINING\s*$/i.test(l));
        if (pipe) pipelined++;
        next();
      });
    });
  }
}

function runIdle() {
  const total = opts.conns;
  const clients = [];
  let launched = 0;
  let ready = 0;
  let failed = 0;
  const errors = [];
  progress = () => ({ ready, failed, conns: total });
  const t0 = process.hrtime.bigint();

  const launch = () => {
    if (launched >= total) return;
    launched++;
    let settled = false;
    const settle = (err) => {
      if (settled) {
        if (err) c.dead = true;   // dropped while held
        return;
      }
      settled = true;
      clearTimeout(timer);
      if (err) {
        failed++;
        if (errors.length < 5) errors.push(err.message);
        c.dead = true;
      } else ready++;
      if (ready + failed === total) allUp();
      else launch();
    };
    const c = new Client((err) => settle(err));
    clients.push(c);
    const timer = setTimeout(() => c.fail(new Error(`no greeting + EHLO within ${opts['step-timeout']} s`)),
      opts['step-timeout'] * 1000);
    c.expect([220], () => {
      c.send('EHLO idle.bench.invalid\r\n');
      c.expect([250], () => settle(null));
    });
  };

  const allUp = () => {
    const connectS = Number(process.hrtime.bigint() - t0) / 1e9;
    emit({ mode: 'idle', event: 'ready', ok: failed === 0, conns: total, ready, failed, connect_s: connectS, errors });
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const alive = clients.filter((c) => !c.dead && !c.failed).length;
      for (const c of clients) c.close();
      finished = true;
      clearTimeout(hardStop);
      emit({ mode: 'idle', event: 'closed', ok: failed === 0 && alive === total, conns: total, ready,
        failed, alive_at_release: alive, connect_s: connectS, errors });
      process.exitCode = failed === 0 && alive === total ? 0 : 1;
      setTimeout(() => process.exit(), 100).unref();
    };
    const rl = createInterface({ input: process.stdin });
    rl.once('line', release);
    rl.once('close', release);
  };

  for (let i = 0; i < Math.min(opts.inflight, total); i++) launch();
}

if (mode === 'load') runLoad();
else if (mode === 'idle') runIdle();
else die('mode must be "load" or "idle"');
