import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { Rng } from './rng.js';
import {
  afterKeyword,
  heloName,
  parseCommand,
  parseParams,
  parsePath,
  parseSize,
  type ParsedPath,
} from '../src/parse.js';

const MAIL = { allowNull: true, allowPostmaster: false, utf8: false };
const RCPT = { allowNull: false, allowPostmaster: true, utf8: false };
const MAIL8 = { ...MAIL, utf8: true };
const RCPT8 = { ...RCPT, utf8: true };

function ok(arg: string, address: string, params = '', opts = MAIL): void {
  assert.deepEqual(parsePath(arg, opts), { address, params } satisfies ParsedPath, arg);
}
function bad(arg: string, opts = MAIL, error: 'syntax' | 'utf8' = 'syntax'): void {
  assert.equal(parsePath(arg, opts), error, JSON.stringify(arg));
}

describe('parsePath: well-formed paths', () => {
  it('accepts a bracketed mailbox and returns the parameters trimmed', () => {
    ok('<user@example.com>', 'user@example.com');
    ok('<user@example.com> SIZE=100 BODY=8BITMIME', 'user@example.com', 'SIZE=100 BODY=8BITMIME');
    ok('<user@example.com>   SIZE=1   ', 'user@example.com', 'SIZE=1');
    ok('<user@example.com>   ', 'user@example.com');
    ok('<first.last+tag@sub.example.co.uk>', 'first.last+tag@sub.example.co.uk');
    ok("<!#$%&'*+-/=?^_`{|}~@x.y>", "!#$%&'*+-/=?^_`{|}~@x.y");
    ok('<a@b>', 'a@b');
    ok('<A@1-2.x-y.Z9>', 'A@1-2.x-y.Z9');
  });

  it('accepts spaces after the colon, as Postfix and aiosmtpd do', () => {
    ok(' <a@b.c>', 'a@b.c');
    ok('    <a@b.c> SIZE=5', 'a@b.c', 'SIZE=5');
  });

  it('accepts an unbracketed mailbox, with parameters after a space', () => {
    ok('a@b.c', 'a@b.c');
    ok('  a@b.c', 'a@b.c');
    ok('a@b.c SIZE=10', 'a@b.c', 'SIZE=10');
    ok('a@b.c   SIZE=10  ', 'a@b.c', 'SIZE=10');
  });

  it('accepts the null path only when allowed', () => {
    ok('<>', '');
    ok('<> SIZE=10', '', 'SIZE=10');
    ok(' <>', '');
    bad('<>', RCPT);
    bad('<> SIZE=10', RCPT);
  });

  it('accepts and drops a source route', () => {
    ok('<@a.org,@b.org:user@dom.example>', 'user@dom.example');
    ok('<@a.org:user@dom.example> SIZE=1', 'user@dom.example', 'SIZE=1');
    bad('<@a.org user@dom>');
    bad('<@a.org,b.org:user@dom>');
    bad('<@:user@dom>');
    bad('<@a.org,:user@dom>');
    bad('<@a.org,@b..org:user@dom>');
    bad('<@[1.2.3.4]:user@dom>'); // A-d-l holds Domains only
    bad('<@a.org:>');
    bad('<@a.org:<>>');
  });

  it('accepts <Postmaster> without a domain only when allowed', () => {
    ok('<Postmaster>', 'Postmaster', '', RCPT);
    ok('<postmaster>', 'postmaster', '', RCPT);
    ok('<POSTMASTER> NOTIFY=NEVER', 'POSTMASTER', 'NOTIFY=NEVER', RCPT);
    ok('<Postmaster@example.com>', 'Postmaster@example.com', '', MAIL);
    bad('<Postmaster>', MAIL);
    bad('<postmistress>', RCPT);
    bad('<"Postmaster">', RCPT);
    bad('<user>', RCPT);
    bad('<user>', MAIL);
    bad('<user@>', RCPT);
    bad('<@example.com>', RCPT);
  });

  it('keeps quoted local parts as written, escapes included', () => {
    ok('<"john doe"@example.com>', '"john doe"@example.com');
    ok('<"a\\"b"@c.d>', '"a\\"b"@c.d');
    ok('<"a\\\\"@c.d>', '"a\\\\"@c.d');
    ok('<"a@b"@c.d>', '"a@b"@c.d');
    ok('<"a>b<c"@d.e> SIZE=1', '"a>b<c"@d.e', 'SIZE=1');
    ok('<""@c.d>', '""@c.d');
    ok('<"(x)"@c.d>', '"(x)"@c.d');
  });

  it('accepts address literals', () => {
    ok('<a@[1.2.3.4]>', 'a@[1.2.3.4]');
    ok('<a@[255.255.255.255]>', 'a@[255.255.255.255]');
    ok('<a@[0.0.0.0]>', 'a@[0.0.0.0]');
    ok('<a@[IPv6:::1]>', 'a@[IPv6:::1]');
    ok('<a@[IPv6:2001:db8::1]>', 'a@[IPv6:2001:db8::1]');
    ok('<a@[ipv6:2001:DB8:0:0:0:0:0:1]>', 'a@[ipv6:2001:DB8:0:0:0:0:0:1]');
    ok('<a@[IPv6:::ffff:192.0.2.1]>', 'a@[IPv6:::ffff:192.0.2.1]');
    ok('<a@[IPv6:1:2:3:4:5:6:1.2.3.4]>', 'a@[IPv6:1:2:3:4:5:6:1.2.3.4]');
    ok('<a@[IPv6:fe80::]>', 'a@[IPv6:fe80::]');
    ok('<a@[IPv6:1::2:3:4:5:6:7]>', 'a@[IPv6:1::2:3:4:5:6:7]');
    ok('<a@[x-tag:any@thing!]>', 'a@[x-tag:any@thing!]');
  });
});

