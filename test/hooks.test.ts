/**
 * Handler hooks over real sockets: every hook sync and async, defaults when missing, what
 * session and envelope carry, how replies are normalized, handler errors, processMessage,
 * ordering under pipelining and hooks that never answer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Handler, MaybePromise, SMTPServer } from '../src/handler.js';
import { Reply } from '../src/replies.js';
import type { Envelope, MailOptions, Session } from '../src/session.js';
import { RawClient, Recorder, greeted, startServer, type SMTPReply } from './helpers.js';
import { MemoryLogger, assertEnhanced, delay, expect, expectCode, sendMessage, waitFor } from './commands-util.js';

type Mode = 'sync' | 'async';
const MODES: Mode[] = ['sync', 'async'];

/** The value itself (sync) or a promise of it after a timer (async). */
function later<T>(mode: Mode, value: T, ms = 5): MaybePromise<T> {
  return mode === 'sync' ? value : new Promise<T>((resolve) => setTimeout(() => resolve(value), ms));
}

async function connect(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  expectCode(await c.reply(), 220, 'greeting');
  return c;
}

// ---- every hook, sync and async --------------------------------------------------------------

for (const mode of MODES) {
  test(`every hook (${mode}) is called with its arguments and its reply is sent`, async () => {
    const calls: string[] = [];
    let ehloGiven: string[] = [];
    let dataEnvelope: { mailFrom: string | null; rcptTos: string[]; content: string } | null = null;
    const handler: Handler = {
      handleHELO(_s, _session, _env, hostname) {
        calls.push(`HELO ${hostname}`);
        return later(mode, `250 hello ${hostname}`);
      },
      handleEHLO(_s, _session, _env, hostname, responses) {
        calls.push(`EHLO ${hostname}`);
        ehloGiven = [...responses];
        return later(mode, [...responses.filter((l) => l !== 'HELP'), 'X-FOO']);
      },
      handleMAIL(_s, _session, _env, address) {
        calls.push(`MAIL ${address}`);
        return later(mode, '250 sender ok');
      },
      handleRCPT(_s, _session, envelope, address) {
        calls.push(`RCPT ${address}`);
        if (address.endsWith('@blocked.org')) return later(mode, '550 not here');
        envelope.rcptTos.push(address); // aiosmtpd style: the hook appends it itself
        return later(mode, '250 rcpt ok');
      },
      handleDATA(_s, _session, envelope) {
        calls.push('DATA');
        dataEnvelope = {
          mailFrom: envelope.mailFrom,
          rcptTos: [...envelope.rcptTos],
          content: envelope.content!.toString(),
        };
        return later(mode, '250 Accepted');
      },
      handleRSET() {
        calls.push('RSET');
        return later(mode, '250 reset done');
      },
      handleNOOP(_s, _session, _env, arg) {
        calls.push(`NOOP ${arg}`);
        return later(mode, `250 noop ${arg}`);
      },
      handleVRFY(_s, _session, _env, address) {
        calls.push(`VRFY ${address}`);
        return later(mode, `252 maybe ${address}`);
      },
      handleQUIT() {
        calls.push('QUIT');
        return later(mode, '221 see ya');
      },
    };
    await using server = await startServer(handler, { serverHostname: 'mx.test', enableSMTPUTF8: false });
    const c = await connect(server.port);
    assert.deepEqual((await expect(c, 'HELO h1.example', 250)).lines, ['250 hello h1.example']);
    const ehlo = await expect(c, 'EHLO client.example', 250);
    // The hook got the lines without codes, the hostname first, HELP among them.
    assert.equal(ehloGiven[0], 'mx.test');
    for (const kw of ['SIZE 33554432', '8BITMIME', 'PIPELINING', 'ENHANCEDSTATUSCODES', 'HELP']) {
      assert.ok(ehloGiven.includes(kw), `${kw} in ${JSON.stringify(ehloGiven)}`);
    }
    assert.ok(ehloGiven.every((l) => !/^\d{3}/.test(l)), JSON.stringify(ehloGiven));
    // What the client sees is the edited list: HELP gone, X-FOO last.
    const kept = ehloGiven.slice(1).filter((l) => l !== 'HELP');
    assert.deepEqual(ehlo.lines, ['250-mx.test', ...kept.map((l) => `250-${l}`), '250 X-FOO']);
    assert.deepEqual((await expect(c, 'MAIL FROM:<a@b.org>', 250)).lines, ['250 2.1.0 sender ok']);
    assert.deepEqual((await expect(c, 'RCPT TO:<ok@a.org>', 250)).lines, ['250 2.1.5 rcpt ok']);
    assert.deepEqual((await expect(c, 'RCPT TO:<x@blocked.org>', 550)).lines, ['550 5.0.0 not here']);
    assert.deepEqual((await expect(c, 'RCPT TO:<ok2@b.org>', 250)).lines, ['250 2.1.5 rcpt ok']);
    await expect(c, 'DATA', 354);
    c.send('Subject: hi\r\n\r\nbody\r\n.\r\n');
    assert.deepEqual((await c.reply()).lines, ['250 2.6.0 Accepted']);
    assert.deepEqual(dataEnvelope, {
      mailFrom: 'a@b.org',
      rcptTos: ['ok@a.org', 'ok2@b.org'],
      content: 'Subject: hi\r\n\r\nbody\r\n',
    });
    assert.deepEqual((await expect(c, 'RSET', 250)).lines, ['250 2.0.0 reset done']);
    assert.deepEqual((await expect(c, 'NOOP hi there', 250)).lines, ['250 2.0.0 noop hi there']);
    assert.deepEqual((await expect(c, 'VRFY <u@a.org>', 252)).lines, ['252 2.0.0 maybe u@a.org']);
    assert.deepEqual((await expect(c, 'QUIT', 221)).lines, ['221 2.0.0 see ya']);
    await c.waitClosed();
    assert.deepEqual(calls, [
      'HELO h1.example',
      'EHLO client.example',
      'MAIL a@b.org',
      'RCPT ok@a.org',
      'RCPT x@blocked.org',
      'RCPT ok2@b.org',
      'DATA',
      'RSET',
      'NOOP hi there',
      'VRFY u@a.org',
      'QUIT',
    ]);
  });
}

