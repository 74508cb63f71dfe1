/**
 * SMTP AUTH (RFC 4954): offered only over TLS by default, PLAIN (initial response or 334),
 * LOGIN, CRAM-MD5 on request, custom mechanisms, handleAUTH, the authenticator contract made
 * safe, failure limits, and passwords kept out of logs. Then real clients (nodemailer, swaks,
 * curl) over STARTTLS and implicit TLS.
 */
import { test, describe, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import nodemailer from 'nodemailer';
import { verifyCramMD5, type AuthData, type AuthResult, type Authenticator } from '../src/auth.js';
import type { ControllerOptions } from '../src/controller.js';
import type { SMTPServer } from '../src/handler.js';
import type { Envelope, MailOptions, Session } from '../src/session.js';
import { Recorder, startServer, type SMTPReply } from './helpers.js';
import {
  CapturingLogger,
  TlsRawClient,
  assertNoSecret,
  b64,
  ehloKeywords,
  makeCertsIfPossible,
  needCerts,
  needTool,
  run,
  secretForms,
  startTLSClient,
  type Certs,
} from './tls-util.js';

const certs: Certs | null = makeCertsIfPossible();
after(() => certs?.cleanup());

const USER = 'alice';
const PASSWORD = 'Sesame-7!pw/Zq';
const USERS: Record<string, string> = { [USER]: PASSWORD, bob: 'bobs-other-pass' };
const PLAIN_OK = b64(`\0${USER}\0${PASSWORD}`);

/** Knows the clear passwords, so it can check CRAM-MD5 too. Records what it was called with. */
function makeAuthenticator(calls: AuthData[] = []): Authenticator {
  return (_server, _session, _envelope, _mechanism, data) => {
    calls.push(data);
    const password = USERS[data.login];
    if (password === undefined) return false;
    if (data.mechanism === 'CRAM-MD5') return verifyCramMD5(data, password);
    return data.password === password;
  };
}

/** Records session.authenticated / authData at MAIL time. */
class AuthRecorder extends Recorder {
  atMail: Array<{ authenticated: boolean; authData: unknown; session: string }> = [];
  handleMAIL(_s: SMTPServer, session: Session, envelope: Envelope, address: string, _o: MailOptions): string {
    this.atMail.push({
      authenticated: session.authenticated,
      authData: session.authData,
      session: JSON.stringify({ ...session, tls: null }),
    });
    envelope.mailFrom = address;
    return '250 OK';
  }
}

function tlsOptions(c: Certs, extra: ControllerOptions = {}): ControllerOptions {
  return { tlsContext: { cert: c.server.cert, key: c.server.key }, authenticator: makeAuthenticator(), ...extra };
}

async function deliver(c: TlsRawClient, from = 'a@example.com', to = 'b@example.com'): Promise<void> {
  await c.expect(`MAIL FROM:<${from}>`, 250);
  await c.expect(`RCPT TO:<${to}>`, 250);
  await c.expect('DATA', 354);
  c.send('Subject: t\r\n\r\nhello\r\n.\r\n');
  const r = await c.reply();
  assert.equal(r.code, 250, r.text);
}

function authLine(reply: SMTPReply): string | undefined {
  return ehloKeywords(reply).find((k) => /^AUTH /.test(k));
}

describe('AUTH is offered over TLS only (authRequireTLS, default true)', () => {
  test('not advertised in plain text, and AUTH gets 538 5.7.11 there', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const calls: AuthData[] = [];
    await using server = await startServer(new Recorder(), tlsOptions(certs, { authenticator: makeAuthenticator(calls) }));
    const c = await TlsRawClient.connect(server.port);
    try {
      await c.reply();
      const ehlo = await c.expect('EHLO client.example', 250);
      assert.equal(authLine(ehlo), undefined, ehlo.text);
      for (const cmd of [`AUTH PLAIN ${PLAIN_OK}`, 'AUTH PLAIN', 'AUTH LOGIN']) {
        const r = await c.expect(cmd, 538);
        assert.match(r.text, /^538 5\.7\.11 /);
      }
      assert.equal(calls.length, 0, 'the authenticator must not be asked in plain text');
    } finally {
      c.close();
    }
  });

  test('after STARTTLS EHLO lists exactly AUTH PLAIN LOGIN', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new Recorder(), tlsOptions(certs));
    const { c, after: ehlo } = await startTLSClient(server.port);
    try {
      assert.equal(authLine(ehlo), 'AUTH PLAIN LOGIN');
    } finally {
      c.close();
    }
  });

  test('authRequireTLS: false offers and accepts AUTH in plain text', async () => {
    const handler = new AuthRecorder();
    await using server = await startServer(handler, { authenticator: makeAuthenticator(), authRequireTLS: false });
    const c = await TlsRawClient.connect(server.port);
    try {
      await c.reply();
      const ehlo = await c.expect('EHLO client.example', 250);
      assert.equal(authLine(ehlo), 'AUTH PLAIN LOGIN');
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235);
      await c.expect('MAIL FROM:<a@example.com>', 250);
      assert.equal(handler.atMail[0]!.authenticated, true);
    } finally {
      c.close();
    }
  });

  test('no authenticator and no custom mechanism: AUTH is not offered (502)', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new Recorder(), { tlsContext: { cert: certs.server.cert, key: certs.server.key } });
    const { c, after: ehlo } = await startTLSClient(server.port);
    try {
      assert.equal(authLine(ehlo), undefined);
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 502);
    } finally {
      c.close();
    }
  });

  test('authentication from before STARTTLS does not survive the handshake', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new AuthRecorder();
    await using server = await startServer(handler, tlsOptions(certs, { authRequireTLS: false, authRequired: true }));
    const c = await TlsRawClient.connect(server.port);
    try {
      await c.reply();
      await c.expect('EHLO client.example', 250);
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235);
      await c.expect('STARTTLS', 220);
      await c.upgrade();
      await c.expect('EHLO client.example', 250);
      const r = await c.expect('MAIL FROM:<a@example.com>', 530);
      assert.match(r.text, /^530 5\.7\.0 /);
      assert.equal(handler.atMail.length, 0);
    } finally {
      c.close();
    }
  });
});

