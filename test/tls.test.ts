/**
 * STARTTLS (RFC 3207) and implicit TLS (RFC 8314): what is offered when, the session reset after
 * the handshake, the command-injection class (CVE-2011-0411), failed and stalled handshakes,
 * and certificate reload. Certificates are made at test time (tls-util.ts).
 */
import { test, describe, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import type { ControllerOptions } from '../src/controller.js';
import type { SMTPServer } from '../src/handler.js';
import type { Envelope, MailOptions, Session, TLSInfo } from '../src/session.js';
import { Recorder, startServer } from './helpers.js';
import {
  CapturingLogger,
  TlsRawClient,
  delay,
  ehloKeywords,
  makeCertsIfPossible,
  needCerts,
  startTLSClient,
  type Certs,
} from './tls-util.js';

const certs: Certs | null = makeCertsIfPossible();
after(() => certs?.cleanup());

/** Records every MAIL and RCPT it sees, and session.tls at MAIL time. */
class HookRecorder extends Recorder {
  events: string[] = [];
  tlsAtMail: Array<TLSInfo | null> = [];
  handleMAIL(_s: SMTPServer, session: Session, envelope: Envelope, address: string, _o: MailOptions): string {
    this.events.push(`MAIL ${address}`);
    this.tlsAtMail.push(session.tls === null ? null : { ...session.tls });
    envelope.mailFrom = address;
    return '250 OK';
  }
  handleRCPT(_s: SMTPServer, _session: Session, envelope: Envelope, address: string): string {
    this.events.push(`RCPT ${address}`);
    envelope.rcptTos.push(address);
    return '250 OK';
  }
}

function starttlsOptions(c: Certs, extra: ControllerOptions = {}): ControllerOptions {
  return { tlsContext: { cert: c.server.cert, key: c.server.key }, ...extra };
}

/**
 * A STARTTLS server for `handler` (starttlsOptions with `extra`), and a raw client that has read
 * the greeting: `body` runs with the client, the certificates and the server, and the client is
 * closed after it. Skips (outside CI) when no certificates can be made.
 */
async function withClient(
  t: TestContext,
  handler: Recorder,
  extra: ControllerOptions,
  body: (c: TlsRawClient, certs: Certs, server: { port: number }) => Promise<void>,
): Promise<void> {
  if (!needCerts(t, certs)) return;
  await using server = await startServer(handler, starttlsOptions(certs, extra));
  const c = await TlsRawClient.connect(server.port);
  try {
    await c.reply();
    await body(c, certs, server);
  } finally {
    c.close();
  }
}

async function deliver(c: TlsRawClient, from = 'a@example.com', to = 'b@example.com', body = 'Subject: t\r\n\r\nhi\r\n'): Promise<void> {
  await c.expect(`MAIL FROM:<${from}>`, 250);
  await c.expect(`RCPT TO:<${to}>`, 250);
  await c.expect('DATA', 354);
  c.send(body + '.\r\n');
  const r = await c.reply();
  assert.equal(r.code, 250, r.text);
}

/** A fresh STARTTLS client that delivers one message: the server still serves. */
async function stillServes(port: number, handler: Recorder): Promise<void> {
  const before = handler.messages.length;
  const { c } = await startTLSClient(port);
  try {
    await deliver(c, 'ok@example.com', 'still@example.com');
  } finally {
    c.close();
  }
  assert.equal(handler.messages.length, before + 1);
}

describe('STARTTLS: what is offered', () => {
  test('without tlsContext STARTTLS is not advertised and gets 502', async () => {
    await using server = await startServer(new Recorder());
    const c = await TlsRawClient.connect(server.port);
    try {
      await c.reply();
      const ehlo = await c.expect('EHLO client.example', 250);
      assert.ok(!ehloKeywords(ehlo).includes('STARTTLS'), ehlo.text);
      const r = await c.expect('STARTTLS', 502);
      assert.match(r.text, /^502 5\.5\.1 /);
      await c.expect('NOOP', 250);
    } finally {
      c.close();
    }
  });

  test('with tlsContext STARTTLS is advertised before TLS only; 220, then a handshake that verifies against the CA', async (t: TestContext) => {
    await withClient(t, new Recorder(), {}, async (c, certs) => {
      const before = await c.expect('EHLO client.example', 250);
      assert.ok(ehloKeywords(before).includes('STARTTLS'), before.text);
      const r = await c.expect('STARTTLS', 220);
      assert.match(r.text, /^220 2\.0\.0 /);
      assert.equal(c.unread, '', 'nothing may follow the 220 in plain text');
      await c.upgrade({ ca: certs.ca, servername: 'localhost', rejectUnauthorized: true });
      assert.equal(c.tlsSocket.authorized, true);
      assert.equal(c.peerFingerprint(), certs.server.fingerprint256);
      const afterEhlo = await c.expect('EHLO client.example', 250);
      assert.ok(!ehloKeywords(afterEhlo).includes('STARTTLS'), `STARTTLS listed inside TLS: ${afterEhlo.text}`);
    });
  });

  test('a second STARTTLS inside TLS gets 503 and the connection goes on', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new Recorder();
    await using server = await startServer(handler, starttlsOptions(certs));
    const { c } = await startTLSClient(server.port);
    try {
      const r = await c.expect('STARTTLS', 503);
      assert.match(r.text, /^503 5\.5\.1 /);
      await c.expect('NOOP', 250);
      await deliver(c);
      assert.equal(handler.messages.length, 1);
    } finally {
      c.close();
    }
  });

  test('STARTTLS with an argument gets 501 and the connection stays plain', async (t: TestContext) => {
    await withClient(t, new Recorder(), {}, async (c) => {
      await c.expect('EHLO client.example', 250);
      await c.expect('STARTTLS now', 501);
      // Still plain text: a plain command is answered in plain text.
      await c.expect('NOOP', 250);
      await c.expect('STARTTLS', 220);
      await c.upgrade();
      await c.expect('EHLO client.example', 250);
    });
  });
});

