/**
 * REQUIRETLS (RFC 8689): offered only over TLS, the MAIL parameter taken only over TLS and put in
 * the envelope; the Proxy relays such a message only over TLS it verified, to an upstream that
 * offers REQUIRETLS, or refuses it with 550 5.7.30. Certificates come from test/tls-util.ts.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ProxyOptions } from '../src/handlers/proxy.js';
import { Proxy } from '../src/handlers/proxy.js';
import type { Handler } from '../src/handler.js';
import type { ControllerOptions } from '../src/controller.js';
import type { MailOptions } from '../src/session.js';
import { tlsRequiredNo } from '../src/requiretls.js';
import { greeted, startServer } from './helpers.js';
import { ehloKeywords, makeCertsIfPossible, needCerts, startTLSClient, TlsRawClient, type Certs } from './tls-util.js';

const certs: Certs | null = makeCertsIfPossible();
after(() => certs?.cleanup());

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

function capturing(): Handler & { mail: MailOptions[]; bodies: string[] } {
  const mail: MailOptions[] = [];
  const bodies: string[] = [];
  return {
    mail,
    bodies,
    handleMAIL(_s, _session, envelope, address, options) {
      mail.push(options);
      envelope.mailFrom = address;
      envelope.mailOptions = options;
      return '250 2.1.0 OK';
    },
    handleDATA(_s, _session, envelope) {
      bodies.push(envelope.originalContent!.toString());
      return '250 2.0.0 captured';
    },
  };
}

function tlsOptions(c: Certs, more: ControllerOptions = {}): ControllerOptions {
  return { logger: quiet, tlsContext: { cert: c.server.cert, key: c.server.key }, offerRequireTLS: true, ...more };
}

describe('REQUIRETLS in the engine', () => {
  test('advertised after STARTTLS only; the parameter taken only over TLS, typed in mailOptions', async (t) => {
    if (!needCerts(t, certs)) return;
    const h = capturing();
    await using s = await startServer(h, tlsOptions(certs));
    const plain = await greeted(s.port);
    try {
      assert.ok(!ehloKeywords(await plain.cmd('EHLO x.example')).includes('REQUIRETLS'));
      const r = await plain.cmd('MAIL FROM:<a@example.com> REQUIRETLS');
      assert.equal(r.text, '530 5.7.10 REQUIRETLS needs a TLS session: issue STARTTLS first', 'attack: REQUIRETLS before STARTTLS');
      assert.equal(h.mail.length, 0);
    } finally {
      plain.close();
    }
    const { c, before, after } = await startTLSClient(s.port);
    try {
      assert.ok(!ehloKeywords(before).includes('REQUIRETLS'));
      const keywords = ehloKeywords(after);
      assert.equal(keywords.at(keywords.indexOf('ENHANCEDSTATUSCODES') + 1), 'REQUIRETLS', 'right after ENHANCEDSTATUSCODES');
      assert.equal((await c.cmd('MAIL FROM:<a@example.com> REQUIRETLS=yes')).code, 501);
      assert.equal((await c.cmd('MAIL FROM:<a@example.com> REQUIRETLS REQUIRETLS')).code, 501);
      assert.equal((await c.cmd('MAIL FROM:<a@example.com> REQUIRETLS')).code, 250);
      assert.deepEqual(h.mail[0], { requireTLS: true });
    } finally {
      c.close();
    }
  });

  test('on implicit TLS it is offered from the first EHLO', async (t) => {
    if (!needCerts(t, certs)) return;
    const h = capturing();
    await using s = await startServer(h, { logger: quiet, tls: { cert: certs.server.cert, key: certs.server.key }, offerRequireTLS: true });
    const c = await TlsRawClient.connectTLS(s.port);
    try {
      assert.equal((await c.reply()).code, 220);
      assert.ok(ehloKeywords(await c.cmd('EHLO x.example')).includes('REQUIRETLS'));
      assert.equal((await c.cmd('MAIL FROM:<a@example.com> REQUIRETLS')).code, 250);
    } finally {
      c.close();
    }
  });

  test('without offerRequireTLS the parameter is 555, even over TLS', async (t) => {
    if (!needCerts(t, certs)) return;
    await using s = await startServer(capturing(), tlsOptions(certs, { offerRequireTLS: false }));
    const { c, after } = await startTLSClient(s.port);
    try {
      assert.ok(!ehloKeywords(after).includes('REQUIRETLS'));
      assert.equal((await c.cmd('MAIL FROM:<a@example.com> REQUIRETLS')).code, 555);
    } finally {
      c.close();
    }
  });
});

/** Client → (STARTTLS) Proxy → upstream; the MAIL reply and, when it was 250, the final one. */
async function relay(
  c: Certs,
  upstreamOptions: ControllerOptions,
  proxyOptions: ProxyOptions,
  mail = 'MAIL FROM:<a@example.com> REQUIRETLS',
  message = 'Subject: r\r\n\r\nsecret\r\n.',
) {
  const upstream = capturing();
  await using up = await startServer(upstream, upstreamOptions);
  await using proxy = await startServer(new Proxy('127.0.0.1', up.port, { timeout: 5000, ...proxyOptions }), tlsOptions(c));
  const { c: client } = await startTLSClient(proxy.port);
  try {
    const mailReply = (await client.cmd(mail)).text;
    if (!mailReply.startsWith('250')) return { mailReply, final: null, upstream };
    assert.equal((await client.cmd('RCPT TO:<b@example.net>')).code, 250);
    assert.equal((await client.cmd('DATA')).code, 354);
    const final = (await client.cmd(message)).text;
    return { mailReply, final, upstream };
  } finally {
    client.close();
  }
}

