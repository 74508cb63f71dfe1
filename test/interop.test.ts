/**
 * Interop with real mail software (issue 8, item 5): swaks, curl's smtp://, msmtp, Python's
 * smtplib, nodemailer, and Postfix as a client (a message submitted with Postfix's sendmail and
 * relayed by a private Postfix instance to tsmtpd over SMTP), each over plain SMTP and over
 * STARTTLS. The server is a Controller with a recording handler and a certificate made at test
 * time with openssl.
 *
 * Tools come from Debian packages (swaks, curl, msmtp, python3, postfix, openssl; .ci/run
 * installs them). A missing tool fails the test under CI and skips it elsewhere. Postfix needs
 * root (its master runs as root and drops to the postfix user); not root: the same rule.
 * Every test is bounded: each program runs under a time limit and each wait has a deadline.
 *
 *   npm run test:interop
 */
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import type { Handler, SMTPServer } from '../src/handler.js';
import type { Envelope, Session } from '../src/session.js';
import type { Controller } from '../src/controller.js';
import { startServer } from './helpers.js';
import { makeCertsIfPossible, needCerts, type Certs } from './tls-util.js';
import { PostfixInstance, assertRan, need, needPostfix, run } from './postfix-util.js';

// ---- the server side --------------------------------------------------------------------------

interface Delivered {
  mailFrom: string | null;
  rcptTos: string[];
  content: string;
  hostName: string | null;
  tls: string | null;
  mailParams: string[];
}

/** Records each message with what the session knew: the EHLO name and the TLS protocol. */
class Capture implements Handler {
  messages: Delivered[] = [];
  private waiters: Array<() => void> = [];
  handleDATA(_server: SMTPServer, session: Session, envelope: Envelope): string {
    this.messages.push({
      mailFrom: envelope.mailFrom,
      rcptTos: [...envelope.rcptTos],
      content: envelope.originalContent!.toString('utf8'),
      hostName: session.hostName,
      tls: session.tls?.protocol ?? null,
      mailParams: [...envelope.mailParams],
    });
    for (const w of this.waiters.splice(0)) w();
    return '250 2.0.0 OK: queued';
  }
  /** Resolves with the first message, or rejects after ms. */
  async first(ms: number, onTick?: () => void): Promise<Delivered> {
    const deadline = Date.now() + ms;
    while (this.messages.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no message within ${ms} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 1000));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
      if (this.messages.length === 0) onTick?.();
    }
    return this.messages[0]!;
  }
}

let certs: Certs | null = null;
before(() => {
  certs = makeCertsIfPossible();
});
after(() => certs?.cleanup());

/** A Controller on a free port offering STARTTLS (not requiring it) when certificates exist. */
async function serve(t: TestContext, tls: boolean): Promise<{ controller: Controller; capture: Capture } | null> {
  if (tls && !needCerts(t, certs)) return null;
  const capture = new Capture();
  const controller = await startServer(capture, {
    serverHostname: 'mx.tsmtpd.test',
    ...(certs !== null ? { tlsContext: { key: certs.server.key, cert: certs.server.cert } } : {}),
  });
  return { controller, capture };
}

const FROM = 'sender@example.org';
const TO = 'rcpt@example.com';

/** A message with a dot-led line, so every client's dot-stuffing is checked on the way. */
function message(tag: string): string {
  return [`From: <${FROM}>`, `To: <${TO}>`, `Subject: interop ${tag}`, `Message-ID: <${tag}.${Date.now()}@example.org>`, '', `hello from ${tag}`, '.leading dot', 'last line', ''].join('\r\n');
}

/** What every delivery must show: envelope, headers, body with the dot unstuffed, TLS as asked. */
function checkDelivered(m: Delivered, tag: string, tls: boolean): void {
  assert.equal(m.mailFrom, FROM);
  assert.deepEqual(m.rcptTos, [TO]);
  assert.match(m.content, new RegExp(`^Subject: interop ${tag}\\r$`, 'm'), m.content);
  assert.match(m.content, new RegExp(`\\r\\n\\r\\n(?:[^]*\\r\\n)?hello from ${tag}\\r\\n\\.leading dot\\r\\nlast line\\r\\n$`), JSON.stringify(m.content));
  assert.doesNotMatch(m.content, /(?<!\r)\n/, 'every line ends in CRLF');
  if (tls) assert.match(m.tls ?? 'none', /^TLSv1\.[23]$/, 'delivered over STARTTLS');
  else assert.equal(m.tls, null, 'delivered in plain text');
}

