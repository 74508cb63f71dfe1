#!/usr/bin/env node
// The cost of withAuthResults per message: the same DKIM-signed 1 KiB message sent N times over
// one connection to an in-process Controller, with a plain handler and with the handler wrapped
// (SPF, DKIM, DMARC and ARC checked, the header prepended). DNS answers come from a table in
// this file (no network), so the figure is mailauth's and ours, not a resolver's.
// Knobs (env): AUTHRES_N=2000 messages per variant, AUTHRES_REPS=3 (the median counts).
// Needs `npm run build` first. Prints a table, and one JSON line per variant on stderr.
import { generateKeyPairSync } from 'node:crypto';
import net from 'node:net';
import { dkimSign } from 'mailauth';
import { Controller, withAuthResults } from '../dist/index.js';

const N = Number(process.env.AUTHRES_N ?? 2000);
const REPS = Number(process.env.AUTHRES_REPS ?? 3);

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const zone = {
  'example.org TXT': ['v=spf1 ip4:127.0.0.1 -all'],
  '_dmarc.example.org TXT': ['v=DMARC1; p=reject'],
  's1._domainkey.example.org TXT': [`v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`],
};
async function resolver(name, type) {
  const records = zone[`${name.toLowerCase()} ${type}`];
  if (records === undefined) throw Object.assign(new Error(`queryNotFound ${name}`), { code: 'ENOTFOUND' });
  return type === 'TXT' ? records.map((r) => [r]) : records;
}

const unsigned = Buffer.from(
  'From: alice@example.org\r\nTo: bob@example.net\r\nSubject: bench\r\nDate: Thu, 03 Dec 2026 05:00:00 +0000\r\n' +
    `Message-ID: <1@example.org>\r\n\r\n${'0123456789abcdef'.repeat(60)}\r\n`,
);
const signature = await dkimSign(unsigned, {
  canonicalization: 'relaxed/relaxed',
  signatureData: [{ signingDomain: 'example.org', selector: 's1', privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }) }],
});
const message = Buffer.concat([Buffer.from(signature.signatures), unsigned]);

let checked = 0;
const plain = {
  handleDATA() {
    return '250 OK';
  },
};
const counting = {
  handleDATA(_s, _session, envelope) {
    if (envelope.originalContent.subarray(0, 23).toString() === 'Authentication-Results:') checked++;
    return '250 OK';
  },
};

/** Sends `count` transactions one after another; resolves when the last is answered. */
function send(port, count) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let buf = '';
    let phase = 'greeting';
    let sent = 0;
    socket.on('error', reject);
    socket.on('data', (chunk) => {
      buf += chunk.toString('latin1');
      for (let nl = buf.indexOf('\r\n'); nl >= 0; nl = buf.indexOf('\r\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        if (line[3] === '-') continue;
        if (!/^[23]/.test(line)) return reject(new Error(`unexpected reply: ${line}`));
        if (phase === 'greeting') {
          socket.write('EHLO bench.example.org\r\n');
          phase = 'ready';
        } else if (phase === 'ready') {
          if (sent === count) {
            socket.end('QUIT\r\n');
            return resolve();
          }
          sent++;
          socket.write('MAIL FROM:<alice@example.org>\r\n');
          phase = 'mail';
        } else if (phase === 'mail') {
          socket.write('RCPT TO:<bob@example.net>\r\n');
          phase = 'rcpt';
        } else if (phase === 'rcpt') {
          socket.write('DATA\r\n');
          phase = 'data';
        } else {
          socket.write(Buffer.concat([message, Buffer.from('.\r\n')]));
          phase = 'ready';
        }
      }
    });
  });
}

async function run(handler) {
  const controller = new Controller(handler, { hostname: '127.0.0.1', port: 0, logger: { debug() {}, info() {}, warn() {}, error() {} } });
  await controller.start();
  try {
    await send(controller.port, 50); // warm-up
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await send(controller.port, N);
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    return { msgs_per_s: N / wall, cpu_us_per_msg: (cpu.user + cpu.system) / N };
  } finally {
    await controller.stop();
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const variants = {
  plain: () => plain,
  'auth-results': () => withAuthResults(counting, { authservId: 'mx.bench', resolver }),
};
const results = {};
for (let rep = 0; rep < REPS; rep++) {
  for (const [name, make] of Object.entries(variants)) {
    const r = await run(make());
    (results[name] ??= []).push(r);
    process.stderr.write(`${JSON.stringify({ variant: name, rep: rep + 1, n: N, ...r })}\n`);
  }
}
if (checked !== REPS * (N + 50)) throw new Error(`only ${checked} messages carried our header`);
const row = (name) => {
  const rs = results[name];
  return { msgs: median(rs.map((r) => r.msgs_per_s)), cpu: median(rs.map((r) => r.cpu_us_per_msg)) };
};
const p = row('plain');
const a = row('auth-results');
process.stdout.write(
  [
    `withAuthResults cost (medians of ${REPS} x ${N} messages, 1 KiB, DKIM rsa-sha256 2048 bit, one connection; CPU = client + server, one process)`,
    '| variant | msg/s | CPU µs/msg |',
    '| --- | ---: | ---: |',
    `| plain handleDATA | ${p.msgs.toFixed(0)} | ${p.cpu.toFixed(0)} |`,
    `| withAuthResults | ${a.msgs.toFixed(0)} | ${a.cpu.toFixed(0)} |`,
    `| cost of the checks | | ${(a.cpu - p.cpu).toFixed(0)} |`,
    '',
  ].join('\n'),
);