describe('parsePath: refused paths', () => {
  it('refuses unbalanced and nested brackets', () => {
    for (const arg of ['<a@b', 'a@b>', '<<a@b>>', '<a@b>>', '<<a@b>', '<a<b@c>', '<a@b><c@d>',
      '<', '>', '<>>', '<<>', '<"a@b>', '<"a\\">', 'a@b<', '<a@b>X', '<a@b>SIZE=1', '<a@b>\tSIZE=1']) {
      bad(arg);
    }
  });

  it('refuses empty and blank arguments', () => {
    bad('');
    bad('   ');
    bad('', RCPT);
  });

  it('refuses NUL, CR, LF, tab and other controls inside the path', () => {
    for (const c of ['\0', '\r', '\n', '\r\n', '\t', '\x01', '\x1b', '\x7f', '\x85', '\u2028']) {
      bad(`<a${c}b@c.d>`);
      bad(`<ab@c${c}.d>`);
      bad(`<"a${c}b"@c.d>`);
      bad(`a${c}b@c.d`);
      bad(`<ab@c.d${c}>`);
      bad(`<ab@c.d${c}>`, MAIL8);
    }
    bad('<a@b.c\r\nRCPT TO:<x@y.z>>');
  });

  it('refuses whitespace outside quotes', () => {
    bad('< a@b.c>');
    bad('<a@b.c >');
    bad('<a @b.c>');
    bad('<a@ b.c>');
    bad('<a.b c@d.e>');
  });

  it('refuses mixed quoted and dot-atom local parts', () => {
    bad('<"a"b@c.d>');
    bad('<a"b"@c.d>');
    bad('<a."b"@c.d>');
    bad('<"a".b@c.d>');
    bad('<"a""b"@c.d>');
    bad('<"a"@"b"@c.d>');
  });

  it('refuses comments and RFC 5322-only forms', () => {
    bad('<(x)a@b.c>');
    bad('<a(x)@b.c>');
    bad('<a@b.c(x)>');
    bad('<a@(x)b.c>');
    bad('(x)a@b.c');
    bad('<Name <a@b.c>>');
    bad('<"quoted\\\u00e9"@b.c>', MAIL8); // quoted-pairSMTP is ASCII only, even with RFC 6531
  });

  it('refuses bad dot-strings', () => {
    bad('<.a@b.c>');
    bad('<a.@b.c>');
    bad('<a..b@c.d>');
    bad('<@b.c>');
    bad('<a@@b.c>');
    bad('<a@b@c.d>');
    bad('<a\\b@c.d>');
    bad('<a,b@c.d>');
    bad('<a[b@c.d>');
  });

  it('refuses bad domains', () => {
    for (const d of ['', '.', 'b.', '.b', 'b..c', '-b.c', 'b-.c', 'b.-c', 'b_c.d', 'b c', 'b:c',
      'b.c.', 'b!c', '[]', '[1.2.3.4', '1.2.3.4]', 'b[1.2.3.4]', '[1.2.3.4].c']) {
      bad(`<a@${d}>`);
    }
  });

  it('refuses bad IPv4 literals', () => {
    for (const ip of ['256.1.1.1', '1.2.3.256', '1.2.3', '1.2.3.4.5', '1..2.3', '1.2.3.4.',
      '1234.1.1.1', '-1.2.3.4', ' 1.2.3.4', '1.2.3.4 ', '999.999.999.999', '0x1.2.3.4']) {
      bad(`<a@[${ip}]>`);
    }
  });

  it('refuses bad IPv6 literals', () => {
    for (const ip of ['', ':', ':::', '1:::2', '1::2::3', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9',
      '1::2:3:4:5:6:7:8', '12345::1', 'g::1', ':1::2', '1::2:', '1:2:3:4:5:6:7:8:',
      '1.2.3.4', '1.2.3.4::', '::1.2.3.256', '1:2:3:4:5:6:7:1.2.3.4', 'fe80::1%eth0',
      '::1.2.3.4:5', '1:2:3:4:5:6:7:8::']) {
      bad(`<a@[IPv6:${ip}]>`);
    }
    bad('<a@[IPv6 ::1]>');
  });

  it('refuses bad general address literals', () => {
    bad('<a@[x-tag:]>');
    bad('<a@[:abc]>');
    bad('<a@[x-:abc]>');
    bad('<a@[x_y:abc]>');
    bad('<a@[x:a\\b]>');
    bad('<a@[x:a[b]>');
    bad('<a@[x:a]b]>');
    bad('<a@[x:a b]>');
    bad('<a@[abc]>');
  });

  it('enforces the RFC 5321 §4.5.3.1 lengths', () => {
    const l64 = 'l'.repeat(64);
    ok(`<${l64}@b.c>`, `${l64}@b.c`);
    bad(`<${l64}l@b.c>`);
    bad(`<"${'q'.repeat(63)}"@b.c>`); // 65 octets with the quotes
    const label63 = 'd'.repeat(63);
    ok(`<a@${label63}.c>`, `a@${label63}.c`);
    bad(`<a@${label63}d.c>`);
    // 254 octets between the brackets is the most a 256-octet path can carry
    const domain250 = `${'d'.repeat(63)}.${'d'.repeat(63)}.${'d'.repeat(63)}.${'d'.repeat(58)}`;
    assert.equal(domain250.length, 250);
    ok(`<abc@${domain250}>`, `abc@${domain250}`);
    bad(`<abcd@${domain250}>`);
    bad(`abcd@${domain250}`);
    // the source route counts too
    bad(`<@x.y:abc@${domain250}>`);
    // lengths are UTF-8 octets: 32 two-octet characters fill a 64-octet local part
    ok(`<${'é'.repeat(32)}@b.c>`, `${'é'.repeat(32)}@b.c`, '', MAIL8);
    bad(`<${'é'.repeat(32)}e@b.c>`, MAIL8);
    ok(`<a@${'é'.repeat(31)}.c>`, `a@${'é'.repeat(31)}.c`, '', MAIL8);
    bad(`<a@${'é'.repeat(32)}.c>`, MAIL8);
    // huge input is refused, not slow
    bad(`<${'a'.repeat(100_000)}@b.c>`);
    bad(`<a@${'b.'.repeat(50_000)}c>`);
    bad(`<${'"'.repeat(100_001)}@b.c>`);
    bad('<' + '\\'.repeat(100_000));
    bad('<' + '<'.repeat(100_000));
  });
});

