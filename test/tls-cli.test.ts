/**
 * The command line with TLS and AUTH: --tlscert/--tlskey (STARTTLS, required unless
 * --no-requiretls), --smtpscert/--smtpskey (implicit TLS), --auth-file (htpasswd) and
 * --auth-required, SIGHUP certificate reload, and passwords kept out of -dd output.
 */
import { test, describe, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { CliProcess, freePort, runCli } from './cli-util.js';
import {
  TlsRawClient,
  assertNoSecret,
  b64,
  delay,
  hasCommand,
  makeCertsIfPossible,
  needCerts,
  needTool,
  run,
  secretForms,
  type Certs,
} from './tls-util.js';

const certs: Certs | null = makeCertsIfPossible();
const work = mkdtempSync(join(tmpdir(), 'tsmtpd-tls-cli-'));
after(() => {
  certs?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

const USER = 'alice';
const PASSWORD = 'Open-Sesame_42!x';
const forms = secretForms(USER, PASSWORD);

/** An htpasswd file with bcrypt entries: `htpasswd -B` when installed, else bcryptjs with $2y$. */
function writeAuthFile(path: string, users: Record<string, string>): void {
  const entries = Object.entries(users);
  if (hasCommand('htpasswd')) {
    let first = true;
    for (const [user, password] of entries) {
      execFileSync('htpasswd', [...(first ? ['-c'] : []), '-B', '-C', '5', '-b', path, user, password], { stdio: 'ignore', timeout: 15000 });
      first = false;
    }
    return;
  }
  if (process.env.CI) assert.fail('htpasswd missing');
  writeFileSync(path, entries.map(([u, p]) => `${u}:${bcrypt.hashSync(p, 5).replace(/^\$2b\$/, '$2y$')}`).join('\n') + '\n');
}

let dirCount = 0;
function freshDir(prefix: string): string {
  const dir = join(work, `${prefix}-${++dirCount}`);
  return dir;
}

/** A copy of the server certificate and key in a fresh directory, for tests that replace them. */
function replaceableCert(c: Certs, prefix: string): { certPath: string; keyPath: string } {
  const dir = freshDir(prefix);
  execFileSync('mkdir', ['-p', dir]);
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  copyFileSync(c.server.certPath, certPath);
  copyFileSync(c.server.keyPath, keyPath);
  return { certPath, keyPath };
}

function delivered(maildir: string): string[] {
  try {
    return readdirSync(join(maildir, 'new')).map((f) => readFileSync(join(maildir, 'new', f), 'utf8'));
  } catch {
    return [];
  }
}

async function startCli(args: string[]): Promise<CliProcess> {
  const p = new CliProcess(args);
  try {
    await p.listening();
  } catch (error) {
    await p.stop();
    throw error;
  }
  return p;
}

function assertOneLine(stderr: string, what: string): void {
  const lines = stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `${what}: expected one line on stderr, got ${JSON.stringify(stderr)}`);
  assert.match(lines[0]!, /^tsmtpd: error: /, what);
  assert.doesNotMatch(stderr, /^\s+at /m, `${what}: stack trace`);
}

const swaksArgs = (port: number, extra: string[]) => [
  '--server', `127.0.0.1:${port}`, '--from', 'a@example.com', '--to', 'b@example.com',
  '--timeout', '10', '--header', 'Subject: via tsmtpd cli', ...extra,
];
const authArgs = (mech: string, password = PASSWORD) => ['--auth', mech, '--auth-user', USER, '--auth-password', password];

describe('tsmtpd -n --tlscert C --tlskey K --auth-file F --auth-required -c Mailbox DIR', () => {
  let p: CliProcess | null = null;
  let port = 0;
  let maildir = '';
  let authFile = '';

  before(async () => {
    if (certs === null) return;
    port = await freePort();
    maildir = freshDir('mail');
    authFile = join(work, 'users.htpasswd');
    writeAuthFile(authFile, { [USER]: PASSWORD });
    p = await startCli([
      '-n', '-dd', '--tlscert', certs.server.certPath, '--tlskey', certs.server.keyPath, '--auth-file', authFile,
      '--auth-required', '-l', `127.0.0.1:${port}`, '-c', 'Mailbox', maildir,
    ]);
  });
  after(async () => {
    await p?.stop();
  });

  test('plain text: STARTTLS offered, AUTH not; MAIL and AUTH get 530 5.7.0', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const c = await TlsRawClient.connect(port);
    try {
      assert.equal((await c.reply()).code, 220);
      const ehlo = await c.expect('EHLO client.example', 250);
      assert.ok(ehlo.lines.some((l) => l.endsWith('STARTTLS')), ehlo.text);
      assert.ok(!ehlo.lines.some((l) => /AUTH/.test(l)), ehlo.text);
      assert.match((await c.expect('MAIL FROM:<a@example.com>', 530)).text, /^530 5\.7\.0 /);
      await c.expect(`AUTH PLAIN ${b64(`\0${USER}\0${PASSWORD}`)}`, 530);
    } finally {
      c.close();
    }
    assert.equal(delivered(maildir).length, 0);
  });

  test('TLS without AUTH: MAIL gets 530 5.7.0; a wrong password gets 535 5.7.8', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const c = await TlsRawClient.connect(port);
    try {
      await c.reply();
      await c.expect('EHLO client.example', 250);
      await c.expect('STARTTLS', 220);
      await c.upgrade({ ca: certs.ca, servername: 'localhost', rejectUnauthorized: true });
      const ehlo = await c.expect('EHLO client.example', 250);
      assert.ok(ehlo.lines.some((l) => /AUTH PLAIN LOGIN$/.test(l)), ehlo.text);
      assert.match((await c.expect('MAIL FROM:<a@example.com>', 530)).text, /^530 5\.7\.0 /);
      assert.match((await c.expect(`AUTH PLAIN ${b64(`\0${USER}\0wrong-password`)}`, 535)).text, /^535 5\.7\.8 /);
      await c.expect('AUTH LOGIN', 334);
      await c.expect(b64('nobody'), 334);
      await c.expect(b64(PASSWORD), 535);
      await c.expect('MAIL FROM:<a@example.com>', 530);
    } finally {
      c.close();
    }
    assert.equal(delivered(maildir).length, 0);
  });

  test('swaks --tls --auth PLAIN and LOGIN deliver into DIR/new', async (t: TestContext) => {
    if (!needCerts(t, certs) || !needTool(t, 'swaks')) return;
    for (const mech of ['PLAIN', 'LOGIN']) {
      const r = await run('swaks', swaksArgs(port, ['--tls', ...authArgs(mech)]));
      assert.equal(r.code, 0, r.stdout + r.stderr);
    }
    const mail = delivered(maildir);
    assert.equal(mail.length, 2);
    for (const m of mail) assert.match(m, /Subject: via tsmtpd cli/);
  });

  test('swaks without TLS, without AUTH, or with a wrong password delivers nothing', async (t: TestContext) => {
    if (!needCerts(t, certs) || !needTool(t, 'swaks')) return;
    const before = delivered(maildir).length;
    const noTls = await run('swaks', swaksArgs(port, []));
    assert.notEqual(noTls.code, 0);
    assert.match(noTls.stdout, /530 5\.7\.0/);
    // Asked to authenticate in plain text, swaks finds no AUTH offered and gives up.
    const noTlsAuth = await run('swaks', swaksArgs(port, authArgs('PLAIN')));
    assert.notEqual(noTlsAuth.code, 0);
    assert.doesNotMatch(noTlsAuth.stdout, /250-AUTH/);
    const noAuth = await run('swaks', swaksArgs(port, ['--tls']));
    assert.notEqual(noAuth.code, 0);
    assert.match(noAuth.stdout, /530 5\.7\.0/);
    const wrong = await run('swaks', swaksArgs(port, ['--tls', ...authArgs('PLAIN', 'not-the-password')]));
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stdout, /535 5\.7\.8/);
    assert.equal(delivered(maildir).length, before);
  });

  test('curl --ssl-reqd smtp:// -u user:pass delivers', async (t: TestContext) => {
    if (!needCerts(t, certs) || !needTool(t, 'curl')) return;
    const before = delivered(maildir).length;
    const r = await run(
      'curl',
      ['-sS', '--max-time', '10', '--ssl-reqd', '--cacert', certs.caPath, `smtp://127.0.0.1:${port}`, '--mail-from', 'a@example.com', '--mail-rcpt', 'b@example.com', '-u', `${USER}:${PASSWORD}`, '-T', '-'],
      { input: 'Subject: curl via cli\r\n\r\nhello\r\n' },
    );
    assert.equal(r.code, 0, r.stderr);
    const mail = delivered(maildir);
    assert.equal(mail.length, before + 1);
    assert.ok(mail.some((m) => m.includes('Subject: curl via cli')));
  });

  test('failed and aborted handshakes close that connection only; the process stays up and serves', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    for (const junk of ['HELLO\r\n', '\x16\x03\x01\xff\xff garbage', '\x15\x03\x03\x00\x02\x02\x28']) {
      const c = await TlsRawClient.connect(port);
      try {
        await c.reply();
        await c.expect('EHLO client.example', 250);
        await c.expect('STARTTLS', 220);
        c.send(Buffer.from(junk, 'latin1'));
        await c.waitClosed(3000);
      } finally {
        c.close();
      }
    }
    await delay(100);
    assert.equal(p!.exit, null, `the server died: ${p!.stderr}`);
    const c = await TlsRawClient.connect(port);
    try {
      await c.reply();
      await c.expect('EHLO client.example', 250);
      await c.expect('STARTTLS', 220);
      await c.upgrade();
      await c.expect('EHLO client.example', 250);
      await c.expect(`AUTH PLAIN ${b64(`\0${USER}\0${PASSWORD}`)}`, 235);
      await c.expect('MAIL FROM:<a@example.com>', 250);
    } finally {
      c.close();
    }
    assert.doesNotMatch(p!.stderr, /uncaught|unhandled|internal error/i);
  });

  test('a user added to the auth file can log in without a restart', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await delay(20); // a new mtime
    writeAuthFile(authFile, { [USER]: PASSWORD, bob: 'bobs-new-password' });
    const c = await TlsRawClient.connect(port);
    try {
      await c.reply();
      await c.expect('EHLO client.example', 250);
      await c.expect('STARTTLS', 220);
      await c.upgrade();
      await c.expect('EHLO client.example', 250);
      await c.expect(`AUTH PLAIN ${b64('\0bob\0bobs-new-password')}`, 235);
    } finally {
      c.close();
    }
  });

  test('with -dd no password (nor its base64 forms) appears in the output', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const c = await TlsRawClient.connect(port);
    try {
      await c.reply();
      await c.expect('EHLO client.example', 250);
      await c.expect('STARTTLS', 220);
      await c.upgrade();
      await c.expect('EHLO client.example', 250);
      await c.expect('AUTH PLAIN', 334);
      await c.expect(b64(`\0${USER}\0${PASSWORD}`), 235);
      await c.expect('QUIT', 221);
    } finally {
      c.close();
    }
    assert.match(p!.stderr, />> EHLO client\.example/, 'debug output (-dd) is on');
    assert.match(p!.stderr, /AUTH PLAIN/, 'AUTH commands are logged, masked');
    assertNoSecret(p!.stdout + p!.stderr, forms, 'tsmtpd -dd output');
  });
});