test('without hooks every command gets its documented default reply', async () => {
  const handler: Handler = {};
  await using server = await startServer(handler, { serverHostname: 'mx.test' });
  const c = await connect(server.port);
  assert.deepEqual((await expect(c, 'HELO client.example', 250)).lines, ['250 mx.test']);
  assert.equal((await expect(c, 'EHLO client.example', 250)).lines[0], '250-mx.test');
  assert.equal((await expect(c, 'MAIL FROM:<a@b.org>', 250)).text, Reply.MAIL_OK);
  assert.equal((await expect(c, 'RCPT TO:<c@d.org>', 250)).text, Reply.RCPT_OK);
  await expect(c, 'DATA', 354);
  c.send('x\r\n.\r\n');
  assert.equal((await c.reply()).text, Reply.DATA_OK);
  assert.equal((await expect(c, 'RSET', 250)).text, Reply.RSET_OK);
  assert.equal((await expect(c, 'NOOP', 250)).text, Reply.NOOP_OK);
  assert.equal((await expect(c, 'VRFY x', 252)).text, Reply.VRFY_DEFAULT);
  assert.equal((await expect(c, 'QUIT', 221)).text, Reply.BYE);
  await c.waitClosed();
});

for (const mode of MODES) {
  test(`handleEHLO (${mode}) may return aiosmtpd-style lines with 250- prefixes`, async () => {
    const handler: Handler = {
      handleEHLO() {
        return later(mode, ['250-mx.test', '250-8BITMIME', '250 X-FOO']);
      },
    };
    await using server = await startServer(handler, { serverHostname: 'mx.test' });
    const c = await connect(server.port);
    const r = await expect(c, 'EHLO client.example', 250);
    assert.deepEqual(r.lines, ['250-mx.test', '250-8BITMIME', '250 X-FOO']);
    await expect(c, 'MAIL FROM:<a@b.org>', 250);
    c.close();
  });
}

test('handleEHLO lines with wrong continuation marks (an appended line after "250 HELP") are fixed', async () => {
  const handler: Handler = {
    handleEHLO(_s, _session, _env, _hostname, responses) {
      // An aiosmtpd-port: the list as aiosmtpd would give it, then a line appended at the end.
      const lines = responses.map((l, i) => `250${i === responses.length - 1 ? ' ' : '-'}${l}`);
      lines.push('250-X-BAR');
      return lines;
    },
  };
  await using server = await startServer(handler, { serverHostname: 'mx.test' });
  const c = await connect(server.port);
  const r = await expect(c, 'EHLO client.example', 250);
  assert.equal(r.lines[0], '250-mx.test');
  assert.equal(r.lines[r.lines.length - 1], '250 X-BAR');
  assert.ok(r.lines.includes('250-HELP'), r.text);
  r.lines.forEach((l, i) => assert.equal(l[3], i === r.lines.length - 1 ? ' ' : '-', l));
  assert.ok(await c.noReplyWithin(20));
  await expect(c, 'NOOP', 250);
  c.close();
});

test('handleEHLO returning something invalid (CRLF in a line, empty, not a list) gets 451, no stray line', async () => {
  let result: unknown = null;
  const logger = new MemoryLogger();
  const handler: Handler = {
    handleEHLO() {
      return result as string[];
    },
  };
  await using server = await startServer(handler, { logger });
  const c = await connect(server.port);
  for (const bad of [['mx.test', 'X-FOO\r\n354 go'], ['mx.test', 'X\n250 Y'], [], 'mx.test', null, [42]]) {
    result = bad;
    const r = await expect(c, 'EHLO client.example', 451);
    assertEnhanced(r, JSON.stringify(bad));
    assert.ok(!r.lines.some((l) => l.startsWith('354')), r.text);
    assert.ok(await c.noReplyWithin(20), `no stray line after ${JSON.stringify(bad)}`);
  }
  // The failed EHLO did not greet.
  await expect(c, 'MAIL FROM:<a@b.org>', 503);
  result = ['mx.test', '8BITMIME'];
  await expect(c, 'EHLO client.example', 250);
  await expect(c, 'MAIL FROM:<a@b.org>', 250);
  c.close();
});

// ---- session and envelope --------------------------------------------------------------------