describe('mechanisms', () => {
  test('PLAIN with an initial response: 235 2.7.0, session.authenticated and authData (the login) in handleMAIL', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new AuthRecorder();
    const calls: AuthData[] = [];
    await using server = await startServer(handler, tlsOptions(certs, { authenticator: makeAuthenticator(calls) }));
    const { c } = await startTLSClient(server.port);
    try {
      const r = await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235);
      assert.match(r.text, /^235 2\.7\.0 /);
      await deliver(c);
      assert.equal(calls.length, 1);
      assert.deepEqual(calls[0], { mechanism: 'PLAIN', login: USER, password: PASSWORD });
      const seen = handler.atMail[0]!;
      assert.equal(seen.authenticated, true);
      assert.equal(seen.authData, USER);
      assertNoSecret(seen.session, secretForms(USER, PASSWORD), 'the session');
      assert.equal(handler.messages.length, 1);
    } finally {
      c.close();
    }
  });

  test('PLAIN with a "334 " continuation', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs));
    const { c } = await startTLSClient(server.port);
    try {
      const r = await c.expect('AUTH PLAIN', 334);
      assert.equal(r.text, '334 ');
      await c.expect(PLAIN_OK, 235);
      await c.expect('MAIL FROM:<a@example.com>', 250);
    } finally {
      c.close();
    }
  });

  test('PLAIN with an authzid equal to the login works; the mechanism name is case-insensitive', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const calls: AuthData[] = [];
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs, { authenticator: makeAuthenticator(calls) }));
    const { c } = await startTLSClient(server.port);
    try {
      await c.expect(`auth plain ${b64(`${USER}\0${USER}\0${PASSWORD}`)}`, 235);
      assert.equal((calls[0] as { authzid?: string }).authzid, USER);
    } finally {
      c.close();
    }
  });

  test('LOGIN: 334 VXNlcm5hbWU6, 334 UGFzc3dvcmQ6, 235', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new AuthRecorder();
    await using server = await startServer(handler, tlsOptions(certs));
    const { c } = await startTLSClient(server.port);
    try {
      assert.equal((await c.expect('AUTH LOGIN', 334)).text, '334 VXNlcm5hbWU6');
      assert.equal((await c.expect(b64(USER), 334)).text, '334 UGFzc3dvcmQ6');
      await c.expect(b64(PASSWORD), 235);
      await c.expect('MAIL FROM:<a@example.com>', 250);
      assert.equal(handler.atMail[0]!.authData, USER);
    } finally {
      c.close();
    }
  });

  test('LOGIN with the user name as initial response', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs));
    const { c } = await startTLSClient(server.port);
    try {
      assert.equal((await c.expect(`AUTH LOGIN ${b64(USER)}`, 334)).text, '334 UGFzc3dvcmQ6');
      await c.expect(b64(PASSWORD), 235);
    } finally {
      c.close();
    }
  });

  test('CRAM-MD5 is off by default (not listed, 504)', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs));
    const { c, after: ehlo } = await startTLSClient(server.port);
    try {
      assert.ok(!authLine(ehlo)!.includes('CRAM-MD5'));
      const r = await c.expect('AUTH CRAM-MD5', 504);
      assert.match(r.text, /^504 5\.5\.4 /);
    } finally {
      c.close();
    }
  });

  test('CRAM-MD5 with authIncludeMechanism: listed, and verified with verifyCramMD5', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs, { authIncludeMechanism: ['CRAM-MD5'] }));
    const cram = async (password: string, expected: number) => {
      const { c, after: ehlo } = await startTLSClient(server.port);
      try {
        assert.equal(authLine(ehlo), 'AUTH PLAIN LOGIN CRAM-MD5');
        const r = await c.expect('AUTH CRAM-MD5', 334);
        const challenge = Buffer.from(r.text.slice(4), 'base64').toString('utf8');
        assert.match(challenge, /^<.+@.+>$/);
        const digest = createHmac('md5', password).update(challenge).digest('hex');
        await c.expect(b64(`${USER} ${digest}`), expected);
      } finally {
        c.close();
      }
    };
    await cram(PASSWORD, 235);
    await cram('wrong password', 535);
  });

  test('a custom mechanism authXTEST(server, args) with server.challengeAuth', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    class Custom extends AuthRecorder {
      argsSeen: string[][] = [];
      async authXTEST(server: SMTPServer, args: string[]): Promise<AuthResult | boolean> {
        this.argsSeen.push(args);
        const answer = await server.challengeAuth('ping');
        return answer.toString() === 'pong' ? { success: true, authData: { who: 'xtest-user' } } : false;
      }
    }
    const handler = new Custom();
    await using server = await startServer(handler, tlsOptions(certs));
    const { c, after: ehlo } = await startTLSClient(server.port);
    try {
      assert.equal(authLine(ehlo), 'AUTH PLAIN LOGIN XTEST');
      assert.equal((await c.expect('AUTH XTEST', 334)).text, `334 ${b64('ping')}`);
      await c.expect(b64('nope'), 535);
      await c.expect('AUTH XTEST', 334);
      await c.expect('*', 501);
      await c.expect('AUTH XTEST', 334);
      await c.expect('!!not base64!!', 501);
      await c.expect('auth xtest', 334);
      await c.expect(b64('pong'), 235);
      await c.expect('MAIL FROM:<a@example.com>', 250);
      assert.deepEqual(handler.atMail[0]!.authData, { who: 'xtest-user' });
      assert.deepEqual(handler.argsSeen[0], ['XTEST']);
    } finally {
      c.close();
    }
  });

  test('a custom mechanism alone is offered without an authenticator', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    class Only extends Recorder {
      authX_TOKEN(_server: SMTPServer, args: string[]): boolean {
        return args[1] === b64('good-token');
      }
    }
    await using server = await startServer(new Only(), { tlsContext: { cert: certs.server.cert, key: certs.server.key } });
    const { c, after: ehlo } = await startTLSClient(server.port);
    try {
      assert.equal(authLine(ehlo), 'AUTH X-TOKEN');
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 504);
      await c.expect(`AUTH X-TOKEN ${b64('bad')}`, 535);
      await c.expect(`AUTH X-TOKEN ${b64('good-token')}`, 235);
    } finally {
      c.close();
    }
  });

  test('handleAUTH takes over the whole exchange', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const calls: AuthData[] = [];
    class TakeOver extends AuthRecorder {
      argsSeen: string[][] = [];
      async handleAUTH(server: SMTPServer, session: Session, _e: Envelope, args: string[]): Promise<string> {
        this.argsSeen.push(args);
        const answer = await server.challengeAuth('who are you?');
        if (answer.toString() !== 'me') return '535 5.7.8 no';
        session.authenticated = true;
        session.authData = 'me';
        return '235 2.7.0 come in';
      }
    }
    const handler = new TakeOver();
    await using server = await startServer(handler, tlsOptions(certs, { authenticator: makeAuthenticator(calls) }));
    const { c } = await startTLSClient(server.port);
    try {
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 334);
      await c.expect(b64('someone else'), 535);
      await c.expect('AUTH LOGIN', 334);
      const r = await c.expect(b64('me'), 235);
      assert.equal(r.text, '235 2.7.0 come in');
      await c.expect('MAIL FROM:<a@example.com>', 250);
      assert.deepEqual(handler.argsSeen, [['PLAIN', PLAIN_OK], ['LOGIN']]);
      assert.equal(handler.atMail[0]!.authData, 'me');
      assert.equal(calls.length, 0, 'the authenticator must not run when handleAUTH takes over');
    } finally {
      c.close();
    }
  });

  test('authExcludeMechanism removes a mechanism (listed no more, 504)', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs, { authExcludeMechanism: ['login'] }));
    const { c, after: ehlo } = await startTLSClient(server.port);
    try {
      assert.equal(authLine(ehlo), 'AUTH PLAIN');
      await c.expect('AUTH LOGIN', 504);
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235);
    } finally {
      c.close();
    }
  });
});