describe('STARTTLS: the session is reset after the handshake (RFC 3207 §4.2)', () => {
  test('MAIL without a new EHLO gets 503; a transaction opened before TLS is forgotten', async (t: TestContext) => {
    const handler = new HookRecorder();
    await withClient(t, handler, {}, async (c) => {
      await c.expect('EHLO client.example', 250);
      await c.expect('MAIL FROM:<before@example.com>', 250);
      await c.expect('RCPT TO:<r@example.com>', 250);
      await c.expect('STARTTLS', 220);
      await c.upgrade();
      // No EHLO yet: the hostname learnt in plain text is gone.
      const r = await c.expect('MAIL FROM:<a@example.com>', 503);
      assert.match(r.text, /HELO|EHLO/i);
      await c.expect('EHLO client.example', 250);
      // The plain-text transaction is gone too: no sender, no recipients.
      await c.expect('RCPT TO:<r@example.com>', 503);
      await c.expect('DATA', 503);
      await deliver(c, 'after@example.com', 'r@example.com');
      assert.equal(handler.messages.length, 1);
      assert.equal(handler.messages[0]!.mailFrom, 'after@example.com');
      assert.deepEqual(handler.messages[0]!.rcptTos, ['r@example.com']);
    });
  });

  test('session.tls is null in plain text and carries protocol and cipher after STARTTLS', async (t: TestContext) => {
    const handler = new HookRecorder();
    await withClient(t, handler, {}, async (c) => {
      await c.expect('EHLO client.example', 250);
      await c.expect('MAIL FROM:<plain@example.com>', 250);
      await c.expect('RSET', 250);
      await c.expect('STARTTLS', 220);
      await c.upgrade();
      await c.expect('EHLO client.example', 250);
      await c.expect('MAIL FROM:<secure@example.com>', 250);
      assert.equal(handler.tlsAtMail.length, 2);
      assert.equal(handler.tlsAtMail[0], null, 'session.tls must be null before TLS');
      const info = handler.tlsAtMail[1]!;
      assert.ok(info !== null, 'session.tls must be set after STARTTLS');
      assert.match(String(info.protocol), /^TLSv1\.[23]$/);
      assert.equal(info.protocol, c.tlsSocket.getProtocol());
      assert.equal(info.cipher?.name, c.tlsSocket.getCipher().name);
      // No client certificate was asked for.
      assert.equal(info.peerCertificate, null);
    });
  });
});