describe('--no-requiretls', () => {
  test('plain-text mail is accepted, STARTTLS is still offered', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const port = await freePort();
    const maildir = freshDir('plain');
    const p = await startCli(['-n', '--tlscert', certs.server.certPath, '--tlskey', certs.server.keyPath, '--no-requiretls', '-l', `127.0.0.1:${port}`, '-c', 'Mailbox', maildir]);
    try {
      const c = await TlsRawClient.connect(port);
      try {
        await c.reply();
        const ehlo = await c.expect('EHLO client.example', 250);
        assert.ok(ehlo.lines.some((l) => l.endsWith('STARTTLS')), ehlo.text);
        await c.expect('MAIL FROM:<a@example.com>', 250);
        await c.expect('RCPT TO:<b@example.com>', 250);
        await c.expect('DATA', 354);
        c.send('Subject: plain\r\n\r\nplain text\r\n.\r\n');
        assert.equal((await c.reply()).code, 250);
        await c.expect('STARTTLS', 220);
        await c.upgrade();
        await c.expect('EHLO client.example', 250);
      } finally {
        c.close();
      }
      assert.equal(delivered(maildir).length, 1);
    } finally {
      await p.stop();
    }
  });

  test('with --auth-file --auth-required, plain text still needs AUTH, which needs TLS', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const port = await freePort();
    const authFile = join(work, 'nrt.htpasswd');
    writeAuthFile(authFile, { [USER]: PASSWORD });
    const p = await startCli([
      '-n', '--tlscert', certs.server.certPath, '--tlskey', certs.server.keyPath, '--no-requiretls', '--auth-file', authFile,
      '--auth-required', '-l', `127.0.0.1:${port}`, '-c', 'Sink',
    ]);
    try {
      const c = await TlsRawClient.connect(port);
      try {
        await c.reply();
        await c.expect('EHLO client.example', 250);
        await c.expect('MAIL FROM:<a@example.com>', 530);
        await c.expect(`AUTH PLAIN ${b64(`\0${USER}\0${PASSWORD}`)}`, 538);
      } finally {
        c.close();
      }
    } finally {
      await p.stop();
    }
  });
});

