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
import { spawn, execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import type { Handler, SMTPServer } from '../src/handler.js';
import type { Envelope, Session } from '../src/session.js';
import type { Controller } from '../src/controller.js';
import { startServer } from './helpers.js';
import { hasCommand, makeCertsIfPossible, needCerts, type Certs } from './tls-util.js';

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

/** The tool, or skip (fail under CI) when it is missing. */
function need(t: TestContext, ...tools: string[]): boolean {
  for (const tool of tools) {
    if (hasCommand(tool)) continue;
    if (process.env.CI) assert.fail(`${tool} missing: CI must install it (.ci/run)`);
    t.skip(`${tool} not installed`);
    return false;
  }
  return true;
}

interface Run {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs a program with stdin `input` and a hard time limit (SIGKILL); never rejects. */
function run(cmd: string, args: string[], input = '', ms = 20000, env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout = (stdout + d).slice(-20000)));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-20000)));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, ms);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, stdout, stderr: stderr + String(error), timedOut });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  });
}

function assertRan(r: Run, what: string): void {
  assert.ok(
    r.code === 0 && !r.timedOut,
    `${what} ${r.timedOut ? 'timed out' : `exited ${r.code ?? r.signal}`}\n--- stdout\n${r.stdout.slice(-3000)}\n--- stderr\n${r.stderr.slice(-3000)}`,
  );
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

const POSTFIX_SERVICES = `# service type  private unpriv  chroot  wakeup  maxproc command
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`;

/** A private Postfix instance (config, queue and log in one temp dir) relaying everything to port. */
class PostfixInstance {
  readonly dir: string;
  readonly conf: string;
  readonly log: string;
  private started = false;

  constructor(port: number, tls: boolean) {
    this.dir = mkdtempSync(join(tmpdir(), 'tsmtpd-postfix-'));
    // The postfix user must reach the queue below it (mkdtemp makes the directory 0700).
    chmodSync(this.dir, 0o755);
    this.conf = join(this.dir, 'conf');
    this.log = join(this.dir, 'maillog');
    mkdirSync(this.conf);
    mkdirSync(join(this.dir, 'queue'));
    const main = {
      compatibility_level: '3.6',
      queue_directory: join(this.dir, 'queue'),
      data_directory: join(this.dir, 'data'),
      maillog_file: this.log,
      maillog_file_prefixes: this.dir,
      myhostname: 'postfix-client.tsmtpd.test',
      mydomain: 'tsmtpd.test',
      myorigin: '$myhostname',
      mydestination: '',
      local_recipient_maps: '',
      alias_maps: '',
      alias_database: '',
      relayhost: `[127.0.0.1]:${port}`,
      inet_interfaces: 'loopback-only',
      inet_protocols: 'ipv4',
      mynetworks: '127.0.0.0/8',
      smtputf8_enable: 'no',
      biff: 'no',
      // No retry back-off games in a test: a failure shows at once in the log.
      smtp_connect_timeout: '10s',
      smtp_tls_security_level: tls ? 'encrypt' : 'none',
      smtp_tls_loglevel: '1',
    };
    writeFileSync(join(this.conf, 'main.cf'), Object.entries(main).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n');
    writeFileSync(join(this.conf, 'master.cf'), POSTFIX_SERVICES);
  }

  /** The last lines of the instance's log, for failure messages. */
  tail(n = 40): string {
    return existsSync(this.log) ? readFileSync(this.log, 'utf8').split('\n').slice(-n).join('\n') : '(no maillog)';
  }

  async postfix(command: string): Promise<Run> {
    // Postfix prints its errors to stderr only when that is a terminal; the log has the rest.
    return run('postfix', ['-c', this.conf, command], '', 20000);
  }

  /** Why a postfix command failed: it prints to stderr only on a terminal, so ask again under script(1). */
  private async why(command: string): Promise<string> {
    if (!hasCommand('script')) return '(script(1) not installed to show the reason)';
    const r = await run('script', ['-qec', `postfix -c '${this.conf}' ${command}`, '/dev/null'], '', 20000);
    return r.stdout + r.stderr;
  }

  async start(): Promise<void> {
    const check = await this.postfix('check');
    if (check.code !== 0) assert.fail(`postfix check failed: ${await this.why('check')}\n${this.tail()}`);
    const r = await this.postfix('start');
    this.started = true;
    if (r.code !== 0) assert.fail(`postfix start failed: ${await this.why('status')}\n${this.tail()}`);
  }

  async submit(input: string, from: string, to: string): Promise<void> {
    // Postfix's sendmail: -C config_dir, -f envelope sender, -i (a lone "." is no end), -t off.
    const r = await run('sendmail', ['-C', this.conf, '-i', '-f', from, to], input, 15000);
    assertRan(r, 'postfix sendmail');
  }

  async flush(): Promise<void> {
    await run('postqueue', ['-c', this.conf, '-f'], '', 10000);
  }

  /** Stops the instance (bounded) and removes the directory. */
  async destroy(): Promise<void> {
    try {
      if (this.started) {
        const pidFile = join(this.dir, 'queue', 'pid', 'master.pid');
        const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : NaN;
        await this.postfix('stop');
        // The master takes a moment to end its children; wait for it, then kill what we started.
        const deadline = Date.now() + 8000;
        while (Number.isInteger(pid) && pid > 0 && existsSync(`/proc/${pid}`) && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 100));
        }
        if (Number.isInteger(pid) && pid > 0 && existsSync(`/proc/${pid}`)) {
          await this.postfix('abort');
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
      }
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

function needPostfix(t: TestContext): boolean {
  if (!need(t, 'postfix', 'postconf', 'sendmail', 'postqueue')) return false;
  const mail = (() => {
    try {
      return execFileSync('postconf', ['-d', 'mail_version'], { encoding: 'utf8', timeout: 5000 });
    } catch {
      return '';
    }
  })();
  if (!/mail_version = \d/.test(mail)) {
    if (process.env.CI) assert.fail('postconf does not work: is Postfix installed?');
    t.skip('Postfix not usable');
    return false;
  }
  if (process.getuid?.() !== 0) {
    if (process.env.CI) assert.fail('the Postfix test runs a Postfix instance and needs root');
    t.skip('the Postfix test needs root (postfix start)');
    return false;
  }
  return true;
}

for (const tls of [false, true]) {
  const mode = tls ? 'STARTTLS' : 'plain';
  test(`interop Postfix as a client: sendmail, then Postfix relays to tsmtpd (${mode})`, { timeout: 30000 }, async (t) => {
    if (!needPostfix(t)) return;
    const s = await serve(t, tls);
    if (s === null) return;
    const pf = new PostfixInstance(s.controller.port, tls);
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
