/**
 * XFORWARD with a real Postfix, as an after-queue content filter (Postfix's FILTER_README):
 *
 *   test client (127.0.0.2) -> Postfix smtpd :A -> queue -> smtp client with XFORWARD
 *     -> tsmtpd (Proxy handler, xforwardAllow 127.0.0.1) -> Postfix smtpd :B (no content_filter)
 *     -> queue -> relayhost: a tsmtpd capture server
 *
 * The message must arrive with the client Postfix A saw (127.0.0.2 and its port) in tsmtpd's
 * X-Peer, though tsmtpd's own peer was Postfix on 127.0.0.1. One private Postfix instance
 * (its own config dir, queue and log) serves both listeners. Skips without Postfix or root,
 * fails so under CI=true; every wait is bounded.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SMTPServer } from '../src/handler.js';
import { Proxy } from '../src/handlers/proxy.js';
import type { Envelope, Session } from '../src/session.js';
import type { XForwardData } from '../src/xforward.js';
import { freePort } from './cli-util.js';
import { startServer } from './helpers.js';
import { MemoryLogger } from './commands-util.js';
import { PostfixInstance, needPostfix } from './postfix-util.js';
import { Probe } from './scale-util.js';

/** The content filter: the Proxy handler, noting what XFORWARD told it. */
class Filter extends Proxy {
  forwarded: Array<XForwardData | null> = [];
  peers: string[] = [];
  override async handleDATA(server: SMTPServer, session: Session, envelope: Envelope): Promise<string | string[]> {
    this.forwarded.push(session.xforward);
    this.peers.push(session.peer.address);
    return super.handleDATA(server, session, envelope);
  }
}

/** The final destination: keeps each message as it arrived. */
class Capture {
  messages: string[] = [];
  handleDATA(_server: SMTPServer, _session: Session, envelope: Envelope): string {
    this.messages.push(envelope.originalContent!.toString('utf8'));
    return '250 2.0.0 OK: captured';
  }
}

test('Postfix after-queue content filter: XFORWARD carries the original client through tsmtpd\'s Proxy', { timeout: 60000 }, async (t) => {
  if (!needPostfix(t)) return;
  const [portA, portB] = [await freePort(), await freePort()];
  const capture = new Capture();
  await using sink = await startServer(capture, { logger: new MemoryLogger() });
  const filter = new Filter('127.0.0.1', portB, { timeout: 10000 });
  await using tsmtpd = await startServer(filter, { logger: new MemoryLogger(), xforwardAllow: ['127.0.0.1'] });
  const pf = new PostfixInstance(
    { relayhost: `[127.0.0.1]:${sink.port}`, smtpd_peername_lookup: 'no', smtp_tls_security_level: 'none' },
    [
      `127.0.0.1:${portA} inet n - n - - smtpd -o content_filter=tsmtpd:[127.0.0.1]:${tsmtpd.port}`,
      'tsmtpd    unix  -       -       n       -       2       smtp -o smtp_send_xforward_command=yes -o disable_mime_output_conversion=yes',
      `127.0.0.1:${portB} inet n - n - - smtpd -o content_filter= -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters -o smtpd_authorized_xforward_hosts=127.0.0.0/8`,
      '',
    ].join('\n'),
  );
  try {
    await pf.start();
    // The original client, on an address of its own so it cannot be mistaken for Postfix's.
    let c: Probe | null = null;
    const deadline = Date.now() + 10000;
    while (c === null) {
      c = await Probe.connect(portA, { localAddress: '127.0.0.2' }).catch((error: Error) => {
        if (Date.now() > deadline) throw error;
        return null;
      });
      if (c === null) await new Promise((r) => setTimeout(r, 200));
    }
    const clientPort = c.socket.localPort!;
    try {
      assert.equal((await c.reply(10000)).code, 220);
      assert.equal((await c.cmd('EHLO client.example')).code, 250);
      assert.equal((await c.cmd('MAIL FROM:<alice@client.example>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<bob@example.net>')).code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
      const queued = await c.cmd('Subject: through the filter\r\nFrom: alice@client.example\r\n\r\nHello.\r\n.');
      assert.equal(queued.code, 250, queued.text);
      await c.cmd('QUIT');
    } finally {
      c.close();
    }
    const until = Date.now() + 30000;
    let ticks = 0;
    while (capture.messages.length === 0) {
      if (Date.now() > until) assert.fail(`no message reached the capture; Postfix log:\n${pf.tail(60)}`);
      await new Promise((r) => setTimeout(r, 250));
      if (++ticks % 8 === 0) await pf.flush();
    }
    const [forwarded] = filter.forwarded;
    assert.equal(filter.peers[0], '127.0.0.1', 'tsmtpd itself was talking to Postfix');
    assert.equal(forwarded?.ADDR, '127.0.0.2');
    assert.equal(forwarded?.PORT, clientPort);
    assert.equal(forwarded?.HELO, 'client.example');
    assert.equal(forwarded?.PROTO, 'ESMTP');
    assert.equal(forwarded?.SOURCE, 'REMOTE');
    assert.match(String(forwarded?.IDENT), /^[0-9A-Za-z]+$/, 'the queue ID of Postfix A');
    const message = capture.messages[0]!;
    // tsmtpd's trace header, intact through Postfix B: the client as Postfix A saw it.
    assert.match(message, new RegExp(`^X-Peer: 127\\.0\\.0\\.2:${clientPort}$`, 'm'));
    assert.match(message, /^Received: from client\.example \(.*\[127\.0\.0\.2\]\)/m);
    assert.match(message, /^Subject: through the filter$/m);
  } finally {
    await pf.destroy();
  }
});