describe('AUTH syntax and state errors', () => {
  test('"*" cancels at every step (501) and the session goes on', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const calls: AuthData[] = [];
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs, { authenticator: makeAuthenticator(calls) }));
    const { c } = await startTLSClient(server.port);
    try {
      await c.expect('AUTH PLAIN', 334);
      assert.match((await c.expect('*', 501)).text, /^501 5\.7\.0 /);
      await c.expect('AUTH LOGIN', 334);
      await c.expect('*', 501);
      await c.expect('AUTH LOGIN', 334);
      await c.expect(b64(USER), 334);
      await c.expect('*', 501);
      await c.expect('AUTH PLAIN *', 501);
      assert.equal(calls.length, 0);
      await c.expect('NOOP', 250);
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235);
    } finally {
      c.close();
    }
  });

  test('bad base64 gets 501 (initial response and continuation); malformed PLAIN too', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs));
    const { c } = await startTLSClient(server.port);
    try {
      for (const bad of ['AUTH PLAIN !!!!', 'AUTH PLAIN AGFsaWNl=', 'AUTH PLAIN YWxpY2U', `AUTH PLAIN ${b64('no nul bytes here')}`, `AUTH PLAIN ${b64(`\0${USER}\0`)}`]) {
        assert.equal((await c.cmd(bad)).code, 501, bad);
      }
      await c.expect('AUTH PLAIN', 334);
      assert.match((await c.expect('%%% not base64', 501)).text, /^501 5\.5\.2 /);
      await c.expect('AUTH LOGIN', 334);
      await c.expect(b64(USER), 334);
      await c.expect('a b c', 501);
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235);
    } finally {
      c.close();
    }
  });

  test('unknown mechanism 504; no mechanism or too many arguments 501', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs));
    const { c } = await startTLSClient(server.port);
    try {
      assert.match((await c.expect('AUTH XFOO', 504)).text, /^504 5\.5\.4 /);
      assert.match((await c.expect(`AUTH PLAIN ${PLAIN_OK} extra`, 501)).text, /^501 5\.5\.4 /);
      await c.expect('AUTH', 501);
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235);
    } finally {
      c.close();
    }
  });

  test('an over-long response line gets 501 and the session goes on; CRAM-MD5 takes no initial response', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const calls: AuthData[] = [];
    await using server = await startServer(
      new AuthRecorder(),
      tlsOptions(certs, { authenticator: makeAuthenticator(calls), authIncludeMechanism: ['CRAM-MD5'] }),
    );
    const { c } = await startTLSClient(server.port);
    try {
      await c.expect('AUTH PLAIN', 334);
      c.line('QUFB'.repeat(5000));
      assert.equal((await c.reply()).code, 501);
      await c.expect('NOOP', 250);
      await c.expect(`AUTH CRAM-MD5 ${b64('alice 0123')}`, 501);
      assert.equal(calls.length, 0);
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235);
    } finally {
      c.close();
    }
  });

  test('a command pipelined behind "AUTH PLAIN" is taken as the response, not run', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new AuthRecorder();
    await using server = await startServer(handler, tlsOptions(certs));
    const { c } = await startTLSClient(server.port);
    try {
      c.send('AUTH PLAIN\r\nMAIL FROM:<a@example.com>\r\n');
      assert.equal((await c.reply()).code, 334);
      assert.equal((await c.reply()).code, 501);
      assert.ok(await c.silentFor(100), c.unread);
      assert.equal(handler.atMail.length, 0);
    } finally {
      c.close();
    }
  });

  test('a client that vanishes or idles in the middle of an exchange costs nothing', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const calls: AuthData[] = [];
    const logger = new CapturingLogger();
    await using server = await startServer(
      new AuthRecorder(),
      tlsOptions(certs, { authenticator: makeAuthenticator(calls), timeout: 300, logger }),
    );
    const gone = await startTLSClient(server.port);
    await gone.c.expect('AUTH LOGIN', 334);
    await gone.c.expect(b64(USER), 334);
    gone.c.close();
    const idle = await startTLSClient(server.port);
    try {
      await idle.c.expect('AUTH PLAIN', 334);
      const r = await idle.c.reply(3000);
      assert.equal(r.code, 421, r.text);
      await idle.c.waitClosed(3000);
    } finally {
      idle.c.close();
    }
    const { c } = await startTLSClient(server.port);
    try {
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235);
    } finally {
      c.close();
    }
    assert.equal(calls.length, 1);
    assert.ok(!logger.lines.some((l) => l.startsWith('error:')), logger.text);
  });

  test('AUTH before EHLO, or after HELO, gets 503', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs, { authRequireTLS: false }));
    const c = await TlsRawClient.connect(server.port);
    try {
      await c.reply();
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 503);
      await c.expect('HELO client.example', 250);
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 503);
      await c.expect('EHLO client.example', 250);
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235);
    } finally {
      c.close();
    }
  });

  test('AUTH during a transaction gets 503', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const calls: AuthData[] = [];
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs, { authenticator: makeAuthenticator(calls) }));
    const { c } = await startTLSClient(server.port);
    try {
      await c.expect('MAIL FROM:<a@example.com>', 250);
      assert.match((await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 503)).text, /^503 5\.5\.1 /);
      assert.equal(calls.length, 0);
      await c.expect('RSET', 250);
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235);
    } finally {
      c.close();
    }
  });

  test('AUTH after success gets 503', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const calls: AuthData[] = [];
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs, { authenticator: makeAuthenticator(calls) }));
    const { c } = await startTLSClient(server.port);
    try {
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235);
      await c.expect(`AUTH PLAIN ${b64('\0bob\0bobs-other-pass')}`, 503);
      await c.expect('AUTH LOGIN', 503);
      assert.equal(calls.length, 1);
    } finally {
      c.close();
    }
  });

  test('MAIL FROM with AUTH=<> (RFC 4954 §5) is accepted once AUTH is on', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs));
    const { c } = await startTLSClient(server.port);
    try {
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235);
      await c.expect('MAIL FROM:<a@example.com> AUTH=<>', 250);
      await c.expect('RSET', 250);
      await c.expect('MAIL FROM:<a@example.com> AUTH=alice@example.com', 250);
    } finally {
      c.close();
    }
  });
});