describe('Proxy and REQUIRETLS', () => {
  test('relayed over verified TLS to an upstream offering REQUIRETLS, with the parameter', async (t) => {
    if (!needCerts(t, certs)) return;
    const { mailReply, final, upstream } = await relay(certs, tlsOptions(certs), { tls: { ca: certs.ca } });
    assert.match(mailReply, /^250/);
    assert.match(final!, /^250 .*captured/);
    assert.deepEqual(upstream.mail, [{ requireTLS: true }]);
    assert.equal(upstream.bodies.length, 1);
  });

  test('ignoreTLS does not stop STARTTLS for a REQUIRETLS message', async (t) => {
    if (!needCerts(t, certs)) return;
    const { final, upstream } = await relay(certs, tlsOptions(certs), { tls: { ca: certs.ca }, ignoreTLS: true });
    assert.match(final!, /^250/);
    assert.deepEqual(upstream.mail, [{ requireTLS: true }]);
  });

  test('attack: an upstream certificate that does not verify gets 550 5.7.30, nothing relayed', async (t) => {
    if (!needCerts(t, certs)) return;
    // No CA given: the test CA is not trusted.
    const strict = await relay(certs, tlsOptions(certs), {});
    assert.equal(strict.mailReply, '550 5.7.30 REQUIRETLS support required');
    assert.equal(strict.upstream.mail.length, 0);
    // A Proxy told not to verify (rejectUnauthorized: false) still does not relay this message.
    const lax = await relay(certs, tlsOptions(certs), { tls: { rejectUnauthorized: false } });
    assert.equal(lax.mailReply, '550 5.7.30 REQUIRETLS support required');
    assert.equal(lax.upstream.mail.length, 0);
    // The name must match too: the certificate is for localhost/127.0.0.1, not this name.
    const wrongName = await relay(certs, tlsOptions(certs), { tls: { ca: certs.ca, servername: 'mx.example.org' } });
    assert.equal(wrongName.mailReply, '550 5.7.30 REQUIRETLS support required');
  });

  test('attack: an upstream without TLS, or without REQUIRETLS, gets 550 5.7.30', async (t) => {
    if (!needCerts(t, certs)) return;
    const clear = await relay(certs, { logger: quiet }, { tls: { ca: certs.ca } });
    assert.equal(clear.mailReply, '550 5.7.30 REQUIRETLS support required');
    assert.equal(clear.upstream.bodies.length, 0);
    const noOffer = await relay(certs, tlsOptions(certs, { offerRequireTLS: false }), { tls: { ca: certs.ca } });
    assert.equal(noOffer.mailReply, '550 5.7.30 REQUIRETLS support required');
    assert.equal(noOffer.upstream.mail.length, 0);
  });

  test('a message without REQUIRETLS is relayed as before, in clear to an upstream without TLS', async (t) => {
    if (!needCerts(t, certs)) return;
    const { final, upstream } = await relay(certs, { logger: quiet }, {}, 'MAIL FROM:<a@example.com>');
    assert.match(final!, /^250/);
    assert.deepEqual(upstream.mail, [{}]);
  });
});

describe('TLS-Required: No (RFC 8689 §4.2.2)', () => {
  test('the header is read from the header section only, case-insensitively, folded or not', () => {
    const yes = ['TLS-Required: No\r\n\r\nb', 'Subject: s\r\ntls-required:no\r\n\r\n', 'TLS-Required:\r\n  NO\r\n\r\n', 'TLS-Required: No'];
    for (const m of yes) assert.equal(tlsRequiredNo(Buffer.from(m)), true, JSON.stringify(m));
    const no = ['Subject: s\r\n\r\nTLS-Required: No\r\n', 'TLS-Required: Nope\r\n\r\n', 'X-TLS-Required: No\r\n\r\n', 'Subject: TLS-Required: No\r\n\r\n', ''];
    for (const m of no) assert.equal(tlsRequiredNo(Buffer.from(m)), false, JSON.stringify(m));
  });

  test('an upstream certificate that does not verify: relayed with TLS-Required: No, 451 4.7.5 without it', async (t) => {
    if (!needCerts(t, certs)) return;
    const waived = await relay(certs, tlsOptions(certs), {}, 'MAIL FROM:<a@example.com>', 'TLS-Required: No\r\nSubject: r\r\n\r\nbody\r\n.');
    assert.match(waived.final!, /^250 .*captured/);
    assert.equal(waived.upstream.bodies.length, 1);
    const strict = await relay(certs, tlsOptions(certs), {}, 'MAIL FROM:<a@example.com>');
    assert.equal(strict.final, '451 4.7.5 The upstream server certificate did not verify');
    assert.equal(strict.upstream.bodies.length, 0);
  });

  test('attack: with REQUIRETLS the header is ignored (no waiver of the 550)', async (t) => {
    if (!needCerts(t, certs)) return;
    const r = await relay(certs, tlsOptions(certs), {}, 'MAIL FROM:<a@example.com> REQUIRETLS', 'TLS-Required: No\r\n\r\nbody\r\n.');
    assert.equal(r.mailReply, '550 5.7.30 REQUIRETLS support required');
    assert.equal(r.upstream.bodies.length, 0);
  });
});
