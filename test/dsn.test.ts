import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { Rng } from './rng.js';
import { parseParams } from '../src/parse.js';
import {
  DsnError,
  MAX_ENVID,
  MAX_ORCPT,
  decodeXtext,
  decodeXtextBytes,
  encodeXtext,
  formatMailDsn,
  formatRcptDsn,
  isDsnKeyword,
  parseEnvid,
  parseMailDsn,
  parseNotify,
  parseOrcpt,
  parseRcptDsn,
  parseRet,
} from '../src/dsn.js';

/** Asserts that `fn` throws a DsnError with that code, and that its reply is a well-formed line. */
function refuses(fn: () => unknown, code: 501 | 555, label = ''): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DsnError, label);
    assert.equal(e.code, code, label);
    assert.match(e.reply, /^5[05][15] 5\.5\.4 Error: [\x20-\x7e]+$/, label);
    return true;
  });
}

describe('xtext (RFC 3461 §4)', () => {
  it('decodes xchars and +XX hexchars', () => {
    assert.equal(decodeXtext('abc'), 'abc');
    assert.equal(decodeXtext('a+2Bb+3Dc'), 'a+b=c');
    assert.equal(decodeXtext('+41'), 'A', 'a printable character may be escaped too');
    assert.equal(decodeXtext(''), '');
    assert.deepEqual(decodeXtextBytes('+00+FF'), Buffer.from([0, 255]));
  });
  it('refuses what is no xtext', () => {
    for (const bad of ['+', '+4', '+4g', '+2b', 'a=b', 'a b', 'é', '\x7f', '\t', '++41', 'a+']) {
      assert.equal(decodeXtextBytes(bad), null, JSON.stringify(bad));
    }
    assert.equal(decodeXtext('+C3'), null, 'invalid UTF-8 is refused by the string form');
  });
  it('encodes only what must be escaped, and round-trips', () => {
    assert.equal(encodeXtext('a+b=c d'), 'a+2Bb+3Dc+20d');
    assert.equal(encodeXtext('é'), '+C3+A9');
    assert.equal(encodeXtext(Buffer.from([0, 0x7f])), '+00+7F');
    for (const s of ['', 'plain', '+=+=', 'tab\there', 'ünïcødé', '\r\n.\r\n']) assert.equal(decodeXtext(encodeXtext(s)), s);
  });
});

describe('RET (§4.3)', () => {
  it('accepts FULL and HDRS in any case', () => {
    assert.equal(parseRet('FULL'), 'FULL');
    assert.equal(parseRet('hdrs'), 'HDRS');
  });
  it('refuses anything else with 501', () => {
    for (const v of [null, '', 'BODY', 'FULL,HDRS', 'FULLX']) refuses(() => parseRet(v), 501, String(v));
  });
});

describe('ENVID (§4.4)', () => {
  it('decodes the xtext', () => {
    assert.equal(parseEnvid('QQ314159'), 'QQ314159');
    assert.equal(parseEnvid('id+2Bwith+20space'), 'id+with space');
    assert.equal(parseEnvid('x'.repeat(MAX_ENVID)), 'x'.repeat(MAX_ENVID));
  });
  it('attack: oversized, empty, malformed, or escapes of forbidden characters', () => {
    refuses(() => parseEnvid('x'.repeat(MAX_ENVID + 1)), 501, 'oversized');
    refuses(() => parseEnvid('+41'.repeat(MAX_ENVID + 1)), 501, 'oversized once decoded');
    refuses(() => parseEnvid(null), 501);
    refuses(() => parseEnvid(''), 501);
    for (const v of ['+0D+0A', 'a+00b', '+7F', '+09', '+C3+A9', '+1B[31m', 'a+', '+zz', 'a=b']) {
      refuses(() => parseEnvid(v), 501, v);
    }
  });
  it('counts the decoded length: 100 escaped characters fit', () => {
    assert.equal(parseEnvid('+41'.repeat(MAX_ENVID)), 'A'.repeat(MAX_ENVID));
  });
});