describe('STARTTLS: command injection (CVE-2011-0411 class)', () => {
  test('commands pipelined after STARTTLS in the same write never run', async (t: TestContext) => {
    const handler = new HookRecorder();
    await withClient(t, handler, {}, async (c) => {
      await c.expect('EHLO client.example', 250);
      c.send('STARTTLS\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\n');
      const r = await c.reply();
      assert.equal(r.code, 220, r.text);
      assert.equal(c.unread, '', 'no plain-text reply may follow the 220');
      await c.upgrade();
      // Anything the injected commands produced would arrive now, inside TLS.
      assert.ok(await c.silentFor(200), `replies to injected commands: ${JSON.stringify(c.unread)}`);
      await c.expect('EHLO client.example', 250);
      const rcpt = await c.expect('RCPT TO:<a@b>', 503);
      assert.match(rcpt.text, /MAIL/);
      assert.deepEqual(handler.events, [], `injected commands reached the handler: ${handler.events.join(', ')}`);
      await deliver(c, 'real@example.com', 'a@b.example');
      assert.deepEqual(handler.events, ['MAIL real@example.com', 'RCPT a@b.example']);
    });
  });

  test('EHLO, STARTTLS and injected commands in one write during a slow EHLO hook never run the injection', async (t: TestContext) => {
    class Slow extends HookRecorder {
      async handleEHLO(_s: SMTPServer, _session: Session, _e: Envelope, _h: string, lines: string[]): Promise<string[]> {
        await delay(100);
        return lines;
      }
    }
    const handler = new Slow();
    await withClient(t, handler, {}, async (c) => {
      c.send('EHLO client.example\r\nSTARTTLS\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\n');
      assert.equal((await c.reply()).code, 250);
      assert.equal((await c.reply()).code, 220);
      assert.equal(c.unread, '');
      await c.upgrade();
      await c.expect('EHLO client.example', 250);
      await c.expect('RCPT TO:<a@b>', 503);
      assert.deepEqual(handler.events, []);
    });
  });

  test('commands written separately behind STARTTLS, before the handshake, never run', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new HookRecorder();
    await using server = await startServer(handler, starttlsOptions(certs));
    const c = await TlsRawClient.connect(server.port);
    try {
      await c.reply();
      await c.expect('EHLO client.example', 250);
      c.send('STARTTLS\r\n');
      c.send('MAIL FROM:<evil@x>\r\n');
      c.send('RCPT TO:<victim@y>\r\n');
      assert.equal((await c.reply()).code, 220);
      // Either the bytes were discarded (the handshake works) or they hit the TLS layer (the
      // handshake fails and the connection is dropped): never are they run as commands.
      let upgraded = true;
      await c.upgrade().catch(() => (upgraded = false));
      if (upgraded) {
        await c.expect('EHLO client.example', 250);
        await c.expect('RCPT TO:<a@b>', 503);
      }
      await delay(50);
      assert.deepEqual(handler.events, []);
    } finally {
      c.close();
    }
    await stillServes(server.port, handler);
  });
});

