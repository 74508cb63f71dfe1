import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { authResultsOf, authResultsReady, authservIdOf, removeForgedAuthResults, withAuthResults, type AuthResults } from '../src/authres/index.js';
import { prependHeader, safeHeader } from '../src/authres/headers.js';
import { verifyMessage, type VerifyInput } from '../src/authres/verify.js';
import type { Handler } from '../src/handler.js';
import type { Envelope } from '../src/session.js';
import { Rng } from './rng.js';
import { fixtureResolver, message, sealed, signed, standardZone } from './authres-util.js';
import { greeted, startServer } from './helpers.js';

const ID = 'mx.test';

function input(mailFrom: string, over: Partial<VerifyInput> = {}): VerifyInput {
  return { ip: '127.0.0.1', helo: 'client.example', mailFrom, authservId: ID, resolver: fixtureResolver(standardZone()), ...over };
}

describe('authservIdOf / removeForgedAuthResults (RFC 8601 §5)', () => {
  it('reads the authserv-id past comments, folding and quoting', () => {
    assert.equal(authservIdOf(' mx.test; dkim=pass'), 'mx.test');
    assert.equal(authservIdOf(' (hi (nested)) mx.test 1; none'), 'mx.test');
    assert.equal(authservIdOf(' "mx.test"; none'), 'mx.test');
    assert.equal(authservIdOf('mx.test'), 'mx.test');
    assert.equal(authservIdOf(' ; none'), null);
  });
  it('attack: removes every header forging our id, however spelt, and keeps other servers\'', () => {
    const forged = [
      'Authentication-Results: mx.test; dkim=pass header.d=bank.example',
      'authentication-results: MX.TEST.; spf=pass',
      'Authentication-Results:\r\n  (comment) mx.test;\r\n  dmarc=pass',
      'Authentication-Results : "mx.test"; arc=pass',
    ];
    const msg = Buffer.from(
      `${forged.join('\r\n')}\r\nAuthentication-Results: upstream.example; spf=fail\r\nFrom: a@b.c\r\n\r\nAuthentication-Results: mx.test; body text stays\r\n`,
    );
    const { message: out, removed } = removeForgedAuthResults(msg, ID);
    assert.equal(removed, 4);
    assert.equal(
      out.toString(),
      'Authentication-Results: upstream.example; spf=fail\r\nFrom: a@b.c\r\n\r\nAuthentication-Results: mx.test; body text stays\r\n',
    );
    const same = Buffer.from('From: a@b.c\r\n\r\nx\r\n');
    assert.equal(removeForgedAuthResults(same, ID).message, same, 'nothing to remove: the same buffer');
  });
  it('attack: white space at the top cannot continue our header; control characters cannot end it', () => {
    const out = prependHeader(Buffer.from(' dkim=pass\r\n\tspf=pass\r\nFrom: a@b.c\r\n\r\nx\r\n'), 'Authentication-Results: mx.test; none');
    assert.equal(out.toString(), 'Authentication-Results: mx.test; none\r\n\r\n dkim=pass\r\n\tspf=pass\r\nFrom: a@b.c\r\n\r\nx\r\n', 'the client bytes go below an empty line, unchanged');
    for (const forged of ['\rdkim=pass\r\n\r\nx\r\n', '\x0bdkim=pass\r\n\r\nx\r\n', '\xa0dkim=pass\r\n\r\nx\r\n', 'no header block\r\n']) {
      const text = prependHeader(Buffer.from(forged, 'latin1'), 'Authentication-Results: mx.test; none').toString('latin1');
      assert.equal(text, `Authentication-Results: mx.test; none\r\n\r\n${forged}`, JSON.stringify(forged));
    }
    assert.equal(prependHeader(Buffer.from('From: a\n\nx\n'), 'A: b;\r\n c').toString(), 'A: b;\n c\nFrom: a\n\nx\n', 'an LF message gets LF');
    assert.equal(safeHeader('A: x\r\nInjected: y\r\n z\x00\x1b'), 'A: x\r\n Injected: y\r\n z  ');
  });
});