for (const mode of MODES) {
  test(`session and envelope are passed and filled (${mode})`, async () => {
    type Seen = {
      serverHostname: string;
      hostName: string | null;
      extendedSmtp: boolean;
      peerAddress: string;
      peerPort: number;
      sameSession: boolean;
      address: string;
      mailOptions: MailOptions;
    };
    let atMail: Seen | null = null;
    let atRcpt: { mailFrom: string | null; address: string; rcptTos: string[] } | null = null;
    let atData: {
      mailFrom: string | null;
      rcptTos: string[];
      mailOptions: MailOptions;
      mailParams: string[];
      content: Buffer | string | null;
      originalContent: Buffer | null;
      sameSession: boolean;
    } | null = null;
    let sessions: Session[] = [];
    const handler: Handler = {
      handleMAIL(server: SMTPServer, session: Session, _envelope: Envelope, address: string, mailOptions: MailOptions) {
        sessions.push(session);
        atMail = {
          serverHostname: server.hostname,
          hostName: session.hostName,
          extendedSmtp: session.extendedSmtp,
          peerAddress: session.peer.address,
          peerPort: session.peer.port,
          sameSession: server.session === session,
          address,
          mailOptions: { ...mailOptions },
        };
        return later(mode, '250 OK');
      },
      handleRCPT(_server, session, envelope, address) {
        sessions.push(session);
        atRcpt = { mailFrom: envelope.mailFrom, address, rcptTos: [...envelope.rcptTos] };
        return later(mode, '250 OK');
      },
      handleDATA(server, session, envelope) {
        sessions.push(session);
        atData = {
          mailFrom: envelope.mailFrom,
          rcptTos: [...envelope.rcptTos],
          mailOptions: { ...envelope.mailOptions },
          mailParams: [...envelope.mailParams],
          content: envelope.content,
          originalContent: envelope.originalContent,
          sameSession: server.session === session,
        };
        return later(mode, '250 OK');
      },
    };
    await using server = await startServer(handler, { serverHostname: 'mx.test' });
    const c = await greeted(server.port);
    await expect(c, 'MAIL FROM:<a@b.org> SIZE=10 BODY=8BITMIME', 250);
    await expect(c, 'RCPT TO:<c@d.org>', 250);
    await expect(c, 'RCPT TO:<e@d.org>', 250);
    await expect(c, 'DATA', 354);
    c.send('Subject: s\r\n\r\nhello\r\n');
    c.send('.\r\n');
    expectCode(await c.reply(), 250);
    assert.deepEqual(atMail, {
      serverHostname: 'mx.test',
      hostName: 'client.example',
      extendedSmtp: true,
      peerAddress: '127.0.0.1',
      peerPort: c.socket.localPort,
      sameSession: true,
      address: 'a@b.org',
      mailOptions: { size: 10, body: '8BITMIME' },
    });
    // RCPT sees the sender recorded and the recipients so far (the current one not yet).
    assert.deepEqual(atRcpt, { mailFrom: 'a@b.org', address: 'e@d.org', rcptTos: ['c@d.org'] });
    const d = atData!;
    assert.equal(d.mailFrom, 'a@b.org');
    assert.deepEqual(d.rcptTos, ['c@d.org', 'e@d.org']);
    assert.deepEqual(d.mailOptions, { size: 10, body: '8BITMIME' });
    assert.deepEqual(d.mailParams, ['SIZE=10', 'BODY=8BITMIME']);
    assert.ok(Buffer.isBuffer(d.content), 'content is a Buffer');
    assert.ok(Buffer.isBuffer(d.originalContent), 'originalContent is a Buffer');
    assert.equal((d.content as Buffer).toString(), 'Subject: s\r\n\r\nhello\r\n');
    assert.equal(d.originalContent!.toString(), 'Subject: s\r\n\r\nhello\r\n');
    assert.ok(d.sameSession);
    // One Session for the whole connection.
    assert.equal(new Set(sessions).size, 1);
    // A second transaction gets a fresh envelope: no leftovers.
    sessions = [];
    await expect(c, 'MAIL FROM:<x@b.org>', 250);
    await expect(c, 'RCPT TO:<y@d.org>', 250);
    await expect(c, 'DATA', 354);
    c.send('two\r\n.\r\n');
    expectCode(await c.reply(), 250);
    assert.deepEqual(atData!.rcptTos, ['y@d.org']);
    assert.deepEqual(atData!.mailOptions, {});
    assert.deepEqual(atData!.mailParams, []);
    c.close();
  });
}

test('with decodeData, envelope.content is a string and originalContent the Buffer received', async () => {
  let content: unknown = null;
  let original: unknown = null;
  const handler: Handler = {
    handleDATA(_s, _session, envelope) {
      content = envelope.content;
      original = envelope.originalContent;
      return '250 OK';
    },
  };
  await using server = await startServer(handler, { decodeData: true });
  const c = await greeted(server.port);
  const body = 'Subject: caf\u00e9\r\n\r\nna\u00efve\r\n';
  expectCode(await sendMessage(c, 'a@b.org', ['c@d.org'], body), 250);
  assert.equal(typeof content, 'string');
  assert.equal(content, body);
  assert.ok(Buffer.isBuffer(original));
  assert.deepEqual(original, Buffer.from(body, 'utf8'));
  c.close();
});

test('server.envelope is the envelope the hook receives, in every transaction hook (DATA included)', async () => {
  const same: Record<string, boolean> = {};
  const handler: Handler = {
    handleMAIL(server, _session, envelope) {
      same.MAIL = server.envelope === envelope;
      return '250 OK';
    },
    handleRCPT(server, _session, envelope) {
      same.RCPT = server.envelope === envelope;
      return '250 OK';
    },
    handleDATA(server, _session, envelope) {
      same.DATA = server.envelope === envelope;
      return '250 OK';
    },
  };
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  expectCode(await sendMessage(c, 'a@b.org', ['c@d.org'], 'x\r\n'), 250);
  assert.deepEqual(same, { MAIL: true, RCPT: true, DATA: true });
  c.close();
});

