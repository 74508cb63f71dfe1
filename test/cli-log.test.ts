/**
 * The command line's log: -d shows both directions of each conversation with a connection id
 * and a timestamp, AUTH masked, no message body, and not the CLI's own readiness probe; -dd
 * adds the details; --log-format json makes one JSON object a line.
 */
import { test, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { CliProcess, freePort, runCli } from './cli-util.js';
import { TlsRawClient, assertNoSecret, b64, makeCertsIfPossible, needCerts, secretForms, type Certs } from './tls-util.js';

const certs: Certs | null = makeCertsIfPossible();
const work = mkdtempSync(join(tmpdir(), 'tsmtpd-cli-log-'));
after(() => {
  certs?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

const USER = 'alice';
const PASSWORD = 'Log-Secret_77!q';
const WRONG = 'Wrong-Secret_88!z';
const BODY_MARKER = 'body-marker-never-logged';
const authFile = join(work, 'users.htpasswd');
writeFileSync(authFile, `${USER}:${bcrypt.hashSync(PASSWORD, 5).replace(/^\$2b\$/, '$2y$')}\n`);

/** Starts the CLI with AUTH over STARTTLS, runs one whole session, stops it; returns stderr and our port. */
async function session(c: Certs, flags: string[]): Promise<{ stderr: string; clientPort: number }> {
  const port = await freePort();
  const p = new CliProcess([
    '-n', ...flags, '--tlscert', c.server.certPath, '--tlskey', c.server.keyPath, '--auth-file', authFile,
    '-l', `127.0.0.1:${port}`, '-c', 'Sink',
  ]);
  try {
    await p.listening();
    const client = await TlsRawClient.connect(port);
    const clientPort = client.socket.localPort!;
    try {
      assert.equal((await client.reply()).code, 220);
      await client.expect('EHLO client.example', 250);
      await client.expect('STARTTLS', 220);
      await client.upgrade({ ca: c.ca, servername: 'localhost', rejectUnauthorized: true });
      await client.expect('EHLO client.example', 250);
      // LOGIN's continuation lines, with a wrong password, then PLAIN's initial response.
      await client.expect('AUTH LOGIN', 334);
      await client.expect(b64(USER), 334);
      await client.expect(b64(WRONG), 535);
      await client.expect(`AUTH PLAIN ${b64(`\0${USER}\0${PASSWORD}`)}`, 235);
      await client.expect('MAIL FROM:<a@example.com>', 250);
      await client.expect('RCPT TO:<b@example.com>', 250);
      await client.expect('DATA', 354);
      client.send(`Subject: log test\r\n\r\n${BODY_MARKER}\r\n.\r\n`);
      assert.equal((await client.reply()).code, 250);
      await client.expect('QUIT', 221);
    } finally {
      client.close();
    }
    await p.until(() => /disconnected/.test(p.stderr), 'the disconnect line', 5000);
    return { stderr: p.stderr, clientPort };
  } finally {
    await p.stop();
  }
}

const TEXT_LINE = /^tsmtpd: (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?:(?:warn|error): )?\[(\d+)\] (.*)$/;

function secrets(): string[] {
  return [...secretForms(USER, PASSWORD), WRONG, b64(WRONG)];
}

test('-d: both directions with a connection id and a timestamp; AUTH masked; no body; no probe', async (t: TestContext) => {
  if (!needCerts(t, certs)) return;
  const { stderr, clientPort } = await session(certs, ['-d']);
  const lines = stderr.split('\n').filter((l) => TEXT_LINE.test(l));
  const ids = new Set(lines.map((l) => TEXT_LINE.exec(l)![2]));
  // Only our client: the CLI's readiness probe is no client.
  assert.equal(ids.size, 1, stderr);
  const connected = lines.filter((l) => l.endsWith(' connected'));
  assert.equal(connected.length, 1, stderr);
  assert.ok(connected[0]!.endsWith(`127.0.0.1:${clientPort} connected`), connected[0]);
  const said = lines.map((l) => TEXT_LINE.exec(l)![3]);
  for (const want of ['<< 220 ', '>> EHLO client.example', '<< 250-', '>> STARTTLS', '<< 220 2.0.0 Ready to start TLS',
    '>> AUTH LOGIN ****', '<< 334 ', '>> ****', '<< 535 5.7.8', '>> AUTH PLAIN ****', '<< 235 2.7.0', '>> DATA', '<< 354 ',
    '<< 250 2.6.0', '>> QUIT', '<< 221 ']) {
    assert.ok(said.some((s) => s.startsWith(want)), `${want} in ${stderr}`);
  }
  assertNoSecret(stderr, secrets(), '-d');
  assert.ok(!stderr.includes(BODY_MARKER), 'the body is not logged');
  assert.ok(!stderr.includes('Subject: log test'), 'the headers are not logged');
  assert.ok(!said.some((s) => /answered in|message body:/.test(s)), '-d has no details');
});

test('-dd adds body sizes, TLS parameters and hook timings, still without secrets or body', async (t: TestContext) => {
  if (!needCerts(t, certs)) return;
  const { stderr } = await session(certs, ['-dd']);
  assert.match(stderr, /\] message body: \d+ octets/);
  assert.match(stderr, /\] TLS TLSv1\.[23] \S+/);
  assert.match(stderr, /\] handler answered in \d+\.\d ms/);
  assertNoSecret(stderr, secrets(), '-dd');
  assert.ok(!stderr.includes(BODY_MARKER), 'the body is not logged');
});

test('--log-format json: one JSON object a line, with time, level, connection, direction, text', async (t: TestContext) => {
  if (!needCerts(t, certs)) return;
  const { stderr, clientPort } = await session(certs, ['-d', '--log-format', 'json']);
  const records = stderr
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.ok(records.length > 10, stderr);
  for (const r of records) {
    assert.equal(typeof r['time'], 'string');
    assert.ok(!Number.isNaN(Date.parse(r['time'] as string)), String(r['time']));
    assert.match(r['level'] as string, /^(debug|info|warn|error)$/);
    assert.equal(typeof r['text'], 'string');
  }
  const conversation = records.filter((r) => r['connection'] !== undefined);
  assert.equal(new Set(conversation.map((r) => r['connection'])).size, 1, 'only our client, not the probe');
  assert.ok(conversation.some((r) => r['direction'] === 'in' && r['text'] === 'EHLO client.example'));
  assert.ok(conversation.some((r) => r['direction'] === 'out' && (r['text'] as string).startsWith('250 2.6.0')));
  assert.ok(conversation.some((r) => r['text'] === 'connected' && r['peer'] === `127.0.0.1:${clientPort}`));
  assert.ok(records.some((r) => /listening on/.test(r['text'] as string)), 'the start line is JSON too');
  assertNoSecret(stderr, secrets(), 'json');
  assert.ok(!stderr.includes(BODY_MARKER));
});

test('--log-format with another value is a usage error naming the option', async () => {
  const r = await runCli(['-n', '--log-format', 'xml']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^tsmtpd: error: argument --log-format: expected one of text, json, got 'xml'\n$/);
});