describe('removeForgedAuthResults: seeded fuzz', () => {
  it('no header naming our id survives; every other header and the body stay byte for byte', () => {
    const rng = new Rng(8601);
    const names = ['Authentication-Results', 'authentication-results', 'AUTHENTICATION-RESULTS ', 'Authentication-Results\t'];
    const ids = ['mx.test', 'MX.Test.', '(c) mx.test', '"mx.test"', '\r\n mx.test', ' (a (b) \\) c) mx.test'];
    const others = ['Received: from x', 'Subject: a; mx.test; b', 'X-Authentication-Results: mx.test; pass', 'Authentication-Results: mx.test.evil; pass', 'Authentication-Results: other.example; mx.test'];
    for (let i = 0; i < 500; i++) {
      const eol = rng.next() < 0.5 ? '\r\n' : '\n';
      const kept: string[] = [];
      const lines: string[] = [];
      for (let n = rng.int(0, 8); n > 0; n--) {
        if (rng.next() < 0.5) {
          const v = `${rng.pick(names)}:${rng.next() < 0.5 ? ' ' : ''}${rng.pick(ids)}; dkim=pass${rng.next() < 0.3 ? '\r\n\tspf=pass' : ''}`;
          lines.push(v.replace(/\r\n/g, eol));
        } else {
          const v = rng.pick(others);
          lines.push(v);
          kept.push(v);
        }
      }
      const body = `${eol}Authentication-Results: mx.test; in the body${eol}`;
      const msg = Buffer.from(lines.map((l) => l + eol).join('') + body);
      const out = removeForgedAuthResults(msg, ID).message.toString();
      assert.equal(out, kept.map((l) => l + eol).join('') + body, JSON.stringify(msg.toString()));
    }
  });
});

describe('verifyMessage: SPF, DKIM, DMARC, ARC with a fixture resolver', () => {
  it('pass: SPF for the peer, a DKIM signature made here, DMARC aligned', async () => {
    const r = await verifyMessage(await signed(message()), input('alice@example.org'));
    assert.equal(r.spf?.result, 'pass');
    assert.equal(r.spf?.domain, 'example.org');
    assert.equal(r.dkim.length, 1);
    assert.deepEqual([r.dkim[0]!.result, r.dkim[0]!.signingDomain, r.dkim[0]!.selector, r.dkim[0]!.aligned], ['pass', 'example.org', 's1', true]);
    assert.equal(r.dmarc?.result, 'pass');
    assert.equal(r.dmarc?.policy, 'reject');
    assert.equal(r.arc?.result, 'none');
    assert.match(r.header, /^Authentication-Results: mx\.test;\r\n /);
    assert.match(r.header, /dkim=pass/);
    assert.match(r.header, /spf=pass/);
    assert.match(r.header, /dmarc=pass/);
    assert.ok(!/[\x00-\x08\x0b\x0c\x0e-\x1f]/.test(r.header));
  });
  it('fail: SPF -all, no DKIM, DMARC fails for the From domain', async () => {
    const r = await verifyMessage(message('eve@other.net'), input('eve@other.net'));
    assert.equal(r.spf?.result, 'fail');
    assert.deepEqual(r.dkim.map((d) => d.result), ['none']);
    assert.equal(r.dmarc?.result, 'fail');
    assert.equal(r.dmarc?.policy, 'quarantine');
  });
  it('softfail, and temperror when DNS fails', async () => {
    assert.equal((await verifyMessage(message('a@soft.net'), input('a@soft.net'))).spf?.result, 'softfail');
    assert.equal((await verifyMessage(message('a@broken.net'), input('a@broken.net'))).spf?.result, 'temperror');
  });
  it('the null sender is checked by HELO', async () => {
    const r = await verifyMessage(message(), input(''));
    assert.equal(r.spf?.result, 'pass');
    assert.equal(r.spf?.domain, 'client.example');
  });
  it('fail: a DKIM signature over a body changed after signing; DMARC then fails without aligned SPF', async () => {
    const tampered = Buffer.from((await signed(message())).toString().replace('Hello.', 'Pay me.'));
    const r = await verifyMessage(tampered, input('eve@other.net'));
    // mailauth reports a body-hash mismatch as neutral (RFC 6376 §3.9 leaves it to the verifier).
    assert.ok(['fail', 'neutral'].includes(r.dkim[0]!.result), r.dkim[0]!.result);
    assert.equal(r.spf?.result, 'fail');
    assert.equal(r.dmarc?.result, 'fail');
    assert.equal(r.dmarc?.domain, 'example.org');
  });
  it('fail: a signed header changed after signing', async () => {
    const tampered = Buffer.from((await signed(message())).toString().replace('Subject: test', 'Subject: urgent'));
    assert.equal((await verifyMessage(tampered, input('alice@example.org'))).dkim[0]!.result, 'fail');
  });
  it('fail: a signature by a domain with no key', async () => {
    const r = await verifyMessage(await signed(message(), 'nokey.example'), input('alice@example.org'));
    assert.notEqual(r.dkim[0]!.result, 'pass');
    assert.equal(r.dkim[0]!.signingDomain, 'nokey.example');
  });
  it('ARC: a chain sealed here passes; a broken seal fails', async () => {
    const good = await sealed(await signed(message()));
    const r = await verifyMessage(good, input('alice@example.org'));
    assert.equal(r.arc?.result, 'pass');
    assert.equal(r.arc?.instance, 1);
    assert.match(r.header, /arc=pass/);
    const broken = Buffer.from(good.toString().replace(/(ARC-Seal:[^]*?b=)([A-Za-z0-9+/])/, (_m, a: string, c: string) => a + (c === 'A' ? 'B' : 'A')));
    assert.equal((await verifyMessage(broken, input('alice@example.org'))).arc?.result, 'fail');
  });
  it('no address (a Unix socket): SPF is not checked', async () => {
    const r = await verifyMessage(message(), input('alice@example.org', { ip: '' }));
    assert.equal(r.spf, null);
    assert.doesNotMatch(r.header, /spf=/);
  });
});