describe('parsePath: UTF-8 (RFC 6531)', () => {
  it('accepts non-ASCII local parts and domains when SMTPUTF8 is on', () => {
    ok('<用户@例子.广告>', '用户@例子.广告', '', MAIL8);
    ok('<josé.díaz@correo.es> SMTPUTF8', 'josé.díaz@correo.es', 'SMTPUTF8', MAIL8);
    ok('<"δοκιμή test"@παράδειγμα.δοκιμή>', '"δοκιμή test"@παράδειγμα.δοκιμή', '', RCPT8);
    ok('<😀@emoji.example>', '😀@emoji.example', '', MAIL8);
    ok('<a@xn--bcher-kva.example>', 'a@xn--bcher-kva.example', '', MAIL);
    ok('ü@b.c', 'ü@b.c', '', MAIL8);
  });

  it("answers 'utf8' for a valid non-ASCII path without SMTPUTF8", () => {
    bad('<用户@例子.广告>', MAIL, 'utf8');
    bad('<user@例子.广告>', RCPT, 'utf8');
    bad('<"ü"@b.c>', MAIL, 'utf8');
    bad('<@例子.广告:a@b.c>', MAIL, 'utf8');
    bad('ü@b.c SIZE=1', MAIL, 'utf8');
  });

  it("answers 'syntax' for a non-ASCII path that is broken anyway", () => {
    bad('<ü@b.c', MAIL);
    bad('<ü@-b.c>', MAIL);
    bad('<ü..x@b.c>', MAIL);
    bad('<a@[IPv6:ü::1]>', MAIL8);
    bad('<a@[ü]>', MAIL8);
  });

  it('refuses lone surrogates, U+FFFD and C1 controls', () => {
    for (const opts of [MAIL, MAIL8]) {
      bad('<a\ud800@b.c>', opts);
      bad('<a\udc00@b.c>', opts);
      bad('<a\udc00\ud800@b.c>', opts);
      bad('<a@b.c\ud83d>', opts);
      bad('<a\ufffd@b.c>', opts);
      bad('<a@\ufffd.c>', opts);
      bad('<"\ufffd"@b.c>', opts);
      bad('<a\u0085@b.c>', opts);
      bad('<a\u009f@b.c>', opts);
      bad('<a\u2029@b.c>', opts);
    }
  });
});