describe('the authenticator contract', () => {
  test('wrong password gets 535 5.7.8; unknown user too', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs));
    const { c } = await startTLSClient(server.port);
    try {
      assert.match((await c.expect(`AUTH PLAIN ${b64(`\0${USER}\0wrong`)}`, 535)).text, /^535 5\.7\.8 /);
      assert.match((await c.expect(`AUTH PLAIN ${b64(`\0mallory\0${PASSWORD}`)}`, 535)).text, /^535 5\.7\.8 /);
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235);
    } finally {
      c.close();
    }
  });

  test(`after maxAuthFailures (3) failures: 421 and close, whatever comes between`, async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs, { maxAuthFailures: 3 }));
    const { c } = await startTLSClient(server.port);
    try {
      await c.expect(`AUTH PLAIN ${b64(`\0${USER}\0guess1`)}`, 535);
      await c.expect('RSET', 250);
      await c.expect('EHLO again.example', 250);
      await c.expect('AUTH LOGIN', 334);
      await c.expect(b64(USER), 334);
      await c.expect(b64('guess2'), 535);
      const r = await c.cmd(`AUTH PLAIN ${b64(`\0${USER}\0guess3`)}`);
      assert.equal(r.code, 421, r.text);
      assert.match(r.text, /^421 4\.7\.0 /);
      await c.waitClosed();
    } finally {
      c.close();
    }
  });

  test('the default limit is 3 too, and STARTTLS does not reset the count', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs, { authRequireTLS: false }));
    const c = await TlsRawClient.connect(server.port);
    try {
      await c.reply();
      await c.expect('EHLO client.example', 250);
      await c.expect(`AUTH PLAIN ${b64(`\0${USER}\0guess1`)}`, 535);
      await c.expect(`AUTH PLAIN ${b64(`\0${USER}\0guess2`)}`, 535);
      await c.expect('STARTTLS', 220);
      await c.upgrade();
      await c.expect('EHLO client.example', 250);
      assert.equal((await c.cmd(`AUTH PLAIN ${PLAIN_OK}`)).code, 235, 'a success is still possible before the limit');
      await c.expect('QUIT', 221);
    } finally {
      c.close();
    }
    const d = await TlsRawClient.connect(server.port);
    try {
      await d.reply();
      await d.expect('EHLO client.example', 250);
      await d.expect(`AUTH PLAIN ${b64(`\0${USER}\0guess1`)}`, 535);
      await d.expect(`AUTH PLAIN ${b64(`\0${USER}\0guess2`)}`, 535);
      await d.expect('STARTTLS', 220);
      await d.upgrade();
      await d.expect('EHLO client.example', 250);
      assert.equal((await d.cmd(`AUTH PLAIN ${b64(`\0${USER}\0guess3`)}`)).code, 421);
      await d.waitClosed();
    } finally {
      d.close();
    }
  });

  test('an async authenticator that resolves false gets 535, never success', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new AuthRecorder();
    const authenticator: Authenticator = async () => {
      await new Promise((r) => setTimeout(r, 10));
      return false;
    };
    await using server = await startServer(handler, tlsOptions(certs, { authenticator, authRequired: true }));
    const { c } = await startTLSClient(server.port);
    try {
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 535);
      await c.expect('MAIL FROM:<a@example.com>', 530);
      assert.equal(handler.atMail.length, 0);
    } finally {
      c.close();
    }
  });

  test('results that are not exactly success never authenticate', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const results: unknown[] = ['true', 1, {}, { success: 'true' }, { success: 1 }, null, undefined, Promise.resolve('yes'), { success: false, message: '235 2.7.0 fake' }];
    let i = 0;
    const authenticator = (() => results[i++]) as unknown as Authenticator;
    const handler = new AuthRecorder();
    await using server = await startServer(handler, tlsOptions(certs, { authenticator, authRequired: true, maxAuthFailures: 100 }));
    const { c } = await startTLSClient(server.port);
    try {
      for (let k = 0; k < results.length; k++) {
        const r = await c.cmd(`AUTH PLAIN ${PLAIN_OK}`);
        assert.equal(r.code, 535, `result ${k} (${JSON.stringify(results[k])}): ${r.text}`);
        await c.expect('MAIL FROM:<a@example.com>', 530);
      }
      assert.equal(handler.atMail.length, 0);
    } finally {
      c.close();
    }
  });

  test('an authenticator that throws or rejects gets 454 4.7.0 and the session goes on', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    let n = 0;
    const logger = new CapturingLogger();
    const authenticator: Authenticator = async (_s, _se, _e, _m, data) => {
      n++;
      if (n === 1) throw new Error('database down');
      if (n === 2) return Promise.reject(new Error('still down'));
      return data.login === USER && (data as { password: string }).password === PASSWORD;
    };
    const sync: Authenticator = () => {
      throw new Error('sync failure');
    };
    for (const [name, auth] of [['async', authenticator], ['sync', sync]] as const) {
      const handler = new AuthRecorder();
      await using server = await startServer(handler, tlsOptions(certs, { authenticator: auth, logger }));
      const { c } = await startTLSClient(server.port);
      try {
        const r = await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 454);
        assert.match(r.text, /^454 4\.7\.0 /, name);
        await c.expect('NOOP', 250);
        if (name === 'async') {
          await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 454);
          await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235);
        }
        await deliver(c);
      } finally {
        c.close();
      }
    }
    assert.ok(logger.lines.some((l) => l.startsWith('error:')), 'an authenticator error is logged');
  });

  test('{success: false, message} sends that message; {success: true, message} too', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    let n = 0;
    const authenticator: Authenticator = () =>
      ++n === 1 ? { success: false, message: '535 5.7.8 go away' } : { success: true, message: '235 2.7.0 welcome back' };
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs, { authenticator }));
    const { c } = await startTLSClient(server.port);
    try {
      assert.equal((await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 535)).text, '535 5.7.8 go away');
      assert.equal((await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235)).text, '235 2.7.0 welcome back');
    } finally {
      c.close();
    }
  });

  test('authRequired: MAIL, RCPT and DATA get 530 5.7.0 until AUTH, then mail flows', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new AuthRecorder();
    await using server = await startServer(handler, tlsOptions(certs, { authRequired: true }));
    const { c } = await startTLSClient(server.port);
    try {
      for (const cmd of ['MAIL FROM:<a@example.com>', 'RCPT TO:<b@example.com>', 'DATA']) {
        assert.match((await c.expect(cmd, 530)).text, /^530 5\.7\.0 /, cmd);
      }
      await c.expect('NOOP', 250);
      await c.expect(`AUTH PLAIN ${b64(`\0${USER}\0nope`)}`, 535);
      await c.expect('MAIL FROM:<a@example.com>', 530);
      await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235);
      await deliver(c);
      assert.equal(handler.messages.length, 1);
      assert.equal(handler.atMail[0]!.authData, USER);
    } finally {
      c.close();
    }
  });

  test('authRequired: a refused BDAT still consumes its chunk (chunk bytes never run as commands)', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs, { authRequired: true }));
    const { c } = await startTLSClient(server.port);
    try {
      c.send('BDAT 6 LAST\r\nNOOP\r\n');
      assert.equal((await c.reply()).code, 530);
      assert.ok(await c.silentFor(300), `chunk bytes were run as a command: ${JSON.stringify(c.unread)}`);
    } finally {
      c.close();
    }
  });
});