describe('NOTIFY (§4.1)', () => {
  it('accepts NEVER alone, or a list of conditions in the order given', () => {
    assert.equal(parseNotify('NEVER'), 'NEVER');
    assert.equal(parseNotify('never'), 'NEVER');
    assert.deepEqual(parseNotify('SUCCESS'), ['SUCCESS']);
    assert.deepEqual(parseNotify('failure,Delay'), ['FAILURE', 'DELAY']);
    assert.deepEqual(parseNotify('DELAY,SUCCESS,FAILURE'), ['DELAY', 'SUCCESS', 'FAILURE']);
  });
  it('attack: NEVER combined, duplicates, empty items, unknown words', () => {
    for (const v of [null, '', 'NEVER,SUCCESS', 'SUCCESS,NEVER', 'SUCCESS,SUCCESS', 'SUCCESS,', ',FAILURE', 'ALWAYS', 'SUCCESS;FAILURE', 'NEVER,NEVER']) {
      refuses(() => parseNotify(v), 501, String(v));
    }
  });
});

describe('ORCPT (§4.2, RFC 6533)', () => {
  it('parses rfc822 addresses, decoding the xtext', () => {
    assert.deepEqual(parseOrcpt('rfc822;user@example.com'), { addrType: 'rfc822', address: 'user@example.com', encoded: 'user@example.com' });
    assert.equal(parseOrcpt('RFC822;a+2Bb@example.com').address, 'a+b@example.com');
    assert.equal(parseOrcpt('rfc822;Postmaster').address, 'Postmaster');
  });
  it('keeps other address types as printable text for a relay', () => {
    assert.deepEqual(parseOrcpt('x400;+2FC+3DUS+2F'), { addrType: 'x400', address: '/C=US/', encoded: '+2FC+3DUS+2F' });
  });
  it('parses the utf-8 type: \\x{...} escapes, and raw UTF-8 only with SMTPUTF8', () => {
    assert.equal(parseOrcpt('utf-8;j\\x{F6}rg@example.com').address, 'jörg@example.com');
    assert.equal(parseOrcpt('utf-8;\\x{1F600}@example.com').address, '😀@example.com');
    assert.equal(parseOrcpt('utf-8;jörg@example.com', { utf8: true }).address, 'jörg@example.com');
    refuses(() => parseOrcpt('utf-8;jörg@example.com'), 501, 'raw UTF-8 without SMTPUTF8');
  });
  it('attack: malformed types, addresses and escapes', () => {
    const bads = [
      null,
      '',
      'rfc822',
      ';user@example.com',
      'rfc822;',
      'rfc 822;a@b.c',
      'rfc822;not an address',
      'rfc822;a@b.c+0D+0ARCPT TO:<x@y>',
      'rfc822;<a@b.c>',
      'rfc822;@relay.org:a@b.c',
      'rfc822;a+2',
      'x400;+00',
      'utf-8;\\x{D800}@example.com',
      'utf-8;\\x{110000}@example.com',
      'utf-8;\\x{0041}@example.com',
      'utf-8;a\\x{0A}b@example.com',
      'utf-8;a\\x{}@example.com',
      'utf-8;a\\b@example.com',
      'utf-8;a+2Bb@example.com',
    ];
    for (const v of bads) refuses(() => parseOrcpt(v), 501, String(v));
    refuses(() => parseOrcpt(`x400;${'a'.repeat(MAX_ORCPT + 1)}`), 501, 'oversized');
  });
});