// ---- swaks, curl, msmtp, smtplib, nodemailer ----------------------------------------------------

for (const tls of [false, true]) {
  const mode = tls ? 'STARTTLS' : 'plain';

  test(`interop swaks (${mode})`, { timeout: 30000 }, async (t) => {
    if (!need(t, 'swaks')) return;
    const s = await serve(t, tls);
    if (s === null) return;
    try {
      const tag = `swaks-${mode}`;
      const r = await run('swaks', [
        '--server', `127.0.0.1:${s.controller.port}`, '--from', FROM, '--to', TO, '--helo', 'swaks.example',
        // swaks ends the data with "\r\n.\r\n" itself: give it the message without its last newline.
        '--data', message(tag).replace(/\r\n$/, '').replace(/\r\n/g, '\n'), ...(tls ? ['-tls'] : []),
      ]);
      assertRan(r, 'swaks');
      const m = await s.capture.first(5000);
      checkDelivered(m, tag, tls);
      assert.equal(m.hostName, 'swaks.example');
    } finally {
      await s.controller.stop();
    }
  });

  test(`interop curl smtp:// (${mode})`, { timeout: 30000 }, async (t) => {
    if (!need(t, 'curl')) return;
    const s = await serve(t, tls);
    if (s === null) return;
    const dir = mkdtempSync(join(tmpdir(), 'tsmtpd-curl-'));
    try {
      const tag = `curl-${mode}`;
      const file = join(dir, 'msg.eml');
      writeFileSync(file, message(tag));
      const r = await run('curl', [
        '-sS', '--max-time', '20', '--url', `smtp://127.0.0.1:${s.controller.port}/curl.example`,
        '--mail-from', FROM, '--mail-rcpt', TO, '-T', file, ...(tls ? ['--ssl-reqd', '-k'] : []),
      ]);
      assertRan(r, 'curl');
      const m = await s.capture.first(5000);
      checkDelivered(m, tag, tls);
      assert.equal(m.hostName, 'curl.example');
    } finally {
      await s.controller.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test(`interop msmtp (${mode})`, { timeout: 30000 }, async (t) => {
    if (!need(t, 'msmtp')) return;
    const s = await serve(t, tls);
    if (s === null) return;
    try {
      const tag = `msmtp-${mode}`;
      // --file=/dev/null: no user or system configuration can change what this test does.
      const tlsArgs = tls ? ['--tls=on', '--tls-starttls=on', '--tls-certcheck=off'] : ['--tls=off'];
      const r = await run('msmtp', [
        '--file=/dev/null', '--host=127.0.0.1', `--port=${s.controller.port}`, `--from=${FROM}`, '--auth=off',
        '--domain=msmtp.example', ...tlsArgs, TO,
      ], message(tag).replace(/\r\n/g, '\n'));
      assertRan(r, 'msmtp');
      const m = await s.capture.first(5000);
      checkDelivered(m, tag, tls);
      assert.equal(m.hostName, 'msmtp.example');
    } finally {
      await s.controller.stop();
    }
  });

  test(`interop Python smtplib (${mode})`, { timeout: 30000 }, async (t) => {
    if (!need(t, 'python3')) return;
    const s = await serve(t, tls);
    if (s === null) return;
    try {
      const tag = `smtplib-${mode}`;
      const script = [
        'import smtplib, ssl, sys',
        'port, tls = int(sys.argv[1]), sys.argv[2] == "1"',
        'msg = sys.stdin.buffer.read()',
        'with smtplib.SMTP("127.0.0.1", port, local_hostname="smtplib.example", timeout=15) as s:',
        '    s.ehlo()',
        '    if tls:',
        '        s.starttls(context=ssl._create_unverified_context())',
        '        s.ehlo()',
        `    refused = s.sendmail("${FROM}", ["${TO}"], msg, mail_options=["BODY=8BITMIME"])`,
        '    assert not refused, refused',
        // SMTPUTF8 (RFC 6531): smtplib sends it when the address needs it and the server offers it.
        '    if s.has_extn("smtputf8"):',
        `        s.sendmail("ü@example.org", ["${TO}"], b"Subject: utf8\\r\\n\\r\\nx\\r\\n", mail_options=["SMTPUTF8"])`,
      ].join('\n');
      const r = await run('python3', ['-c', script, String(s.controller.port), tls ? '1' : '0'], message(tag));
      assertRan(r, 'python3 smtplib');
      const m = await s.capture.first(5000);
      checkDelivered(m, tag, tls);
      assert.equal(m.hostName, 'smtplib.example');
      assert.ok(m.mailParams.includes('BODY=8BITMIME'), JSON.stringify(m.mailParams));
      assert.equal(s.capture.messages.length, 2, 'the SMTPUTF8 message arrived too');
      assert.equal(s.capture.messages[1]!.mailFrom, 'ü@example.org');
    } finally {
      await s.controller.stop();
    }
  });

  test(`interop nodemailer (${mode})`, { timeout: 30000 }, async (t) => {
    const s = await serve(t, tls);
    if (s === null) return;
    try {
      const tag = `nodemailer-${mode}`;
      const transport = nodemailer.createTransport({
        host: '127.0.0.1',
        port: s.controller.port,
        secure: false,
        name: 'nodemailer.example',
        ...(tls ? { requireTLS: true, tls: { rejectUnauthorized: false } } : { ignoreTLS: true }),
        connectionTimeout: 5000,
        greetingTimeout: 5000,
        socketTimeout: 15000,
      });
      try {
        const info = await transport.sendMail({ envelope: { from: FROM, to: [TO] }, raw: message(tag) });
        assert.deepEqual(info.accepted, [TO]);
        assert.match(String(info.response), /^250 /);
      } finally {
        transport.close();
      }
      const m = await s.capture.first(5000);
      checkDelivered(m, tag, tls);
      assert.equal(m.hostName, 'nodemailer.example');
    } finally {
      await s.controller.stop();
    }
  });
}

// ---- Postfix as a client ---------------------------------------------------------------------

for (const tls of [false, true]) {
  const mode = tls ? 'STARTTLS' : 'plain';
  test(`interop Postfix as a client: sendmail, then Postfix relays to tsmtpd (${mode})`, { timeout: 30000 }, async (t) => {
    if (!needPostfix(t)) return;
    const s = await serve(t, tls);
    if (s === null) return;
    const pf = new PostfixInstance({
      relayhost: `[127.0.0.1]:${s.controller.port}`,
      smtp_tls_security_level: tls ? 'encrypt' : 'none',
      smtp_tls_loglevel: '1',
    });
    const t0 = Date.now();
    const phases: string[] = [];
    const phase = (name: string) => phases.push(`${name} ${Date.now() - t0} ms`);
    try {
      await pf.start();
      phase('started');
      const tag = `postfix-${mode}`;
      // sendmail takes a local message: LF line ends, as a Unix mail program writes them.
      await pf.submit(message(tag).replace(/\r\n/g, '\n'), FROM, TO);
      await pf.flush();
      let ticks = 0;
      const m = await s.capture.first(20000, () => {
        if (++ticks % 4 === 0) void pf.flush();
      }).catch((error: Error) => assert.fail(`${error.message}; Postfix log:\n${pf.tail()}`));
      phase('delivered');
      checkDelivered(m, tag, tls);
      assert.equal(m.hostName, 'postfix-client.tsmtpd.test');
      assert.match(m.content, /^Received: by postfix-client\.tsmtpd\.test \(Postfix/m);
      // Postfix saw our 250 and removed the message from its queue.
      const deadline = Date.now() + 5000;
      while (!/status=sent \(250 2\.0\.0 OK: queued\)/.test(pf.tail(200)) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.match(pf.tail(200), /status=sent \(250 2\.0\.0 OK: queued\)/);
      if (tls) assert.match(pf.tail(200), /TLS connection established to 127\.0\.0\.1/);
    } finally {
      await pf.destroy();
      phase('stopped');
      await s.controller.stop();
      t.diagnostic(phases.join(', '));
    }
  });
}