describe('--smtpscert/--smtpskey: implicit TLS on -l', () => {
  test('a plain client gets no greeting; swaks --tlsc and curl smtps:// with AUTH deliver', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const port = await freePort();
    const maildir = freshDir('smtps');
    const authFile = join(work, 'smtps.htpasswd');
    writeAuthFile(authFile, { [USER]: PASSWORD });
    const p = await startCli([
      '-n', '--smtpscert', certs.server.certPath, '--smtpskey', certs.server.keyPath, '--auth-file', authFile, '--auth-required',
      '-l', `127.0.0.1:${port}`, '-c', 'Mailbox', maildir,
    ]);
    try {
      const plain = await TlsRawClient.connect(port);
      try {
        plain.send('EHLO client.example\r\n');
        await plain.waitClosed(3000);
        assert.ok(!plain.received.toString('latin1').includes('220 '), JSON.stringify(plain.received.toString('latin1')));
      } finally {
        plain.close();
      }
      const c = await TlsRawClient.connectTLS(port, { ca: certs.ca, servername: 'localhost', rejectUnauthorized: true });
      try {
        assert.equal((await c.reply()).code, 220);
        const ehlo = await c.expect('EHLO client.example', 250);
        assert.ok(ehlo.lines.some((l) => /AUTH PLAIN LOGIN$/.test(l)), ehlo.text);
        assert.ok(!ehlo.lines.some((l) => l.endsWith('STARTTLS')), ehlo.text);
        await c.expect('MAIL FROM:<a@example.com>', 530);
      } finally {
        c.close();
      }
      let expected = 0;
      if (needTool(t, 'swaks')) {
        const r = await run('swaks', swaksArgs(port, ['--tlsc', ...authArgs('PLAIN')]));
        assert.equal(r.code, 0, r.stdout + r.stderr);
        expected++;
        assert.equal(delivered(maildir).length, expected);
      }
      if (needTool(t, 'curl')) {
        const r = await run(
          'curl',
          ['-sS', '--max-time', '10', '--cacert', certs.caPath, `smtps://127.0.0.1:${port}`, '--mail-from', 'a@example.com', '--mail-rcpt', 'b@example.com', '-u', `${USER}:${PASSWORD}`, '-T', '-'],
          { input: 'Subject: smtps curl\r\n\r\nhi\r\n' },
        );
        assert.equal(r.code, 0, r.stderr);
        expected++;
        assert.equal(delivered(maildir).length, expected);
      }
    } finally {
      await p.stop();
    }
  });
});