describe('parseMailDsn / parseRcptDsn', () => {
  const params = (text: string) => parseParams(text, false)!;
  it('picks the DSN parameters out of the parsed list and leaves the rest', () => {
    assert.deepEqual(parseMailDsn(params('SIZE=10 RET=HDRS ENVID=abc+2Bd')), { ret: 'HDRS', envid: 'abc+d' });
    assert.deepEqual(parseRcptDsn(params('NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b.c')), {
      notify: ['SUCCESS', 'FAILURE'],
      orcpt: { addrType: 'rfc822', address: 'a@b.c', encoded: 'a@b.c' },
    });
    assert.deepEqual(parseMailDsn([]), {});
    assert.ok(isDsnKeyword('MAIL', 'ret') && isDsnKeyword('RCPT', 'ORCPT') && !isDsnKeyword('MAIL', 'NOTIFY'));
  });
  it('attack: a parameter on the wrong command is 555, one given twice 501', () => {
    refuses(() => parseMailDsn(params('NOTIFY=NEVER')), 555);
    refuses(() => parseMailDsn(params('ORCPT=rfc822;a@b.c')), 555);
    refuses(() => parseRcptDsn(params('RET=FULL')), 555);
    refuses(() => parseRcptDsn(params('ENVID=x')), 555);
    // parseParams already refuses a repeated keyword; a list built by hand still gets 501.
    refuses(() => parseMailDsn([{ keyword: 'RET', value: 'FULL' }, { keyword: 'RET', value: 'HDRS' }]), 501);
    refuses(() => parseMailDsn([{ keyword: 'ENVID', value: 'a' }, { keyword: 'envid', value: 'b' }]), 501);
    refuses(() => parseRcptDsn([{ keyword: 'NOTIFY', value: 'NEVER' }, { keyword: 'NOTIFY', value: 'NEVER' }]), 501);
    refuses(() => parseRcptDsn([{ keyword: 'ORCPT', value: 'rfc822;a@b.c' }, { keyword: 'ORCPT', value: 'rfc822;a@b.c' }]), 501);
  });
  it('formats what it parsed back to wire parameters', () => {
    assert.equal(formatMailDsn({ ret: 'FULL', envid: 'a b+c' }), ' RET=FULL ENVID=a+20b+2Bc');
    assert.equal(formatMailDsn({}), '');
    const rcpt = parseRcptDsn(params('NOTIFY=delay,failure ORCPT=rfc822;A+2BB@b.c'));
    assert.equal(formatRcptDsn(rcpt), ' NOTIFY=DELAY,FAILURE ORCPT=rfc822;A+2BB@b.c');
    assert.equal(formatRcptDsn({ notify: 'NEVER' }), ' NOTIFY=NEVER');
  });
});

describe('fuzz (seeded)', () => {
  const alphabet = 'aZ09+=;,@.\\{}x-_ ~!\x00\x7féSUCCESSNEVERFULLrfc822utf-8';
  it('never throws anything but DsnError; what passes is within the grammar; round trips hold', () => {
    const rng = new Rng(17_3461);
    for (let i = 0; i < 3000; i++) {
      const s = rng.string(alphabet, rng.int(0, 40));
      for (const [name, fn] of [
        ['RET', () => parseRet(s)],
        ['ENVID', () => parseEnvid(s)],
        ['NOTIFY', () => parseNotify(s)],
        ['ORCPT', () => parseOrcpt(s, { utf8: rng.next() < 0.5 })],
      ] as const) {
        try {
          const v = fn();
          if (name === 'ENVID') {
            assert.match(v as string, /^[\x20-\x7e]{0,100}$/, s);
            assert.equal(parseEnvid(encodeXtext(v as string)), v);
          }
          if (name === 'ORCPT') assert.ok(!/[\x00-\x1f\x7f]/.test((v as { address: string }).address), s);
        } catch (e) {
          assert.ok(e instanceof DsnError, `${name} ${JSON.stringify(s)}: ${String(e)}`);
        }
      }
      const bytes = rng.bytes(rng.int(0, 30));
      assert.deepEqual(decodeXtextBytes(encodeXtext(bytes)), bytes);
    }
  });
});