test('an envelope the EHLO hook was given carries into the transaction; a finished transaction gets a fresh one', async () => {
  const seen: Envelope[] = [];
  const handler: Handler = {
    handleEHLO(_server, _session, envelope, _hostname, responses) {
      seen.push(envelope);
      return responses;
    },
    handleMAIL(_server, _session, envelope, address) {
      seen.push(envelope);
      envelope.mailFrom = address;
      return '250 OK';
    },
  };
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  expectCode(await sendMessage(c, 'a@b.org', ['c@d.org'], 'x\r\n'), 250);
  expectCode(await sendMessage(c, 'e@f.org', ['c@d.org'], 'y\r\n'), 250);
  assert.equal(seen.length, 3);
  assert.equal(seen[1], seen[0], 'MAIL got the envelope EHLO had');
  assert.notEqual(seen[2], seen[1], 'the second transaction has its own envelope');
  assert.equal(seen[2]!.mailFrom, 'e@f.org');
  assert.deepEqual(seen[2]!.rcptTos, ['c@d.org']);
  c.close();
});

test('session.hostName is the argument of the latest successful HELO or EHLO', async () => {
  const names: Array<string | null> = [];
  const ext: boolean[] = [];
  const handler: Handler = {
    handleNOOP(_s, session) {
      names.push(session.hostName);
      ext.push(session.extendedSmtp);
      return '250 OK';
    },
  };
  await using server = await startServer(handler);
  const c = await connect(server.port);
  await expect(c, 'NOOP', 250);
  await expect(c, 'EHLO first.example', 250);
  await expect(c, 'NOOP', 250);
  await expect(c, 'HELO second.example', 250);
  await expect(c, 'NOOP', 250);
  await expect(c, 'EHLO third.example', 250);
  await expect(c, 'NOOP', 250);
  await expect(c, 'HELO fourth.example', 250);
  await expect(c, 'NOOP', 250);
  c.close();
  assert.deepEqual(ext, [false, true, false, true, false]);
  assert.deepEqual(names, [null, 'first.example', 'second.example', 'third.example', 'fourth.example']);
});

// ---- reply normalization ---------------------------------------------------------------------

test('a handler reply without an enhanced code gets the default for its command and class (RCPT 2.1.5, MAIL 2.1.0); one with a code keeps it', async () => {
  const replies: Record<string, string> = {
    'a@x.org': '250 Accepted',
    'b@x.org': '550 no',
    'c@x.org': '451 later',
    'd@x.org': '250 2.1.5 Fine',
    'e@x.org': '553 5.1.3 Bad address',
    'f@x.org': '250',
    'g@x.org': '250 5.1.1 contradicting',
  };
  const handler: Handler = {
    handleMAIL() {
      return '250 OK';
    },
    handleRCPT(_s, _session, _envelope, address) {
      return replies[address] ?? '250 OK';
    },
    handleDATA() {
      return '250 Accepted';
    },
  };
  await using server = await startServer(handler, { maxErrors: 0 });
  const c = await greeted(server.port);
  assert.deepEqual((await c.cmd('MAIL FROM:<s@x.org>')).lines, ['250 2.1.0 OK']);
  const expected: Record<string, string> = {
    'a@x.org': '250 2.1.5 Accepted',
    'b@x.org': '550 5.0.0 no',
    'c@x.org': '451 4.0.0 later',
    'd@x.org': '250 2.1.5 Fine',
    'e@x.org': '553 5.1.3 Bad address',
    'f@x.org': '250 2.1.5',
    'g@x.org': '250 2.1.5 5.1.1 contradicting',
  };
  for (const [address, line] of Object.entries(expected)) {
    const r = await c.cmd(`RCPT TO:<${address}>`);
    assert.deepEqual(r.lines, [line], address);
  }
  await expect(c, 'DATA', 354);
  c.send('x\r\n.\r\n');
  assert.deepEqual((await c.reply()).lines, ['250 2.6.0 Accepted']);
  c.close();
});

test('a multi-line handler reply is sent with correct continuation marks', async () => {
  let reply = '';
  const handler: Handler = {
    handleNOOP() {
      return reply;
    },
  };
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  const cases: Array<[string, string[]]> = [
    ['250-a\r\n250 b', ['250-2.0.0 a', '250 2.0.0 b']],
    ['250 a\r\n250 b\r\n', ['250-2.0.0 a', '250 2.0.0 b']],
    ['250-a\n250-b\n250-c', ['250-2.0.0 a', '250-2.0.0 b', '250 2.0.0 c']],
    ['250-left open', ['250 2.0.0 left open']], // a handler cannot leave the reply open
  ];
  for (const [given, lines] of cases) {
    reply = given;
    const r = await expect(c, 'NOOP', 250);
    assert.deepEqual(r.lines, lines, JSON.stringify(given));
    assert.ok(await c.noReplyWithin(20), `nothing after ${JSON.stringify(given)}`);
  }
  reply = '250 fine';
  await expect(c, 'NOOP', 250);
  c.close();
});