describe('requireStartTLS', () => {
  test('MAIL, RCPT, DATA, AUTH, VRFY, RSET get 530 5.7.0 before TLS; NOOP, EHLO and QUIT work', async (t: TestContext) => {
    const handler = new HookRecorder();
    await withClient(t, handler, { requireStartTLS: true, authenticator: () => true }, async (c) => {
      await c.expect('EHLO client.example', 250);
      for (const cmd of ['MAIL FROM:<a@example.com>', 'RCPT TO:<b@example.com>', 'DATA', 'AUTH PLAIN', 'VRFY someone', 'RSET']) {
        const r = await c.expect(cmd, 530);
        assert.match(r.text, /^530 5\.7\.0 /, cmd);
      }
      await c.expect('NOOP', 250);
      await c.expect('EHLO again.example', 250);
      assert.deepEqual(handler.events, []);
      const q = await c.expect('QUIT', 221);
      assert.match(q.text, /^221 /);
      await c.waitClosed();
    });
  });

  test('after STARTTLS mail is accepted', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new HookRecorder();
    await using server = await startServer(handler, starttlsOptions(certs, { requireStartTLS: true }));
    const { c } = await startTLSClient(server.port);
    try {
      await deliver(c);
      assert.equal(handler.messages.length, 1);
    } finally {
      c.close();
    }
  });

  test('a BDAT refused for want of TLS still consumes its chunk: chunk bytes never run as commands', async (t: TestContext) => {
    const handler = new HookRecorder();
    await withClient(t, handler, { requireStartTLS: true }, async (c) => {
      await c.expect('EHLO client.example', 250);
      // The 6-byte chunk is "NOOP\r\n": if it ran as a command there would be a second reply.
      c.send('BDAT 6 LAST\r\nNOOP\r\n');
      const r = await c.reply();
      assert.equal(r.code, 530, r.text);
      assert.ok(await c.silentFor(300), `chunk bytes were run as a command: ${JSON.stringify(c.unread)}`);
    });
  });
});

describe('failed and stalled STARTTLS handshakes', () => {
  const garbage: Array<[string, Buffer]> = [
    ['a plain HELLO line', Buffer.from('HELLO\r\n')],
    ['an SMTP command', Buffer.from('MAIL FROM:<x@y>\r\n')],
    ['random bytes', Buffer.from(Array.from({ length: 2048 }, (_, i) => (i * 7919 + 13) & 0xff))],
    ['a handshake record with a bogus length', Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00, 0x00, 0x00])],
    ['an alert record', Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])],
  ];
  for (const [what, bytes] of garbage) {
    test(`${what} instead of a ClientHello closes that connection only`, async (t: TestContext) => {
      if (!needCerts(t, certs)) return;
      const handler = new Recorder();
      const logger = new CapturingLogger();
      await using server = await startServer(handler, starttlsOptions(certs, { logger }));
      const bystander = await startTLSClient(server.port);
      const c = await TlsRawClient.connect(server.port);
      try {
        await c.reply();
        await c.expect('EHLO client.example', 250);
        await c.expect('STARTTLS', 220);
        c.send(bytes);
        await c.waitClosed(3000);
        assert.ok(!/220|250/.test(c.unread), `plain-text reply after a failed handshake: ${JSON.stringify(c.unread)}`);
        // A connection that was already up is untouched, and new ones are served.
        await deliver(bystander.c);
        await stillServes(server.port, handler);
        assert.equal(handler.messages.length, 2);
        assert.ok(!logger.lines.some((l) => l.startsWith('error:')), `logged as an error: ${logger.text}`);
      } finally {
        c.close();
        bystander.c.close();
      }
    });
  }

  test('a client that gives up in the middle of the handshake costs nothing', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new Recorder();
    await using server = await startServer(handler, starttlsOptions(certs));
    for (let i = 0; i < 5; i++) {
      const c = await TlsRawClient.connect(server.port);
      await c.reply();
      await c.expect('EHLO client.example', 250);
      await c.expect('STARTTLS', 220);
      // Send a real ClientHello, then vanish.
      const secure = tls.connect({ socket: c.socket, rejectUnauthorized: false });
      secure.on('error', () => {});
      await delay(i * 3);
      secure.destroy();
      c.close();
    }
    await stillServes(server.port, handler);
  });

  test('a stalled handshake is closed within tlsHandshakeTimeout (300 ms)', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new Recorder();
    await using server = await startServer(handler, starttlsOptions(certs, { tlsHandshakeTimeout: 300 }));
    for (const partial of [Buffer.alloc(0), Buffer.from([0x16, 0x03, 0x01, 0x00, 0x40, 0x01])]) {
      const c = await TlsRawClient.connect(server.port);
      try {
        await c.reply();
        await c.expect('EHLO client.example', 250);
        await c.expect('STARTTLS', 220);
        if (partial.length > 0) c.send(partial);
        const start = Date.now();
        await c.waitClosed(3000);
        const took = Date.now() - start;
        assert.ok(took >= 200, `closed too early (${took} ms)`);
        assert.ok(took < 2000, `closed too late (${took} ms)`);
      } finally {
        c.close();
      }
    }
    await stillServes(server.port, handler);
  });

  test('a completed handshake is not cut by the handshake timer', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new Recorder();
    await using server = await startServer(handler, starttlsOptions(certs, { tlsHandshakeTimeout: 200 }));
    const { c } = await startTLSClient(server.port);
    try {
      await delay(400);
      await c.expect('NOOP', 250);
      await deliver(c);
    } finally {
      c.close();
    }
  });
});