describe('usage errors: exit 2 with one line', () => {
  test('an unreadable certificate path', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    for (const args of [
      ['--tlscert', join(work, 'missing.crt'), '--tlskey', certs.server.keyPath],
      ['--tlscert', certs.server.certPath, '--tlskey', join(work, 'missing.key')],
      ['--smtpscert', join(work, 'missing.crt'), '--smtpskey', certs.server.keyPath],
    ]) {
      const r = await runCli(['-n', ...args, '-l', '127.0.0.1:0', '-c', 'Sink']);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assertOneLine(r.stderr, args.join(' '));
    }
  });

  test('a file that is not a certificate, and a key that does not match', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const junk = join(work, 'junk.pem');
    writeFileSync(junk, 'this is not PEM\n');
    for (const args of [
      ['--tlscert', junk, '--tlskey', certs.server.keyPath],
      ['--smtpscert', certs.server.certPath, '--smtpskey', junk],
      ['--tlscert', certs.server.certPath, '--tlskey', certs.server2.keyPath],
    ]) {
      const r = await runCli(['-n', ...args, '-l', '127.0.0.1:0', '-c', 'Sink']);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assertOneLine(r.stderr, args.join(' '));
    }
  });

  test('--tlscert without --tlskey', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const r = await runCli(['-n', '--tlscert', certs.server.certPath, '-l', '127.0.0.1:0', '-c', 'Sink']);
    assert.equal(r.code, 2, r.stderr);
    assertOneLine(r.stderr, '--tlscert alone');
  });

  test('--auth-file without TLS', async () => {
    const authFile = join(work, 'notls.htpasswd');
    writeAuthFile(authFile, { [USER]: PASSWORD });
    const r = await runCli(['-n', '--auth-file', authFile, '-l', '127.0.0.1:0', '-c', 'Sink']);
    assert.equal(r.code, 2, r.stderr);
    assertOneLine(r.stderr, '--auth-file without TLS');
    assert.match(r.stderr, /TLS/);
  });

  test('--auth-required without --auth-file', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const r = await runCli(['-n', '--tlscert', certs.server.certPath, '--tlskey', certs.server.keyPath, '--auth-required', '-l', '127.0.0.1:0', '-c', 'Sink']);
    assert.equal(r.code, 2, r.stderr);
    assertOneLine(r.stderr, '--auth-required alone');
  });

  test('a missing or malformed auth file (the message shows no hash)', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const bad = join(work, 'bad.htpasswd');
    const hash = bcrypt.hashSync(PASSWORD, 4).replace(/^\$2b\$/, '$2y$');
    writeFileSync(bad, `${USER}:${hash}\nno-colon-line\n`);
    for (const file of [join(work, 'missing.htpasswd'), bad]) {
      const r = await runCli(['-n', '--tlscert', certs.server.certPath, '--tlskey', certs.server.keyPath, '--auth-file', file, '-l', '127.0.0.1:0', '-c', 'Sink']);
      assert.equal(r.code, 2, r.stderr);
      assertOneLine(r.stderr, file);
      assert.ok(!r.stderr.includes(hash), r.stderr);
    }
  });
});