test('a handler reply that tries to inject a line is never sent raw: it is a handler error (451)', async () => {
  let reply = '';
  const logger = new MemoryLogger();
  const handler: Handler = {
    handleNOOP() {
      return reply;
    },
    handleDATA() {
      return reply;
    },
  };
  await using server = await startServer(handler, { logger, maxErrors: 0 });
  const c = await greeted(server.port);
  const injections = [
    '250 OK\r\n354 go',
    '250 OK\n354 go',
    '250 OK\r354 go',
    '250 OK\r\n\r\n354 go',
    '250 OK\r\n354-go\r\n354 go',
    '250 a\x00b',
    'OK',
    '',
    '2500 OK',
  ];
  for (const bad of injections) {
    reply = bad;
    const r = await c.cmd('NOOP');
    expectCode(r, 451, JSON.stringify(bad));
    assertEnhanced(r, JSON.stringify(bad));
    assert.ok(!r.lines.some((l) => l.startsWith('354')), `${JSON.stringify(bad)}: ${r.text}`);
    assert.ok(await c.noReplyWithin(20), `no stray line after ${JSON.stringify(bad)}`);
    await expect(c, 'NOOP x', 451); // and again: still exactly one reply
    assert.ok(await c.noReplyWithin(10), `no stray line after the second ${JSON.stringify(bad)}`);
  }
  // At the end of DATA too; the session goes on.
  reply = '250 OK\r\n354 go';
  const r = await sendMessage(c, 'a@b.org', ['c@d.org'], 'x\r\n');
  expectCode(r, 451);
  assert.ok(await c.noReplyWithin(20));
  reply = '250 OK';
  await expect(c, 'NOOP', 250);
  assert.ok(logger.errors.length > 0, 'the invalid replies were logged');
  c.close();
});

// ---- handler errors --------------------------------------------------------------------------

type FailKind = 'throw' | 'reject' | 'non-string';
const SECRET = 'SECRET-d41d8cd9';

function failure(kind: FailKind): MaybePromise<string> {
  switch (kind) {
    case 'throw':
      throw new Error(`${SECRET} thrown`);
    case 'reject':
      return new Promise<string>((_resolve, reject) => setTimeout(() => reject(new Error(`${SECRET} rejected`)), 5));
    case 'non-string':
      return { secret: SECRET } as unknown as string;
  }
}

/** A handler whose hook named in `failOn` fails, and works otherwise. */
class FailingHandler extends Recorder implements Handler {
  failOn: string | null = null;
  constructor(readonly kind: FailKind) {
    super();
  }
  private maybeFail(hook: string, ok: string): MaybePromise<string> {
    return this.failOn === hook ? failure(this.kind) : ok;
  }
  handleHELO(): MaybePromise<string> {
    return this.maybeFail('HELO', '250 mx.test');
  }
  handleEHLO(_s: SMTPServer, _session: Session, _env: Envelope, _h: string, responses: string[]): MaybePromise<string[]> {
    if (this.failOn === 'EHLO') return failure(this.kind) as unknown as string[];
    return responses;
  }
  handleMAIL(): MaybePromise<string> {
    return this.maybeFail('MAIL', '250 OK');
  }
  handleRCPT(): MaybePromise<string> {
    return this.maybeFail('RCPT', '250 OK');
  }
  override handleDATA(server: unknown, session: unknown, envelope: Envelope): string {
    if (this.failOn === 'DATA') return failure(this.kind) as string;
    return super.handleDATA(server, session, envelope);
  }
  handleRSET(): MaybePromise<string> {
    return this.maybeFail('RSET', '250 OK');
  }
  handleNOOP(): MaybePromise<string> {
    return this.maybeFail('NOOP', '250 OK');
  }
  handleVRFY(): MaybePromise<string> {
    return this.maybeFail('VRFY', '252 maybe');
  }
  handleQUIT(): MaybePromise<string> {
    return this.maybeFail('QUIT', '221 Bye');
  }
}

for (const kind of ['throw', 'reject', 'non-string'] as FailKind[]) {
  test(`a hook that fails (${kind}) gets a 451 without the error text; the session goes on`, async () => {
    const handler = new FailingHandler(kind);
    const logger = new MemoryLogger();
    await using server = await startServer(handler, { logger });
    const c = await greeted(server.port);
    const check = async (hook: string, command: string | (() => Promise<SMTPReply>)) => {
      handler.failOn = hook;
      const r = typeof command === 'string' ? await c.cmd(command) : await command();
      handler.failOn = null;
      expectCode(r, 451, `${hook} ${kind}`);
      assertEnhanced(r, hook);
      assert.match(r.lines[0]!, /^451[ -]4\./, `${hook}: ${r.text}`);
      assert.ok(!r.text.includes('SECRET'), `${hook} leaks the error: ${r.text}`);
      assert.ok(await c.noReplyWithin(10), `${hook}: one reply only`);
      await expect(c, 'NOOP', 250);
    };
    await check('HELO', 'HELO client.example');
    await check('EHLO', 'EHLO client.example');
    await expect(c, 'EHLO client.example', 250);
    await check('MAIL', 'MAIL FROM:<a@b.org>');
    await expect(c, 'MAIL FROM:<a@b.org>', 250); // the failed MAIL recorded nothing
    await check('RCPT', 'RCPT TO:<c@d.org>');
    await expect(c, 'DATA', 503); // nor did the failed RCPT
    await expect(c, 'RCPT TO:<c@d.org>', 250);
    await expect(c, 'DATA', 354);
    await check('DATA', async () => {
      c.send('lost\r\n.\r\n');
      return c.reply();
    });
    await check('RSET', 'RSET');
    await check('NOOP', 'NOOP');
    await check('VRFY', 'VRFY someone');
    // A following message is delivered.
    expectCode(await sendMessage(c, 'x@b.org', ['y@d.org'], 'after\r\n'), 250);
    assert.equal(handler.messages.length, 1);
    assert.equal(handler.messages[0]!.content.toString(), 'after\r\n');
    // QUIT: the error reply, and the connection still closes.
    handler.failOn = 'QUIT';
    const q = await c.cmd('QUIT');
    expectCode(q, 451);
    assert.ok(!q.text.includes('SECRET'));
    await c.waitClosed();
    // Every failure was logged, with the error.
    assert.ok(logger.errors.length >= 9, `logged ${logger.errors.length}`);
  });
}