describe('implicit TLS (Controller option tls)', () => {
  function implicitOptions(c: Certs, extra: ControllerOptions = {}): ControllerOptions {
    return { tls: { cert: c.server.cert, key: c.server.key }, tlsHandshakeTimeout: 300, ...extra };
  }

  test('a plain-text client gets no greeting and is dropped', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new Recorder();
    await using server = await startServer(handler, implicitOptions(certs));
    // Silent: dropped by the handshake timeout.
    const quiet = await TlsRawClient.connect(server.port);
    try {
      await quiet.waitClosed(3000);
      assert.ok(!quiet.received.toString('latin1').includes('220'), `greeting sent in plain text: ${JSON.stringify(quiet.received.toString('latin1'))}`);
    } finally {
      quiet.close();
    }
    // Talking SMTP: dropped at once.
    const talker = await TlsRawClient.connect(server.port);
    try {
      talker.send('EHLO client.example\r\nMAIL FROM:<evil@x>\r\n');
      await talker.waitClosed(3000);
      const got = talker.received.toString('latin1');
      assert.ok(!/^2\d\d/m.test(got), `plain-text SMTP reply: ${JSON.stringify(got)}`);
    } finally {
      talker.close();
    }
    assert.equal(handler.messages.length, 0);
  });

  test('a TLS client gets 220 and delivers; session.tls is set; STARTTLS is neither listed nor accepted', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new HookRecorder();
    await using server = await startServer(
      handler,
      implicitOptions(certs, { tlsContext: { cert: certs.server.cert, key: certs.server.key } }),
    );
    const c = await TlsRawClient.connectTLS(server.port, { ca: certs.ca, servername: 'localhost', rejectUnauthorized: true });
    try {
      assert.equal((await c.reply()).code, 220);
      assert.equal(c.peerFingerprint(), certs.server.fingerprint256);
      const ehlo = await c.expect('EHLO client.example', 250);
      assert.ok(!ehloKeywords(ehlo).includes('STARTTLS'), ehlo.text);
      await c.expect('STARTTLS', 503);
      await deliver(c);
      assert.equal(handler.messages.length, 1);
      const info = handler.tlsAtMail[0]!;
      assert.ok(info !== null, 'session.tls must be set on an implicit-TLS connection');
      assert.equal(info.protocol, c.tlsSocket.getProtocol());
      assert.equal(info.cipher?.name, c.tlsSocket.getCipher().name);
    } finally {
      c.close();
    }
  });

  test('with requestCert, session.tls.peerCertificate names the client', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new HookRecorder();
    await using server = await startServer(handler, {
      tls: { cert: certs.server.cert, key: certs.server.key, ca: certs.ca, requestCert: true, rejectUnauthorized: false },
    });
    const c = await TlsRawClient.connectTLS(server.port, { cert: certs.client.cert, key: certs.client.key });
    try {
      assert.equal((await c.reply()).code, 220);
      await c.expect('EHLO client.example', 250);
      await c.expect('MAIL FROM:<a@example.com>', 250);
      const peer = handler.tlsAtMail[0]?.peerCertificate as { subject?: { CN?: string }; fingerprint256?: string } | null;
      assert.ok(peer !== null && peer !== undefined, 'no peer certificate in session.tls');
      assert.equal(peer.subject?.CN, 'test-client');
      assert.equal(peer.fingerprint256, certs.client.fingerprint256);
    } finally {
      c.close();
    }
  });

  test('a stalled or broken handshake on the implicit listener is bounded and costs that connection only', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new Recorder();
    await using server = await startServer(handler, implicitOptions(certs));
    const stalled = await TlsRawClient.connect(server.port);
    const partial = await TlsRawClient.connect(server.port);
    const garbage = await TlsRawClient.connect(server.port);
    try {
      partial.send(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x40, 0x01]));
      garbage.send(Buffer.from('\x16\x03\x01\x00\x05hello world this is not TLS'));
      const start = Date.now();
      await Promise.all([stalled.waitClosed(3000), partial.waitClosed(3000), garbage.waitClosed(3000)]);
      assert.ok(Date.now() - start < 2000, `took ${Date.now() - start} ms`);
    } finally {
      stalled.close();
      partial.close();
      garbage.close();
    }
    const c = await TlsRawClient.connectTLS(server.port);
    try {
      assert.equal((await c.reply()).code, 220);
      await c.expect('EHLO client.example', 250);
      await deliver(c);
    } finally {
      c.close();
    }
    assert.equal(handler.messages.length, 1);
  });
});