describe('afterKeyword', () => {
  it('returns what follows FROM: or TO:, case-insensitively', () => {
    assert.equal(afterKeyword('FROM:<a@b>', 'FROM'), '<a@b>');
    assert.equal(afterKeyword('from:<a@b> SIZE=1', 'FROM'), '<a@b> SIZE=1');
    assert.equal(afterKeyword('FrOm: <a@b>', 'FROM'), ' <a@b>');
    assert.equal(afterKeyword('TO:<a@b>', 'TO'), '<a@b>');
    assert.equal(afterKeyword('to:', 'TO'), '');
  });

  it('returns null when the keyword or the colon is missing or misplaced', () => {
    assert.equal(afterKeyword('FROM :<a@b>', 'FROM'), null);
    assert.equal(afterKeyword('FROM<a@b>', 'FROM'), null);
    assert.equal(afterKeyword('<a@b>', 'FROM'), null);
    assert.equal(afterKeyword('', 'FROM'), null);
    assert.equal(afterKeyword('TO:<a@b>', 'FROM'), null);
    assert.equal(afterKeyword('FROM:<a@b>', 'TO'), null);
    assert.equal(afterKeyword(' TO:<a@b>', 'TO'), null);
    assert.equal(afterKeyword('TOO:<a@b>', 'TO'), null);
    assert.equal(afterKeyword('FRO:<a@b>', 'FROM'), null);
    assert.equal(afterKeyword('\u017fROM:<a@b>', 'FROM'), null); // no Unicode case folding
  });
});