for (const mode of MODES) {
  test(`handleException (${mode}) chooses the reply and receives the error`, async () => {
    const thrown = new Error(`${SECRET} boom`);
    const received: unknown[] = [];
    let choice = '421 try later';
    const handler: Handler = {
      handleMAIL() {
        throw thrown;
      },
      handleNOOP() {
        return Promise.reject(thrown);
      },
      handleException(error) {
        received.push(error);
        return later(mode, choice);
      },
    };
    await using server = await startServer(handler, { logger: new MemoryLogger() });
    const c = await greeted(server.port);
    let r = await expect(c, 'MAIL FROM:<a@b.org>', 421);
    assert.deepEqual(r.lines, ['421 4.0.0 try later']);
    // 421 means the server closes (RFC 5321 §3.8), whoever chose it.
    await c.waitClosed();
    const c2 = await greeted(server.port);
    choice = '554 5.3.0 nope';
    r = await expect(c2, 'NOOP', 554);
    assert.deepEqual(r.lines, ['554 5.3.0 nope']);
    assert.deepEqual(received, [thrown, thrown]);
    c2.close();
  });
}

test('a handleException that throws, rejects or returns junk still yields a 451', async () => {
  let how: 'throw' | 'reject' | 'junk' | 'inject' = 'throw';
  const handler: Handler = {
    handleNOOP() {
      throw new Error(`${SECRET} first`);
    },
    handleException(): MaybePromise<string> {
      if (how === 'throw') throw new Error(`${SECRET} second`);
      if (how === 'reject') return Promise.reject(new Error(`${SECRET} second`));
      if (how === 'inject') return '250 OK\r\n354 go';
      return 42 as unknown as string;
    },
  };
  await using server = await startServer(handler, { logger: new MemoryLogger() });
  const c = await greeted(server.port);
  for (const h of ['throw', 'reject', 'junk', 'inject'] as const) {
    how = h;
    const r = await expect(c, 'NOOP', 451);
    assertEnhanced(r, h);
    assert.ok(!r.text.includes('SECRET'), r.text);
    assert.ok(await c.noReplyWithin(10), `${h}: one reply only`);
  }
  await expect(c, 'MAIL FROM:<a@b.org>', 250);
  c.close();
});

// ---- processMessage --------------------------------------------------------------------------

for (const mode of MODES) {
  test(`processMessage (${mode}) is called when there is no handleDATA`, async () => {
    const calls: Array<{ peer: string; mailFrom: string; rcptTos: string[]; data: Buffer | string }> = [];
    let result: string | undefined = undefined;
    const handler: Handler = {
      processMessage(peer, mailFrom, rcptTos, data) {
        calls.push({ peer, mailFrom, rcptTos: [...rcptTos], data });
        return later(mode, result);
      },
    };
    await using server = await startServer(handler);
    const c = await greeted(server.port);
    let r = await sendMessage(c, 'a@b.org', ['c@d.org', 'e@d.org'], 'one\r\n');
    expectCode(r, 250);
    assertEnhanced(r);
    result = '550 no';
    r = await sendMessage(c, 'f@b.org', ['g@d.org'], 'two\r\n');
    assert.deepEqual(r.lines, ['550 5.0.0 no']);
    assert.equal(calls.length, 2);
    assert.match(calls[0]!.peer, /127\.0\.0\.1/);
    assert.match(calls[0]!.peer, new RegExp(String(c.socket.localPort)));
    assert.equal(calls[0]!.mailFrom, 'a@b.org');
    assert.deepEqual(calls[0]!.rcptTos, ['c@d.org', 'e@d.org']);
    assert.ok(Buffer.isBuffer(calls[0]!.data));
    assert.equal(calls[0]!.data.toString(), 'one\r\n');
    assert.equal(calls[1]!.mailFrom, 'f@b.org');
    c.close();
  });
}

test('processMessage gets a string with decodeData; handleDATA wins when both exist', async () => {
  {
    let data: unknown = null;
    const handler: Handler = {
      processMessage(_peer, _from, _to, d) {
        data = d;
      },
    };
    await using server = await startServer(handler, { decodeData: true });
    const c = await greeted(server.port);
    expectCode(await sendMessage(c, 'a@b.org', ['c@d.org'], 'h\u00e9\r\n'), 250);
    assert.equal(data, 'h\u00e9\r\n');
    c.close();
  }
  {
    let used = '';
    const handler: Handler = {
      handleDATA() {
        used += 'DATA';
        return '250 via handleDATA';
      },
      processMessage() {
        used += 'process';
        return '550 wrong';
      },
    };
    await using server = await startServer(handler);
    const c = await greeted(server.port);
    const r = await sendMessage(c, 'a@b.org', ['c@d.org'], 'x\r\n');
    assert.deepEqual(r.lines, ['250 2.6.0 via handleDATA']);
    assert.equal(used, 'DATA');
    c.close();
  }
});