describe('passwords never appear in logs', () => {
  const forms = secretForms(USER, PASSWORD);

  test('every exchange, at every log level', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const logger = new CapturingLogger();
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs, { logger, maxAuthFailures: 100, authIncludeMechanism: ['CRAM-MD5'] }));
    const flows: Array<(c: TlsRawClient) => Promise<void>> = [
      async (c) => void (await c.expect(`AUTH PLAIN ${PLAIN_OK}`, 235)),
      async (c) => void (await c.expect(`auth plain ${PLAIN_OK}`, 235)),
      async (c) => {
        await c.expect('AUTH PLAIN', 334);
        await c.expect(PLAIN_OK, 235);
      },
      async (c) => {
        await c.expect('AUTH LOGIN', 334);
        await c.expect(b64(USER), 334);
        await c.expect(b64(PASSWORD), 235);
      },
      async (c) => {
        await c.expect(`AUTH LOGIN ${b64(USER)}`, 334);
        await c.expect(b64(PASSWORD), 235);
      },
      async (c) => {
        // Pipelined in one write: the response is read by the exchange, never run as a command.
        c.send(`AUTH LOGIN\r\n${b64(USER)}\r\n${b64(PASSWORD)}\r\n`);
        assert.equal((await c.reply()).code, 334);
        assert.equal((await c.reply()).code, 334);
        assert.equal((await c.reply()).code, 235);
      },
      async (c) => void (await c.expect(`AUTH PLAIN ${b64(`${USER}\0${USER}\0${PASSWORD}`)}`, 235)),
      async (c) => void (await c.expect(`AUTH PLAIN ${b64(`\0bob\0${PASSWORD}`)}`, 535)),
      async (c) => {
        await c.expect('AUTH LOGIN', 334);
        await c.expect(b64(USER), 334);
        await c.expect('*', 501);
      },
      async (c) => void (await c.expect(`AUTH PLAIN ${PLAIN_OK} trailing`, 501)),
      async (c) => void (await c.expect(`AUTH XFOO ${PLAIN_OK}`, 504)),
      async (c) => {
        await c.expect('AUTH CRAM-MD5', 334);
        await c.expect(b64(`${USER} ${'0'.repeat(32)}`), 535);
      },
    ];
    for (const flow of flows) {
      const { c } = await startTLSClient(server.port);
      try {
        await flow(c);
        await c.expect('QUIT', 221);
      } finally {
        c.close();
      }
    }
    // The plain-text refusal (538) with an initial response.
    const p = await TlsRawClient.connect(server.port);
    try {
      await p.reply();
      await p.expect('EHLO client.example', 250);
      await p.expect(`AUTH PLAIN ${PLAIN_OK}`, 538);
    } finally {
      p.close();
    }
    assert.ok(logger.lines.some((l) => l.startsWith('debug:')), 'debug logging was not exercised');
    assert.ok(logger.lines.some((l) => /AUTH PLAIN/i.test(l)), 'AUTH commands are logged (masked)');
    assertNoSecret(logger.text, forms, 'the log');
  });

  test('an AUTH line with two spaces before the mechanism is masked too', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const logger = new CapturingLogger();
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs, { logger }));
    const { c } = await startTLSClient(server.port);
    try {
      // The command parser accepts the extra space, so the credentials are used...
      const r = await c.cmd(`AUTH  PLAIN ${PLAIN_OK}`);
      assert.ok(r.code === 235 || r.code === 501, r.text);
    } finally {
      c.close();
    }
    // ...and must not be logged.
    assertNoSecret(logger.text, forms, 'the log');
  });

  test('credentials pipelined behind a refused AUTH are not logged when run as commands', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const logger = new CapturingLogger();
    await using server = await startServer(new AuthRecorder(), tlsOptions(certs, { logger }));
    // In plain text AUTH is refused (538) and the client's pipelined LOGIN answers arrive as commands.
    const c = await TlsRawClient.connect(server.port);
    try {
      await c.reply();
      await c.expect('EHLO client.example', 250);
      c.send(`AUTH LOGIN\r\n${b64(USER)}\r\n${b64(PASSWORD)}\r\n`);
      assert.equal((await c.reply()).code, 538);
      const second = await c.reply();
      const third = await c.reply();
      assert.equal(second.code, 500);
      assert.equal(third.code, 500);
      assertNoSecret(third.text, forms, 'the reply to the stray password line');
    } finally {
      c.close();
    }
    assertNoSecret(logger.text, forms, 'the log');
  });
});