describe('parseParams', () => {
  it('parses keywords and values', () => {
    assert.deepEqual(parseParams('', false), []);
    assert.deepEqual(parseParams('   ', false), []);
    assert.deepEqual(parseParams('SIZE=1000 BODY=8BITMIME SMTPUTF8', false), [
      { keyword: 'SIZE', value: '1000' },
      { keyword: 'BODY', value: '8BITMIME' },
      { keyword: 'SMTPUTF8', value: null },
    ]);
    assert.deepEqual(parseParams('  size=10   x-Ext-1=a+b/c  ', false), [
      { keyword: 'SIZE', value: '10' },
      { keyword: 'X-EXT-1', value: 'a+b/c' },
    ]);
    assert.deepEqual(parseParams('ENVID=QQ314159 RET=HDRS', false), [
      { keyword: 'ENVID', value: 'QQ314159' },
      { keyword: 'RET', value: 'HDRS' },
    ]);
    assert.deepEqual(parseParams('ORCPT=rfc822;a+40b.c', false), [
      { keyword: 'ORCPT', value: 'rfc822;a+40b.c' },
    ]);
    assert.deepEqual(parseParams('AUTH=<>', false), [{ keyword: 'AUTH', value: '<>' }]);
    assert.deepEqual(parseParams('9X', false), [{ keyword: '9X', value: null }]);
  });

  it('refuses syntax errors', () => {
    for (const text of ['SIZE=', '=10', '-X=1', 'SI_ZE=1', 'SIZE=1=2', 'SIZE==1',
      'SIZE=1\t', '\tSIZE=1', 'SIZE=1\0', 'SIZE=1\r\nRCPT', 'A=\x7f', 'A=\x1b', 'Ä=1', 'A:1=2',
      'SIZE=1 size=2', 'SMTPUTF8 smtputf8', 'BODY=7BIT BODY=8BITMIME']) {
      assert.equal(parseParams(text, false), null, JSON.stringify(text));
    }
  });

  it('takes non-ASCII values only with utf8, and only valid ones', () => {
    assert.equal(parseParams('ORCPT=utf-8;用户@例子', false), null);
    assert.deepEqual(parseParams('ORCPT=utf-8;用户@例子', true), [
      { keyword: 'ORCPT', value: 'utf-8;用户@例子' },
    ]);
    assert.equal(parseParams('Ä=1', true), null); // keywords stay ASCII
    assert.equal(parseParams('X=a\ud800', true), null);
    assert.equal(parseParams('X=a\udc00b', true), null);
    assert.equal(parseParams('X=a\ufffd', true), null);
    assert.equal(parseParams('X=a\u0085', true), null);
    assert.equal(parseParams('X=a\u00a0', true)?.[0]?.value, 'a\u00a0');
  });
});

describe('parseCommand', () => {
  it('splits verb and argument', () => {
    assert.deepEqual(parseCommand('EHLO client.example'), { verb: 'EHLO', arg: 'client.example' });
    assert.deepEqual(parseCommand('mail FROM:<a@b>'), { verb: 'MAIL', arg: 'FROM:<a@b>' });
    assert.deepEqual(parseCommand('QUIT'), { verb: 'QUIT', arg: '' });
    assert.deepEqual(parseCommand('NOOP '), { verb: 'NOOP', arg: '' });
    assert.deepEqual(parseCommand('RCPT   TO:<a@b>   '), { verb: 'RCPT', arg: 'TO:<a@b>' });
    assert.deepEqual(parseCommand('X-EXT1 y'), { verb: 'X-EXT1', arg: 'y' });
    assert.deepEqual(parseCommand('a'.repeat(20)), { verb: 'A'.repeat(20), arg: '' });
    assert.deepEqual(parseCommand('BDAT 100 LAST'), { verb: 'BDAT', arg: '100 LAST' });
  });

  it('refuses bad verbs', () => {
    for (const line of ['', ' ', ' HELO x', '1HELO', '-X', 'a'.repeat(21), 'HE\0LO', 'HELO\tx',
      'HE_LO', 'MAIL:FROM', 'ÉHLO x', 'HELO\r', '\r\n', 'HEL\u017f']) {
      assert.equal(parseCommand(line), null, JSON.stringify(line));
    }
  });
});