describe('SIGHUP reloads the certificates', () => {
  async function fingerprintViaStartTLS(port: number): Promise<{ c: TlsRawClient; fp: string }> {
    const c = await TlsRawClient.connect(port);
    await c.reply();
    await c.expect('EHLO client.example', 250);
    await c.expect('STARTTLS', 220);
    await c.upgrade();
    await c.expect('EHLO client.example', 250);
    return { c, fp: c.peerFingerprint() };
  }

  test('STARTTLS: replace the files, SIGHUP, new connections see the new certificate; a bad file keeps the old one', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const { certPath, keyPath } = replaceableCert(certs, 'hup');
    const port = await freePort();
    const p = await startCli(['-n', '--tlscert', certPath, '--tlskey', keyPath, '-l', `127.0.0.1:${port}`, '-c', 'Sink']);
    const open: TlsRawClient[] = [];
    try {
      const first = await fingerprintViaStartTLS(port);
      open.push(first.c);
      assert.equal(first.fp, certs.server.fingerprint256);
      copyFileSync(certs.server2.certPath, certPath);
      copyFileSync(certs.server2.keyPath, keyPath);
      p.child.kill('SIGHUP');
      await p.until(() => /certificates reloaded/.test(p.stderr), "'certificates reloaded'", 5000);
      const second = await fingerprintViaStartTLS(port);
      open.push(second.c);
      assert.equal(second.fp, certs.server2.fingerprint256);
      // The connection opened before the reload still works.
      await first.c.expect('NOOP', 250);
      await first.c.expect('MAIL FROM:<a@example.com>', 250);

      // A broken file on reload: the old certificate stays, the server lives.
      writeFileSync(certPath, 'garbage\n');
      p.child.kill('SIGHUP');
      await p.until(() => /reload failed/.test(p.stderr), "'reload failed'", 5000);
      const third = await fingerprintViaStartTLS(port);
      open.push(third.c);
      assert.equal(third.fp, certs.server2.fingerprint256);
      assert.equal(p.exit, null);
    } finally {
      for (const c of open) c.close();
      await p.stop();
    }
  });

  test('implicit TLS: SIGHUP swaps the listener certificate', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const { certPath, keyPath } = replaceableCert(certs, 'hups');
    const port = await freePort();
    const p = await startCli(['-n', '--smtpscert', certPath, '--smtpskey', keyPath, '-l', `127.0.0.1:${port}`, '-c', 'Sink']);
    try {
      const a = await TlsRawClient.connectTLS(port);
      try {
        assert.equal((await a.reply()).code, 220);
        assert.equal(a.peerFingerprint(), certs.server.fingerprint256);
        copyFileSync(certs.server2.certPath, certPath);
        copyFileSync(certs.server2.keyPath, keyPath);
        p.child.kill('SIGHUP');
        await p.until(() => /certificates reloaded/.test(p.stderr), "'certificates reloaded'", 5000);
        const b = await TlsRawClient.connectTLS(port);
        try {
          assert.equal((await b.reply()).code, 220);
          assert.equal(b.peerFingerprint(), certs.server2.fingerprint256);
        } finally {
          b.close();
        }
        await a.expect('EHLO client.example', 250);
      } finally {
        a.close();
      }
    } finally {
      await p.stop();
    }
  });
});