describe('withAuthResults over a real socket', () => {
  class Keeper implements Handler {
    seen: Array<{ results: AuthResults | undefined; content: string }> = [];
    handleDATA(_s: unknown, _session: unknown, envelope: Envelope): string {
      this.seen.push({ results: authResultsOf(envelope), content: envelope.originalContent!.toString() });
      return '250 2.0.0 kept';
    }
  }

  async function send(handler: Handler, mailFrom: string, body: Buffer): Promise<string> {
    await using server = await startServer(handler, { hostname: '127.0.0.1' });
    const client = await greeted(server.port);
    try {
      assert.equal((await client.cmd(`MAIL FROM:<${mailFrom}>`)).code, 250);
      assert.equal((await client.cmd('RCPT TO:<bob@example.net>')).code, 250);
      assert.equal((await client.cmd('DATA')).code, 354);
      client.send(Buffer.concat([body, Buffer.from('.\r\n')]));
      const r = await client.reply();
      await client.cmd('QUIT');
      return r.text;
    } finally {
      client.close();
    }
  }

  it('gives the verdicts to handleDATA and prepends one header with our id, the forged one removed', async () => {
    const keeper = new Keeper();
    const forged = 'Authentication-Results: mx.test; dkim=pass header.d=example.org; dmarc=pass\r\n';
    const msg = await signed(message('alice@example.org', forged));
    const reply = await send(withAuthResults(keeper, { authservId: ID, resolver: fixtureResolver(standardZone()) }), 'alice@example.org', msg);
    assert.match(reply, /^250 2\.0\.0 kept/);
    const { results, content } = keeper.seen[0]!;
    assert.equal(results?.spf?.result, 'pass');
    assert.equal(results?.dkim[0]?.result, 'pass', 'the signature still verifies: it did not cover the forged header');
    assert.equal(results?.removed, 1);
    assert.ok(content.startsWith(`${results!.header}\r\n`));
    assert.equal(content.match(/^Authentication-Results: mx\.test/gim)?.length, 1);
    assert.ok(!content.includes('header.d=example.org; dmarc=pass\r\n'), 'the forgery is gone');
  });

  it('the authserv-id defaults to the server hostname; a spoofed sender fails SPF', async () => {
    const keeper = new Keeper();
    await send(withAuthResults(keeper, { resolver: fixtureResolver(standardZone()) }), 'eve@other.net', message('eve@other.net'));
    const { results, content } = keeper.seen[0]!;
    assert.equal(results?.spf?.result, 'fail');
    assert.equal(results?.dmarc?.result, 'fail');
    assert.equal(results?.authservId, authservIdOf(content.slice(content.indexOf(':') + 1)));
  });

  it('handleDeliver (per recipient) and processMessage handlers get verified messages too, once', async () => {
    const seen: string[] = [];
    const resolver = fixtureResolver(standardZone());
    const perRecipient: Handler = {
      handleDeliver(_s, _session, envelope, rcpt) {
        seen.push(`${rcpt} ${authResultsOf(envelope)?.spf?.result}`);
        return '250 OK';
      },
    };
    await send(withAuthResults(perRecipient, { resolver }), 'alice@example.org', message());
    assert.deepEqual(seen, ['bob@example.net pass']);
    const before = resolver.queries.length;
    let data = '';
    const legacy: Handler = {
      processMessage(_peer, _from, _to, content) {
        data = content.toString();
      },
    };
    assert.match(await send(withAuthResults(legacy, { resolver }), 'alice@example.org', message()), /^250/);
    assert.match(data, /^Authentication-Results: /);
    assert.ok(resolver.queries.length > before);
  });

  it('handleDATAStream: the body reaches the handler and the checks at once; the verdicts when it ends', async () => {
    const got: Array<{ spf: string | undefined; dkim: string | undefined; bytes: number; header: string | undefined }> = [];
    const streaming: Handler = {
      async handleDATAStream(_s, _session, envelope, stream) {
        let bytes = 0;
        for await (const chunk of stream) bytes += (chunk as Buffer).length;
        const r = await authResultsReady(envelope);
        got.push({ spf: r?.spf?.result, dkim: r?.dkim[0]?.result, bytes, header: r?.header });
        return r?.dmarc?.result === 'pass' ? '250 2.0.0 streamed' : '550 5.7.1 DMARC';
      },
    };
    const msg = await signed(message());
    assert.match(await send(withAuthResults(streaming, { authservId: ID, resolver: fixtureResolver(standardZone()) }), 'alice@example.org', msg), /^250 2\.0\.0 streamed/);
    assert.equal(got[0]!.spf, 'pass');
    assert.equal(got[0]!.dkim, 'pass');
    assert.equal(got[0]!.bytes, msg.length, 'the handler gets the bytes as sent');
    assert.match(got[0]!.header ?? '', /^Authentication-Results: mx\.test;/);
    const early: Handler = {
      handleDATAStream() {
        return '250 2.0.0 answered before the end';
      },
    };
    const big = message('alice@example.org', '', 'x'.repeat(200) + '\r\n'.repeat(2000));
    assert.match(await send(withAuthResults(early, { resolver: fixtureResolver(standardZone()) }), 'alice@example.org', big), /^250/);
  });

  it('a handler without a DATA hook still gets 250, and other hooks keep their this', async () => {
    class Mail implements Handler {
      #count = 0;
      handleMAIL(_s: unknown, _session: unknown, envelope: Envelope, address: string): string {
        this.#count++;
        envelope.mailFrom = address;
        return `250 2.1.0 sender ${this.#count}`;
      }
    }
    await using server = await startServer(withAuthResults(new Mail(), { resolver: fixtureResolver(standardZone()) }));
    const client = await greeted(server.port);
    try {
      assert.match((await client.cmd('MAIL FROM:<alice@example.org>')).text, /sender 1/);
      await client.cmd('RCPT TO:<bob@example.net>');
      await client.cmd('DATA');
      client.send(Buffer.concat([message(), Buffer.from('.\r\n')]));
      assert.equal((await client.reply()).code, 250);
    } finally {
      client.close();
    }
  });
});