test('a processMessage that throws gets 451 and the session goes on', async () => {
  let fail = true;
  const handler: Handler = {
    processMessage() {
      if (fail) throw new Error(SECRET);
    },
  };
  await using server = await startServer(handler, { logger: new MemoryLogger() });
  const c = await greeted(server.port);
  const r = await sendMessage(c, 'a@b.org', ['c@d.org'], 'x\r\n');
  expectCode(r, 451);
  assert.ok(!r.text.includes('SECRET'));
  fail = false;
  expectCode(await sendMessage(c, 'a@b.org', ['c@d.org'], 'y\r\n'), 250);
  c.close();
});

// ---- ordering under pipelining ---------------------------------------------------------------

/** A handler whose MAIL and RCPT hooks are slow and record when they run. */
function slowHandler(events: string[], delays: Record<string, number>): Handler & { messages: string[] } {
  const messages: string[] = [];
  return {
    messages,
    async handleMAIL(_s, _session, _env, address) {
      events.push(`start MAIL ${address}`);
      await delay(delays[address] ?? 10);
      events.push(`end MAIL ${address}`);
      return `250 sender ${address}`;
    },
    async handleRCPT(_s, _session, _env, address) {
      events.push(`start RCPT ${address}`);
      await delay(delays[address] ?? 10);
      events.push(`end RCPT ${address}`);
      if (address.startsWith('bad')) return `550 no ${address}`;
      return `250 rcpt ${address}`;
    },
    handleDATA(_s, _session, envelope) {
      events.push('DATA');
      messages.push(`${envelope.rcptTos.join(',')}|${envelope.content!.toString()}`);
      return '250 queued';
    },
  };
}

test('slow async handleRCPT with pipelined commands: replies in order, exactly once, 354 last', async () => {
  const events: string[] = [];
  const handler = slowHandler(events, { 'a@x.org': 30, '1@x.org': 50, '2@x.org': 20, '3@x.org': 35 });
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  c.send('MAIL FROM:<a@x.org>\r\nRCPT TO:<1@x.org>\r\nRCPT TO:<2@x.org>\r\nRCPT TO:<3@x.org>\r\nDATA\r\n');
  const got: string[] = [];
  for (let i = 0; i < 5; i++) got.push((await c.reply()).text);
  assert.deepEqual(got, [
    '250 2.1.0 sender a@x.org',
    '250 2.1.5 rcpt 1@x.org',
    '250 2.1.5 rcpt 2@x.org',
    '250 2.1.5 rcpt 3@x.org',
    Reply.START_DATA,
  ]);
  c.send('body\r\n.\r\n');
  assert.equal((await c.reply()).text, '250 2.6.0 queued');
  assert.ok(await c.noReplyWithin(100), 'no extra reply');
  // The hooks ran one at a time, in the order the commands came.
  assert.deepEqual(events, [
    'start MAIL a@x.org',
    'end MAIL a@x.org',
    'start RCPT 1@x.org',
    'end RCPT 1@x.org',
    'start RCPT 2@x.org',
    'end RCPT 2@x.org',
    'start RCPT 3@x.org',
    'end RCPT 3@x.org',
    'DATA',
  ]);
  assert.deepEqual(handler.messages, ['1@x.org,2@x.org,3@x.org|body\r\n']);
  c.close();
});

test('slow async MAIL and RCPT with the whole transaction, body included, in one write', async () => {
  const events: string[] = [];
  const handler = slowHandler(events, { 'a@x.org': 40, '1@x.org': 25 });
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  c.send('MAIL FROM:<a@x.org>\r\nRCPT TO:<1@x.org>\r\nDATA\r\nline 1\r\n..dot\r\n.\r\nNOOP\r\n');
  const got: string[] = [];
  for (let i = 0; i < 5; i++) got.push((await c.reply()).lines[0]!.slice(0, 3));
  assert.deepEqual(got, ['250', '250', '354', '250', '250']);
  assert.ok(await c.noReplyWithin(50), 'no extra reply');
  assert.deepEqual(handler.messages, ['1@x.org|line 1\r\n.dot\r\n']);
  c.close();
});

test('pipelined input trickling in byte by byte while hooks are pending: still in order, once each', async () => {
  const events: string[] = [];
  const handler = slowHandler(events, {});
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  const input = Buffer.from(
    'MAIL FROM:<a@x.org>\r\nRCPT TO:<1@x.org>\r\nRCPT TO:<bad@x.org>\r\nRCPT TO:<3@x.org>\r\nNOOP\r\nDATA\r\n',
  );
  for (const byte of input) {
    c.send(Buffer.from([byte]));
    if (byte === 0x0a) await delay(1);
  }
  const got: string[] = [];
  for (let i = 0; i < 6; i++) got.push((await c.reply()).lines[0]!.slice(0, 3));
  assert.deepEqual(got, ['250', '250', '550', '250', '250', '354']);
  c.send('b');
  c.send('ody\r');
  c.send('\n.');
  c.send('\r\nNOOP\r\n');
  assert.equal((await c.reply()).code, 250);
  assert.equal((await c.reply()).code, 250);
  assert.ok(await c.noReplyWithin(50));
  assert.deepEqual(handler.messages, ['1@x.org,3@x.org|body\r\n']);
  c.close();
});

// ---- hooks that never answer -----------------------------------------------------------------