describe('heloName', () => {
  it('takes the first token of printable ASCII', () => {
    assert.equal(heloName('client.example.com'), 'client.example.com');
    assert.equal(heloName('[192.0.2.1]'), '[192.0.2.1]');
    assert.equal(heloName('[IPv6:2001:db8::1]'), '[IPv6:2001:db8::1]');
    assert.equal(heloName('my_host'), 'my_host');
    assert.equal(heloName('  spaced.example   trailing junk'), 'spaced.example');
    assert.equal(heloName('x'), 'x');
  });

  it('refuses empty names and non-printable ones', () => {
    for (const arg of ['', '   ', 'a\0b', 'a\tb', 'a\rb', 'a\nb', 'héllo', 'a\x7fb', 'a\ud800']) {
      assert.equal(heloName(arg), null, JSON.stringify(arg));
    }
  });
});

describe('parseSize', () => {
  it('parses 1..20 digits', () => {
    assert.equal(parseSize('0'), 0);
    assert.equal(parseSize('1000'), 1000);
    assert.equal(parseSize('007'), 7);
    assert.equal(parseSize(String(Number.MAX_SAFE_INTEGER)), Number.MAX_SAFE_INTEGER);
    assert.equal(parseSize('9007199254740992'), Infinity);
    assert.equal(parseSize('9'.repeat(20)), Infinity);
  });

  it('refuses anything else', () => {
    for (const v of [null, '', '9'.repeat(21), '-1', '+1', '1.5', '1e3', ' 1', '1 ', '0x10',
      '１２', 'Infinity', 'NaN']) {
      assert.equal(parseSize(v), null, JSON.stringify(v));
    }
  });
});

describe('property: parsers never throw on random input', () => {
  const PIECES = ['<', '>', '@', '"', '\\', ':', ',', '.', '[', ']', ' ', '  ', '=', '-', '(',
    ')', '\0', '\r', '\n', '\t', 'a', 'Z', '0', '9', 'IPv6:', '::', '1.2.3.4', 'example.com',
    'Postmaster', 'FROM:', 'TO:', 'SIZE=', 'é', '例', '😀', '\ud800', '\udc00', '\ufffd',
    '\u0085', 'x'.repeat(70)];

  it('holds for 2000 random strings', () => {
    const rng = new Rng(0x5eed);
    const pick = (n: number): number => Math.floor(rng.next() * n);
    for (let n = 0; n < 2000; n++) {
      let s = '';
      const len = pick(24);
      for (let k = 0; k < len; k++) {
        s += rng.next() < 0.8 ? PIECES[pick(PIECES.length)] : String.fromCharCode(pick(0x10000));
      }
      const label = JSON.stringify(s);
      for (const opts of [MAIL, RCPT, MAIL8, RCPT8]) {
        const r = parsePath(s, opts);
        if (typeof r === 'string') {
          assert.ok(r === 'syntax' || r === 'utf8', label);
          if (r === 'utf8') assert.ok(!opts.utf8, label);
        } else {
          // whatever comes out is clean: no controls, no broken UTF-16, within 254 octets
          assert.ok(!/[\0-\x1f\x7f]/.test(r.address), label);
          assert.equal(Buffer.from(r.address, 'utf8').toString('utf8'), r.address, label);
          assert.ok(Buffer.byteLength(r.address) <= 254, label);
          if (!opts.utf8) assert.ok(!/[^\0-\x7f]/.test(r.address), label);
          if (r.address === '') assert.ok(opts.allowNull, label);
          assert.ok(!r.params.startsWith(' ') && !r.params.endsWith(' '), label);
        }
      }
      const params = parseParams(s, rng.next() < 0.5);
      if (params !== null) {
        for (const p of params) assert.equal(p.keyword, p.keyword.toUpperCase(), label);
      }
      const cmd = parseCommand(s);
      if (cmd !== null) assert.ok(/^[A-Z][A-Z0-9-]{0,19}$/.test(cmd.verb), label);
      const helo = heloName(s);
      if (helo !== null) assert.ok(/^[\x21-\x7e]+$/.test(helo), label);
      afterKeyword(s, 'FROM');
      afterKeyword(s, 'TO');
      parseSize(s);
    }
  });
});