describe('reloadTLS', () => {
  test('STARTTLS: new connections get the new certificate, an open one keeps working', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new Recorder();
    await using server = await startServer(handler, starttlsOptions(certs));
    const old = await startTLSClient(server.port);
    try {
      assert.equal(old.c.peerFingerprint(), certs.server.fingerprint256);
      server.reloadTLS({ tlsContext: { cert: certs.server2.cert, key: certs.server2.key } });
      const fresh = await startTLSClient(server.port);
      try {
        assert.equal(fresh.c.peerFingerprint(), certs.server2.fingerprint256);
        assert.notEqual(certs.server.fingerprint256, certs.server2.fingerprint256);
        await deliver(fresh.c);
      } finally {
        fresh.c.close();
      }
      await old.c.expect('NOOP', 250);
      await deliver(old.c);
      assert.equal(handler.messages.length, 2);
    } finally {
      old.c.close();
    }
  });

  test('implicit TLS: new connections get the new certificate, an open one keeps working', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new Recorder();
    await using server = await startServer(handler, { tls: { cert: certs.server.cert, key: certs.server.key } });
    const old = await TlsRawClient.connectTLS(server.port);
    try {
      assert.equal((await old.reply()).code, 220);
      assert.equal(old.peerFingerprint(), certs.server.fingerprint256);
      server.reloadTLS({ tls: { cert: certs.server2.cert, key: certs.server2.key } });
      const fresh = await TlsRawClient.connectTLS(server.port);
      try {
        assert.equal((await fresh.reply()).code, 220);
        assert.equal(fresh.peerFingerprint(), certs.server2.fingerprint256);
      } finally {
        fresh.close();
      }
      await old.expect('EHLO client.example', 250);
      await deliver(old);
      assert.equal(handler.messages.length, 1);
    } finally {
      old.close();
    }
  });

  test('reloading implicit-TLS certificates on a controller without that listener throws', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new Recorder(), starttlsOptions(certs));
    assert.throws(() => server.reloadTLS({ tls: { cert: certs.server2.cert, key: certs.server2.key } }));
    // The STARTTLS certificate was not touched.
    const { c } = await startTLSClient(server.port);
    try {
      assert.equal(c.peerFingerprint(), certs.server.fingerprint256);
    } finally {
      c.close();
    }
  });

  test('a bad certificate given to reloadTLS throws and the old one stays', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new Recorder(), starttlsOptions(certs));
    assert.throws(() => server.reloadTLS({ tlsContext: { cert: 'not a certificate', key: certs.server2.key } }));
    const { c } = await startTLSClient(server.port);
    try {
      assert.equal(c.peerFingerprint(), certs.server.fingerprint256);
    } finally {
      c.close();
    }
  });
});