test('a hook that never resolves, then the client closing, does not hurt the server', async () => {
  const recorder = new Recorder();
  let hung = 0;
  const handler: Handler = {
    handleMAIL(_s, _session, _env, address) {
      if (address === 'hang@x.org') {
        hung++;
        return new Promise<string>(() => {});
      }
      return '250 OK';
    },
    handleDATA: recorder.handleDATA.bind(recorder),
  };
  await using server = await startServer(handler, { stopTimeout: 200 });
  const stuck = await greeted(server.port);
  stuck.send('MAIL FROM:<hang@x.org>\r\nNOOP\r\n');
  assert.ok(await waitFor(() => hung === 1), 'the hook was called');
  assert.ok(await stuck.noReplyWithin(100), 'no reply while the hook is pending');
  stuck.close();
  await delay(20);
  // Another client is served as usual.
  const c = await greeted(server.port);
  expectCode(await sendMessage(c, 'a@b.org', ['c@d.org'], 'still here\r\n'), 250);
  await expect(c, 'QUIT', 221);
  await c.waitClosed();
  assert.equal(recorder.messages.length, 1);
  // And a stuck connection left open does not keep stop() waiting forever.
  const stuck2 = await greeted(server.port);
  stuck2.send('MAIL FROM:<hang@x.org>\r\n');
  assert.ok(await waitFor(() => hung === 2), 'the hook was called again');
  let timer: NodeJS.Timeout | undefined;
  const stopped = await Promise.race([
    server.stop().then(() => true),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 4000))),
  ]);
  clearTimeout(timer);
  assert.ok(stopped, 'stop() finished while a hook was pending');
  await stuck2.waitClosed(2000);
});

test('a client that vanishes while a hook is pending: the commands it pipelined after it never run', async () => {
  const calls: string[] = [];
  let release: (() => void) | null = null;
  const handler: Handler = {
    handleMAIL(_s, _session, _env, address) {
      calls.push(`MAIL ${address}`);
      return new Promise<string>((resolve) => (release = () => resolve('250 OK')));
    },
    handleRCPT(_s, _session, _env, address) {
      calls.push(`RCPT ${address}`);
      return '250 OK';
    },
    handleDATA() {
      calls.push('DATA');
      return '250 OK';
    },
  };
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  c.send('MAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\nbody\r\n.\r\n');
  assert.ok(await waitFor(() => release !== null), 'handleMAIL was called');
  c.close();
  await delay(30);
  release!();
  await delay(30);
  assert.deepEqual(calls, ['MAIL a@b.org']);
  // The server is fine.
  const d = await greeted(server.port);
  await expect(d, 'NOOP', 250);
  d.close();
});

test('a client that vanishes in the middle of a body delivers nothing', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  await expect(c, 'MAIL FROM:<a@b.org>', 250);
  await expect(c, 'RCPT TO:<c@d.org>', 250);
  await expect(c, 'DATA', 354);
  c.send('Subject: half\r\n\r\nhalf a message\r\n');
  await delay(20);
  c.close();
  await delay(30);
  assert.equal(handler.messages.length, 0);
  const d = await greeted(server.port);
  expectCode(await sendMessage(d, 'a@b.org', ['c@d.org'], 'whole\r\n'), 250);
  assert.equal(handler.messages.length, 1);
  d.close();
});

for (const mode of MODES) {
  test(`a hook (${mode}) that calls server.close() still has its reply sent, then the connection closes`, async () => {
    const handler: Handler = {
      handleMAIL(server) {
        server.close();
        return later(mode, '421 4.7.0 go away');
      },
    };
    await using server = await startServer(handler, { logger: new MemoryLogger() });
    const c = await greeted(server.port);
    c.line('MAIL FROM:<a@b.org>');
    let reply: SMTPReply | null = null;
    try {
      reply = await c.reply(2000);
    } catch (error) {
      assert.fail(`no reply before the close: ${(error as Error).message}`);
    }
    assert.deepEqual(reply.lines, ['421 4.7.0 go away']);
    await c.waitClosed(2000);
  });
}

test('a handleQUIT that calls server.close() still has its 221 sent', async () => {
  const handler: Handler = {
    handleQUIT(server) {
      server.close();
      return '221 2.0.0 so long';
    },
  };
  await using server = await startServer(handler, { logger: new MemoryLogger() });
  const c = await greeted(server.port);
  c.line('QUIT');
  let reply: SMTPReply | null = null;
  try {
    reply = await c.reply(2000);
  } catch (error) {
    assert.fail(`no 221 before the close: ${(error as Error).message}`);
  }
  assert.deepEqual(reply.lines, ['221 2.0.0 so long']);
  await c.waitClosed(2000);
});

test('handleRCPT refusing one domain across many messages: refusals between successes never hit the error limit', async () => {
  // DESIGN.md §3 limits "unknown or failed commands in a row"; a list server delivering to a few
  // bad addresses per message over one connection makes no errors in a row.
  class Refusing extends Recorder {
    handleRCPT(_s: SMTPServer, _session: Session, _env: Envelope, address: string): string {
      return address.endsWith('@blocked.org') ? '550 5.7.1 not here' : '250 OK';
    }
  }
  const handler = new Refusing();
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  const N = 25; // over the default maxErrors (20)
  for (let i = 0; i < N; i++) {
    await expect(c, `MAIL FROM:<list@b.org>`, 250);
    await expect(c, `RCPT TO:<ok${i}@a.org>`, 250);
    const r = await c.cmd(`RCPT TO:<bad${i}@blocked.org>`);
    assert.equal(r.text, '550 5.7.1 not here', `message ${i}: ${r.text}`);
    await expect(c, 'DATA', 354);
    c.send(`m${i}\r\n.\r\n`);
    expectCode(await c.reply(), 250, `message ${i}`);
  }
  assert.equal(handler.messages.length, N);
  assert.deepEqual(handler.messages[N - 1]!.rcptTos, [`ok${N - 1}@a.org`]);
  c.close();
});