describe('real clients', () => {
  function transport(port: number, extra: Record<string, unknown>) {
    return nodemailer.createTransport({
      host: '127.0.0.1',
      port,
      connectionTimeout: 5000,
      greetingTimeout: 5000,
      socketTimeout: 10000,
      ...extra,
    } as Parameters<typeof nodemailer.createTransport>[0]);
  }

  for (const authMethod of ['PLAIN', 'LOGIN']) {
    test(`nodemailer over STARTTLS with AUTH ${authMethod}`, async (t: TestContext) => {
      if (!needCerts(t, certs)) return;
      const handler = new AuthRecorder();
      const calls: AuthData[] = [];
      await using server = await startServer(
        handler,
        tlsOptions(certs, { authenticator: makeAuthenticator(calls), requireStartTLS: true, authRequired: true }),
      );
      const tr = transport(server.port, {
        secure: false,
        requireTLS: true,
        auth: { user: USER, pass: PASSWORD },
        authMethod,
        tls: { ca: [certs.ca], servername: 'localhost' },
      });
      try {
        const info = await tr.sendMail({ from: 'a@example.com', to: 'b@example.com', subject: `nm ${authMethod}`, text: 'hi' });
        assert.deepEqual(info.accepted, ['b@example.com']);
      } finally {
        tr.close();
      }
      assert.equal(handler.messages.length, 1);
      assert.match(handler.messages[0]!.content.toString(), new RegExp(`Subject: nm ${authMethod}`));
      assert.equal(calls[0]?.mechanism, authMethod);
      assert.equal(handler.atMail[0]!.authData, USER);
    });
  }

  test('nodemailer with a wrong password gets 535 and delivers nothing', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new AuthRecorder();
    await using server = await startServer(handler, tlsOptions(certs, { requireStartTLS: true, authRequired: true }));
    const tr = transport(server.port, { secure: false, requireTLS: true, auth: { user: USER, pass: 'wrong' }, tls: { rejectUnauthorized: false } });
    try {
      await assert.rejects(tr.sendMail({ from: 'a@example.com', to: 'b@example.com', text: 'x' }), (e: { responseCode?: number }) => e.responseCode === 535);
    } finally {
      tr.close();
    }
    assert.equal(handler.messages.length, 0);
  });

  test('nodemailer over implicit TLS (secure: true) with AUTH', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new AuthRecorder();
    await using server = await startServer(handler, {
      tls: { cert: certs.server.cert, key: certs.server.key },
      authenticator: makeAuthenticator(),
      authRequired: true,
    });
    const tr = transport(server.port, { secure: true, auth: { user: USER, pass: PASSWORD }, tls: { ca: [certs.ca], servername: 'localhost' } });
    try {
      const info = await tr.sendMail({ from: 'a@example.com', to: 'b@example.com', subject: 'smtps', text: 'hi' });
      assert.deepEqual(info.accepted, ['b@example.com']);
    } finally {
      tr.close();
    }
    assert.equal(handler.messages.length, 1);
    assert.equal(handler.atMail[0]!.authData, USER);
  });

  const swaksBase = (port: number) => [
    '--server', `127.0.0.1:${port}`, '--from', 'a@example.com', '--to', 'b@example.com',
    '--auth-user', USER, '--auth-password', PASSWORD, '--timeout', '10', '--header', 'Subject: swaks test',
  ];

  for (const mech of ['PLAIN', 'LOGIN', 'CRAM-MD5']) {
    test(`swaks --tls --auth ${mech}`, async (t: TestContext) => {
      if (!needCerts(t, certs) || !needTool(t, 'swaks')) return;
      const handler = new AuthRecorder();
      await using server = await startServer(
        handler,
        tlsOptions(certs, { requireStartTLS: true, authRequired: true, authIncludeMechanism: ['CRAM-MD5'] }),
      );
      const r = await run('swaks', [...swaksBase(server.port), '--tls', '--auth', mech]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /<~ +235 /);
      assert.equal(handler.messages.length, 1);
      assert.match(handler.messages[0]!.content.toString(), /Subject: swaks test/);
      assert.equal(handler.atMail[0]!.authData, USER);
    });
  }

  test('swaks --tlsc (implicit TLS) --auth PLAIN', async (t: TestContext) => {
    if (!needCerts(t, certs) || !needTool(t, 'swaks')) return;
    const handler = new AuthRecorder();
    await using server = await startServer(handler, {
      tls: { cert: certs.server.cert, key: certs.server.key },
      authenticator: makeAuthenticator(),
      authRequired: true,
    });
    const r = await run('swaks', [...swaksBase(server.port), '--tlsc', '--auth', 'PLAIN']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(handler.messages.length, 1);
  });

  test('swaks with a wrong password gets 535 and delivers nothing', async (t: TestContext) => {
    if (!needCerts(t, certs) || !needTool(t, 'swaks')) return;
    const handler = new AuthRecorder();
    await using server = await startServer(handler, tlsOptions(certs, { requireStartTLS: true, authRequired: true }));
    const args = swaksBase(server.port);
    args[args.indexOf(PASSWORD)] = 'wrong-password';
    const r = await run('swaks', [...args, '--tls', '--auth', 'PLAIN']);
    assert.notEqual(r.code, 0);
    assert.match(r.stdout, /<~\*? +535 5\.7\.8/);
    assert.equal(handler.messages.length, 0);
  });

  const message = 'From: a@example.com\r\nTo: b@example.com\r\nSubject: curl test\r\n\r\nhello from curl\r\n';

  test('curl --ssl-reqd smtp:// with -u user:pass', async (t: TestContext) => {
    if (!needCerts(t, certs) || !needTool(t, 'curl')) return;
    const handler = new AuthRecorder();
    await using server = await startServer(handler, tlsOptions(certs, { requireStartTLS: true, authRequired: true }));
    const r = await run(
      'curl',
      ['-sS', '--max-time', '10', '--ssl-reqd', '--cacert', certs.caPath, `smtp://127.0.0.1:${server.port}`, '--mail-from', 'a@example.com', '--mail-rcpt', 'b@example.com', '-u', `${USER}:${PASSWORD}`, '-T', '-'],
      { input: message },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(handler.messages.length, 1);
    assert.match(handler.messages[0]!.content.toString(), /hello from curl/);
    assert.equal(handler.atMail[0]!.authData, USER);
  });

  test('curl smtps:// (implicit TLS) with -u user:pass', async (t: TestContext) => {
    if (!needCerts(t, certs) || !needTool(t, 'curl')) return;
    const handler = new AuthRecorder();
    await using server = await startServer(handler, {
      tls: { cert: certs.server.cert, key: certs.server.key },
      authenticator: makeAuthenticator(),
      authRequired: true,
    });
    const r = await run(
      'curl',
      ['-sS', '--max-time', '10', '--cacert', certs.caPath, `smtps://127.0.0.1:${server.port}`, '--mail-from', 'a@example.com', '--mail-rcpt', 'b@example.com', '-u', `${USER}:${PASSWORD}`, '-T', '-'],
      { input: message },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(handler.messages.length, 1);
    assert.equal(handler.atMail[0]!.authData, USER);
  });

  test('curl with a wrong password fails and delivers nothing', async (t: TestContext) => {
    if (!needCerts(t, certs) || !needTool(t, 'curl')) return;
    const handler = new AuthRecorder();
    await using server = await startServer(handler, tlsOptions(certs, { requireStartTLS: true, authRequired: true }));
    const r = await run(
      'curl',
      ['-sS', '--max-time', '10', '--ssl-reqd', '-k', `smtp://127.0.0.1:${server.port}`, '--mail-from', 'a@example.com', '--mail-rcpt', 'b@example.com', '-u', `${USER}:wrong`, '-T', '-'],
      { input: message },
    );
    assert.notEqual(r.code, 0);
    assert.equal(handler.messages.length, 0);
  });
});
