/**
 * DSN (RFC 3461) in the engine: enableDSN advertises DSN and types RET, ENVID, NOTIFY and ORCPT;
 * bad values get 501, misplaced ones 555; without enableDSN they stay 555, as before.
 * acceptUnknownParameters hands unknown parameters to the handler.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Handler } from '../src/handler.js';
import type { MailOptions, RcptOptions } from '../src/session.js';
import { greeted, startServer } from './helpers.js';
import { ehloKeywords } from './tls-util.js';

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

function recording(): Handler & { mail: MailOptions[]; rcpt: RcptOptions[] } {
  const mail: MailOptions[] = [];
  const rcpt: RcptOptions[] = [];
  return {
    mail,
    rcpt,
    handleMAIL(_s, _session, envelope, address, options) {
      mail.push(options);
      envelope.mailFrom = address;
      return '250 2.1.0 OK';
    },
    handleRCPT(_s, _session, envelope, address, options) {
      rcpt.push(options);
      envelope.rcptTos.push(address);
      envelope.rcptOptions.push(options);
      return '250 2.1.5 OK';
    },
  };
}

describe('DSN in the engine', () => {
  test('EHLO: DSN right after ENHANCEDSTATUSCODES, the others in their order, only with enableDSN', async () => {
    await using plain = await startServer(recording(), { logger: quiet });
    await using dsn = await startServer(recording(), { logger: quiet, enableDSN: true });
    const a = await greeted(plain.port);
    const b = await greeted(dsn.port);
    try {
      const before = ehloKeywords(await a.cmd('EHLO x.example'));
      const after = ehloKeywords(await b.cmd('EHLO x.example'));
      assert.ok(!before.includes('DSN'));
      const at = before.indexOf('ENHANCEDSTATUSCODES') + 1;
      assert.deepEqual(after, [...before.slice(0, at), 'DSN', ...before.slice(at)]);
    } finally {
      a.close();
      b.close();
    }
  });

  test('RET, ENVID, NOTIFY and ORCPT come typed to the hooks and the envelope', async () => {
    const h = recording();
    await using s = await startServer(h, { logger: quiet, enableDSN: true });
    const c = await greeted(s.port);
    try {
      assert.equal((await c.cmd('MAIL FROM:<a@example.com> RET=hdrs ENVID=QQ+2Bx SIZE=10')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<b@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+40example.org')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<c@example.com> NOTIFY=never')).code, 250);
      assert.deepEqual(h.mail[0], { ret: 'HDRS', envid: 'QQ+x', size: 10 });
      assert.deepEqual(h.rcpt[0], { notify: ['SUCCESS', 'DELAY'], orcpt: { addrType: 'rfc822', address: 'b@example.org', encoded: 'b+40example.org' } });
      assert.deepEqual(h.rcpt[1], { notify: 'NEVER' });
    } finally {
      c.close();
    }
  });

  test('attacks: malformed xtext, oversized ENVID, NEVER with SUCCESS, duplicates, misplaced parameters', async () => {
    const h = recording();
    await using s = await startServer(h, { logger: quiet, enableDSN: true, maxErrors: 100 });
    const c = await greeted(s.port);
    try {
      const mail: Array<[string, number]> = [
        ['ENVID=ab+zz', 501], // not hex after +
        ['ENVID=ab+4', 501], // truncated hexchar
        ['ENVID=a+0Ab', 501], // lower-case hex is not xtext, and a control character besides
        ['ENVID=', 501],
        [`ENVID=${'x'.repeat(101)}`, 501],
        ['RET=BOTH', 501],
        ['RET', 501],
        ['RET=FULL RET=HDRS', 501],
        ['ENVID=a ENVID=b', 501],
        ['NOTIFY=SUCCESS', 555],
        ['ORCPT=rfc822;a@b.example', 555],
      ];
      for (const [params, code] of mail) {
        const r = await c.cmd(`MAIL FROM:<a@example.com> ${params}`);
        assert.equal(r.code, code, `${params}: ${r.text}`);
        assert.match(r.text, /^5\d\d 5\.5\.4 /);
      }
      assert.equal(h.mail.length, 0, 'no refused MAIL reached the handler');
      assert.equal((await c.cmd(`MAIL FROM:<a@example.com> ENVID=${'x'.repeat(100)}`)).code, 250, 'ENVID of 100 characters');
      const rcpt: Array<[string, number]> = [
        ['NOTIFY=NEVER,SUCCESS', 501],
        ['NOTIFY=SUCCESS,SUCCESS', 501],
        ['NOTIFY=', 501],
        ['NOTIFY=SOMETIMES', 501],
        ['NOTIFY=DELAY NOTIFY=FAILURE', 501],
        ['ORCPT=rfc822', 501],
        ['ORCPT=;a@b.example', 501],
        ['ORCPT=rfc822;not-an-address', 501],
        ['ORCPT=rfc822;a+ZZb.example', 501],
        ['ORCPT=rfc822;a@b.example ORCPT=rfc822;a@b.example', 501],
        ['RET=FULL', 555],
        ['ENVID=x', 555],
      ];
      for (const [params, code] of rcpt) {
        const r = await c.cmd(`RCPT TO:<b@example.com> ${params}`);
        assert.equal(r.code, code, `${params}: ${r.text}`);
      }
      assert.equal(h.rcpt.length, 0, 'no refused RCPT reached the handler');
    } finally {
      c.close();
    }
  });

  test('without enableDSN the DSN parameters stay 555', async () => {
    const h = recording();
    await using s = await startServer(h, { logger: quiet });
    const c = await greeted(s.port);
    try {
      assert.equal((await c.cmd('MAIL FROM:<a@example.com> RET=FULL')).code, 555);
      assert.equal((await c.cmd('MAIL FROM:<a@example.com> ENVID=x')).code, 555);
      assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<b@example.com> NOTIFY=NEVER')).code, 555);
      assert.equal((await c.cmd('RCPT TO:<b@example.com> ORCPT=rfc822;b@example.com')).code, 555);
    } finally {
      c.close();
    }
  });

  test('acceptUnknownParameters: unknown parameters reach the handler raw; DSN ones stay raw without enableDSN', async () => {
    const h = recording();
    await using s = await startServer(h, { logger: quiet, acceptUnknownParameters: true });
    const c = await greeted(s.port);
    try {
      assert.equal((await c.cmd('MAIL FROM:<a@example.com> XFOO=bar RET=FULL XFLAG')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<b@example.com> NOTIFY=NEVER XBAR=1')).code, 250);
      assert.deepEqual(h.mail[0], { unknown: { XFOO: 'bar', RET: 'FULL', XFLAG: true } });
      assert.deepEqual(h.rcpt[0], { unknown: { NOTIFY: 'NEVER', XBAR: '1' } });
    } finally {
      c.close();
    }
  });

  test('enableDSN with acceptUnknownParameters: DSN typed and checked, the rest unknown', async () => {
    const h = recording();
    await using s = await startServer(h, { logger: quiet, enableDSN: true, acceptUnknownParameters: true });
    const c = await greeted(s.port);
    try {
      assert.equal((await c.cmd('MAIL FROM:<a@example.com> RET=BOTH XFOO=1')).code, 501);
      assert.equal((await c.cmd('MAIL FROM:<a@example.com> RET=FULL XFOO=1')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<b@example.com> NOTIFY=FAILURE XBAR')).code, 250);
      assert.deepEqual(h.mail[0], { ret: 'FULL', unknown: { XFOO: '1' } });
      assert.deepEqual(h.rcpt[0], { notify: ['FAILURE'], unknown: { XBAR: true } });
    } finally {
      c.close();
    }
  });

  test('the longer MAIL and RCPT lines DSN allows (RFC 3461 §4) get through', async () => {
    const h = recording();
    await using s = await startServer(h, { logger: quiet, enableDSN: true });
    const c = await greeted(s.port);
    try {
      // 100 characters of ENVID, each encoded as +XX: 300 octets of parameter.
      assert.equal((await c.cmd(`MAIL FROM:<${'a'.repeat(64)}@${'d'.repeat(60)}.${'e'.repeat(60)}.example> RET=HDRS ENVID=${'+2B'.repeat(100)}`)).code, 250);
      const local = 'r'.repeat(60);
      const r = await c.cmd(`RCPT TO:<${local}@example.com> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;${local}+40${'d'.repeat(60)}.${'e'.repeat(60)}.${'f'.repeat(60)}.example`);
      assert.equal(r.code, 250, r.text);
    } finally {
      c.close();
    }
  });
});
