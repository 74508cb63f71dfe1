/**
 * The Proxy handler and DSN (RFC 3461): the parameters go on to an upstream that offers DSN; to
 * one that does not, they are left off and NOTIFY=SUCCESS recipients get a "relayed" DSN. The
 * upstream is a second tsmtpd that captures every envelope, with DSN in its EHLO or not.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Proxy } from '../src/handlers/proxy.js';
import { mailDsnOf, notifyRelayed, rcptDsnOf, relayedReport } from '../src/handlers/dsn-relay.js';
import type { Handler } from '../src/handler.js';
import type { Upstream } from '../src/handlers/upstream.js';
import { Envelope } from '../src/session.js';
import { greeted, startServer } from './helpers.js';

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

interface Captured {
  mailFrom: string | null;
  mailParams: string[];
  rcptTos: string[];
  rcptOptions: Array<Record<string, string | true>>;
  content: string;
}

/** Captures each message; advertises DSN when asked (and then takes its parameters as unknown ones). */
function capturing(dsn: boolean): Handler & { got: Captured[] } {
  const got: Captured[] = [];
  return {
    got,
    handleEHLO(_s, _session, _e, _h, responses) {
      return dsn ? [...responses, 'DSN'] : responses;
    },
    handleDATA(_s, _session, envelope) {
      got.push({
        mailFrom: envelope.mailFrom,
        mailParams: [...envelope.mailParams],
        rcptTos: [...envelope.rcptTos],
        rcptOptions: envelope.rcptOptions.map((o) => ({ ...o.unknown })),
        content: envelope.originalContent!.toString(),
      });
      return '250 2.0.0 captured';
    },
  };
}

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 25));
  assert.ok(check(), `timed out waiting for ${what}`);
}

/** The Proxy's own server takes the DSN parameters raw (acceptUnknownParameters) or typed (enableDSN). */
async function relay(dsn: boolean, commands: string[], typed = false): Promise<{ got: Captured[]; replies: string[] }> {
  const upstream = capturing(dsn);
  await using up = await startServer(upstream, { logger: quiet, acceptUnknownParameters: dsn });
  await using proxy = await startServer(new Proxy('127.0.0.1', up.port, { timeout: 5000 }), {
    logger: quiet,
    ...(typed ? { enableDSN: true } : { acceptUnknownParameters: true }),
  });
  const c = await greeted(proxy.port);
  const replies: string[] = [];
  try {
    for (const cmd of commands) replies.push((await c.cmd(cmd)).text);
    assert.equal((await c.cmd('DATA')).code, 354);
    c.send('Subject: dsn test\r\nFrom: a@example.com\r\n\r\nbody\r\n.\r\n');
    replies.push((await c.reply()).text);
    // The relayed notice, when there is one, follows our client's reply.
    if (!dsn && commands.some((x) => /NOTIFY=[A-Z,]*SUCCESS/.test(x)) && !commands[0]!.includes('<>')) await until(() => upstream.got.length === 2, 'the relayed DSN');
    await c.cmd('QUIT');
  } finally {
    c.close();
  }
  return { got: upstream.got, replies };
}

describe('Proxy: DSN parameters to an upstream that offers DSN', () => {
  test('RET, ENVID, NOTIFY and ORCPT go on unchanged, and no notice is made', async () => {
    const { got, replies } = await relay(true, [
      'MAIL FROM:<a@example.com> RET=HDRS ENVID=QQ+2B314',
      'RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bold@example.net',
      'RCPT TO:<c@example.net> NOTIFY=NEVER',
      'RCPT TO:<d@example.net>',
    ]);
    assert.ok(replies.every((r) => r.startsWith('250')), replies.join(' | '));
    assert.equal(got.length, 1);
    assert.deepEqual(got[0]!.mailParams, ['RET=HDRS', 'ENVID=QQ+2B314']);
    assert.deepEqual(got[0]!.rcptOptions, [{ NOTIFY: 'SUCCESS,FAILURE', ORCPT: 'rfc822;b+2Bold@example.net' }, { NOTIFY: 'NEVER' }, {}]);
  });
  test('typed by the engine (enableDSN): they go on the same', async () => {
    const { got, replies } = await relay(
      true,
      ['MAIL FROM:<a@example.com> RET=HDRS ENVID=QQ+2B314', 'RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bold@example.net', 'RCPT TO:<c@example.net> NOTIFY=NEVER'],
      true,
    );
    assert.ok(replies.every((r) => r.startsWith('250')), replies.join(' | '));
    assert.deepEqual(got[0]!.mailParams, ['RET=HDRS', 'ENVID=QQ+2B314']);
    assert.deepEqual(got[0]!.rcptOptions, [{ NOTIFY: 'SUCCESS,FAILURE', ORCPT: 'rfc822;b+2Bold@example.net' }, { NOTIFY: 'NEVER' }]);
  });
  test('attack: a malformed raw value is not relayed', async () => {
    const { got } = await relay(true, ['MAIL FROM:<a@example.com> ENVID=+0D+0Ax RET=ALL', 'RCPT TO:<b@example.net> NOTIFY=NEVER,SUCCESS ORCPT=rfc822;nope']);
    assert.deepEqual(got[0]!.mailParams, []);
    assert.deepEqual(got[0]!.rcptOptions, [{}]);
  });
});

describe('Proxy: DSN parameters to an upstream without DSN', () => {
  test('the parameters are left off; NOTIFY=SUCCESS recipients get a relayed DSN from the null sender', async () => {
    const { got, replies } = await relay(false, [
      'MAIL FROM:<a@example.com> RET=HDRS ENVID=env+2B1',
      'RCPT TO:<b@example.net> NOTIFY=SUCCESS ORCPT=rfc822;orig@example.net',
      'RCPT TO:<c@example.net> NOTIFY=FAILURE',
    ]);
    assert.ok(replies.every((r) => r.startsWith('250')), replies.join(' | '));
    assert.equal(got.length, 2);
    assert.deepEqual(got[0]!.mailParams, [], 'the upstream (which 555s unknown parameters) accepted: nothing was added');
    const notice = got[1]!;
    assert.equal(notice.mailFrom, '');
    assert.deepEqual(notice.rcptTos, ['a@example.com']);
    const text = notice.content;
    assert.match(text, /^Content-Type: multipart\/report; report-type=delivery-status;/m);
    assert.match(text, /^Auto-Submitted: auto-replied\r$/m);
    assert.match(text, /^Original-Envelope-Id: env\+1\r$/m);
    assert.match(text, /^Original-Recipient: rfc822;orig@example\.net\r\nFinal-Recipient: rfc822;b@example\.net\r\nAction: relayed\r\nStatus: 2\.0\.0\r$/m);
    assert.doesNotMatch(text, /c@example\.net/, 'NOTIFY=FAILURE asked for no success notice');
    assert.match(text, /^Content-Type: text\/rfc822-headers\r\n\r\nX-Peer: [^\r]*\r\nSubject: dsn test\r\n/m);
    assert.doesNotMatch(text, /^body\r$/m, 'RET=HDRS returns the headers only');
  });
  test('typed by the engine (enableDSN): the relayed DSN all the same', async () => {
    const { got } = await relay(false, ['MAIL FROM:<a@example.com> ENVID=env+2B1', 'RCPT TO:<b@example.net> NOTIFY=SUCCESS'], true);
    assert.equal(got.length, 2);
    assert.deepEqual(got[0]!.mailParams, []);
    assert.match(got[1]!.content, /^Original-Envelope-Id: env\+1\r$/m);
  });
  test('no NOTIFY=SUCCESS, no notice', async () => {
    const { got } = await relay(false, ['MAIL FROM:<a@example.com>', 'RCPT TO:<b@example.net> NOTIFY=DELAY,FAILURE']);
    assert.equal(got.length, 1);
  });
});

describe('dsn-relay: parameters typed or raw, and the report', () => {
  test('reads typed options as the engine will give them, and raw strings as it does today', () => {
    assert.deepEqual(mailDsnOf({ ret: 'FULL', envid: 'x y' }), { ret: 'FULL', envid: 'x y' });
    assert.deepEqual(mailDsnOf({ RET: 'hdrs', ENVID: 'x+20y' }), { ret: 'HDRS', envid: 'x y' });
    const orcpt = { addrType: 'rfc822', address: 'o@x.y', encoded: 'o@x.y' };
    assert.deepEqual(rcptDsnOf({ notify: ['SUCCESS'], orcpt }, false), { notify: ['SUCCESS'], orcpt });
    assert.deepEqual(rcptDsnOf({ NOTIFY: 'never', ORCPT: 'rfc822;o@x.y' }, false), { notify: 'NEVER', orcpt });
    assert.deepEqual(rcptDsnOf(undefined, false), {});
  });
  test('RET=FULL returns the whole message; header fields carry no line breaks', () => {
    const report = relayedReport({
      reportingMta: 'mx.test',
      remoteMta: 'up\r\nInjected: 1',
      to: 'a@example.com',
      mail: { ret: 'FULL' },
      recipients: [{ address: 'b@example.net' }],
      diagnostic: '250 ok',
      message: Buffer.from('Subject: s\r\n\r\nthe body\r\n'),
      arrival: new Date(0),
    }).toString();
    assert.match(report, /^Content-Type: message\/rfc822\r\n\r\nSubject: s\r\n\r\nthe body\r\n\r\n--=_dsn_[0-9a-f]+--\r\n$/m);
    assert.doesNotMatch(report, /^Injected:/m);
  });
  test('the null sender gets no notice; a failing upstream costs nothing', async () => {
    let connects = 0;
    const envelope = new Envelope();
    envelope.rcptTos = ['b@example.net'];
    envelope.rcptOptions = [{ unknown: { NOTIFY: 'SUCCESS' } }];
    const base = { name: 'mx.test', remoteMta: 'up', envelope, refusals: [null], utf8: false, reply: '250 ok', sent: [Buffer.from('S: x\r\n\r\n')] };
    const connect = (): Promise<Upstream> => {
      connects++;
      return Promise.reject(new Error('unreachable'));
    };
    envelope.mailFrom = '';
    notifyRelayed({ ...base, connect });
    assert.equal(connects, 0);
    envelope.mailFrom = 'a@example.com';
    notifyRelayed({ ...base, connect });
    assert.equal(connects, 1);
    await new Promise((r) => setImmediate(r));
  });
});
