/**
 * Proxy over real sockets: a client talks to a Proxy controller that relays to an upstream (a
 * second tsmtpd with a Recorder, aiosmtpd from Debian's python3-aiosmtpd, a dead port, a silent
 * server). The upstream gets exactly the envelope and one message per transaction, bodies with
 * bare line endings included; its refusals come back with their codes; no upstream means a 4xx.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Proxy, toCRLF, type ProxyOptions } from '../src/handlers/proxy.js';
import type { ControllerOptions } from '../src/controller.js';
import { UsageError, type SMTPServer } from '../src/handler.js';
import type { Envelope, RcptOptions, Session } from '../src/session.js';
import { CliProcess, canConnect, freePort } from './cli-util.js';
import { RawClient, Recorder, greeted, startServer } from './helpers.js';

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

/** Sends one transaction; returns the replies to RCPT (one each) and the final reply. */
async function transaction(
  c: RawClient,
  body: string,
  rcpts: string[] = ['b@example.com'],
  from = 'a@example.com',
): Promise<{ rcpt: number[]; end: string }> {
  assert.equal((await c.cmd(`MAIL FROM:<${from}>`)).code, 250);
  const rcpt: number[] = [];
  for (const r of rcpts) rcpt.push((await c.cmd(`RCPT TO:<${r}>`)).code);
  assert.equal((await c.cmd('DATA')).code, 354);
  // The body's own final CRLF is the terminator's first part; without one, one is added.
  c.send(body + (body.endsWith('\r\n') ? '.\r\n' : '\r\n.\r\n'));
  return { rcpt, end: (await c.reply(15000)).text };
}

/** A Proxy controller in front of `upstreamPort`. */
function startProxy(upstreamPort: number, timeout = 5000, options: ProxyOptions = {}, controller: ControllerOptions = {}) {
  return startServer(new Proxy('127.0.0.1', upstreamPort, { timeout, ...options }), { logger: quiet, ...controller });
}

describe('Proxy relaying to a second tsmtpd', () => {
  test('the upstream gets exactly the envelope, and the body with X-Peer first', async () => {
    const recorder = new Recorder();
    await using upstream = await startServer(recorder);
    await using proxy = await startProxy(upstream.port);
    const c = await greeted(proxy.port);
    try {
      const body = 'X-Peer: forged\r\nSubject: hi\r\n\r\nline one\r\n..starts with a dot\r\n';
      const r = await transaction(c, body, ['b@example.com', 'c@example.net', 'd@example.org']);
      assert.equal(r.end, '250 2.6.0 OK');
      assert.equal(recorder.messages.length, 1);
      const m = recorder.messages[0]!;
      assert.equal(m.mailFrom, 'a@example.com');
      assert.deepEqual(m.rcptTos, ['b@example.com', 'c@example.net', 'd@example.org']);
      assert.equal(
        m.content.toString('latin1'),
        `X-Peer: 127.0.0.1:${c.socket.localPort}\r\nX-Peer: forged\r\nSubject: hi\r\n\r\nline one\r\n.starts with a dot\r\n`,
      );
      // Second transaction on the same client connection: a new upstream connection, one message.
      assert.equal((await transaction(c, 'Subject: two\r\n\r\nx')).end, '250 2.6.0 OK');
      assert.equal(recorder.messages.length, 2);
      assert.equal(recorder.messages[1]!.content.toString('latin1'), `X-Peer: 127.0.0.1:${c.socket.localPort}\r\nSubject: two\r\n\r\nx\r\n`);
    } finally {
      c.close();
    }
  });

  test('the null sender is relayed as <>', async () => {
    const recorder = new Recorder();
    await using upstream = await startServer(recorder);
    await using proxy = await startProxy(upstream.port);
    const c = await greeted(proxy.port);
    try {
      assert.equal((await transaction(c, 'Subject: bounce\r\n\r\nx', ['b@example.com'], '')).end, '250 2.6.0 OK');
      assert.equal(recorder.messages[0]!.mailFrom, '');
    } finally {
      c.close();
    }
  });

  test('bare LF.LF and CR.CR with smuggled commands reach the upstream as ONE message, normalized', async () => {
    const recorder = new Recorder();
    await using upstream = await startServer(recorder);
    await using proxy = await startProxy(upstream.port);
    const c = await greeted(proxy.port);
    try {
      const smuggled = 'MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nsmuggled\r\n';
      const body = 'Subject: s\r\n\r\nhello\n.\n' + smuggled + 'again\r.\r' + smuggled + '...two dots';
      const r = await transaction(c, body);
      assert.equal(r.end, '250 2.6.0 OK');
      assert.equal((await c.cmd('NOOP')).code, 250, 'nothing else was answered');
      assert.equal(recorder.messages.length, 1, 'exactly one message upstream');
      const m = recorder.messages[0]!;
      assert.equal(m.mailFrom, 'a@example.com');
      assert.deepEqual(m.rcptTos, ['b@example.com']);
      assert.equal(
        m.content.toString('latin1'),
        `X-Peer: 127.0.0.1:${c.socket.localPort}\r\n` +
          'Subject: s\r\n\r\nhello\r\n.\r\n' + smuggled + 'again\r\n.\r\n' + smuggled + '..two dots\r\n',
      );
    } finally {
      c.close();
    }
  });

  test("the upstream's refusal of the only recipient comes back at RCPT with its code and text", async () => {
    const picky = new Picky();
    await using upstream = await startServer(picky, { logger: quiet });
    await using proxy = await startProxy(upstream.port);
    const c = await greeted(proxy.port);
    try {
      assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).text, '250 2.1.0 OK', 'the upstream reply');
      assert.equal((await c.cmd('RCPT TO:<nobody@example.com>')).text, '550 5.1.1 No such user');
      assert.equal((await c.cmd('DATA')).code, 503, 'no recipient was accepted: no DATA');
      assert.equal(picky.messages.length, 0);
    } finally {
      c.close();
    }
  });

  test('some recipients refused: each RCPT gets the upstream reply, the message goes to exactly the accepted ones', async () => {
    const picky = new Picky();
    await using upstream = await startServer(picky, { logger: quiet });
    await using proxy = await startProxy(upstream.port);
    const c = await greeted(proxy.port);
    try {
      assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
      const b = await c.cmd('RCPT TO:<b@example.com>');
      const nobody = await c.cmd('RCPT TO:<nobody@example.com>');
      const cc = await c.cmd('RCPT TO:<c@example.com>');
      assert.deepEqual([b.text, nobody.text, cc.text], ['250 2.1.5 OK', '550 5.1.1 No such user', '250 2.1.5 OK']);
      assert.equal((await c.cmd('DATA')).code, 354);
      c.send('Subject: s\r\n\r\nx\r\n.\r\n');
      assert.equal((await c.reply(15000)).text, '250 2.6.0 OK');
      assert.equal(picky.messages.length, 1);
      assert.deepEqual(picky.messages[0]!.rcptTos, ['b@example.com', 'c@example.com']);
    } finally {
      c.close();
    }
  });

  test("the upstream's refusal of the sender comes back at MAIL, of the message at DATA, with their codes", async () => {
    const picky = new Picky();
    await using upstream = await startServer(picky, { logger: quiet });
    await using proxy = await startProxy(upstream.port);
    const c = await greeted(proxy.port);
    try {
      assert.equal((await c.cmd('MAIL FROM:<spammer@example.com>')).text, '553 5.7.1 Sender refused');
      assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 503, 'no transaction here either');
      assert.equal((await transaction(c, 'Subject: reject me\r\n\r\nx')).end, '554 5.7.1 Rejected by policy');
      assert.equal((await transaction(c, 'Subject: defer me\r\n\r\nx')).end, '452 4.3.1 Insufficient storage');
      assert.equal((await transaction(c, 'Subject: fine\r\n\r\nx')).end, '250 2.6.0 OK');
      assert.equal(picky.messages.length, 1);
    } finally {
      c.close();
    }
  });

  test('an unreachable upstream (a port just closed) gives a 4xx at MAIL, never 250', async () => {
    const dead = await freePort();
    await using proxy = await startProxy(dead);
    const c = await greeted(proxy.port);
    try {
      assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).text, '451 4.4.1 Upstream server unavailable, try again later');
      assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 503);
      assert.equal((await c.cmd('NOOP')).code, 250, 'the session goes on');
    } finally {
      c.close();
    }
  });

  test('an upstream that never greets times out into a 4xx', async () => {
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((s) => sockets.add(s.on('error', () => {})));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      await using proxy = await startProxy((silent.address() as net.AddressInfo).port, 300);
      const c = await greeted(proxy.port);
      try {
        const started = Date.now();
        assert.match((await c.cmd('MAIL FROM:<a@example.com>')).text, /^451 4\.4\.1 /);
        assert.ok(Date.now() - started < 5000, 'bounded by the timeout option');
      } finally {
        c.close();
      }
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  });

  test('an upstream that answers 421 at once gives a 4xx (not 421: that would close our client)', async () => {
    const busy = net.createServer((s) => s.on('error', () => {}).end('421 4.3.2 busy\r\n'));
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    try {
      await using proxy = await startProxy((busy.address() as net.AddressInfo).port);
      const c = await greeted(proxy.port);
      try {
        assert.match((await c.cmd('MAIL FROM:<a@example.com>')).text, /^4(?!21)/);
        assert.equal((await c.cmd('NOOP')).code, 250);
      } finally {
        c.close();
      }
    } finally {
      await new Promise((r) => busy.close(r));
    }
  });
});

describe('Proxy: the upstream decides at each command', () => {
  test('the upstream stopped mid-transaction: 4xx at DATA, nothing delivered, the session goes on', async () => {
    const recorder = new Recorder();
    const upstream = await startServer(recorder, { logger: quiet, stopTimeout: 100 });
    try {
      await using proxy = await startProxy(upstream.port);
      const c = await greeted(proxy.port);
      try {
        assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
        assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250);
        await upstream.stop();
        assert.equal((await c.cmd('DATA')).code, 354);
        c.send('Subject: s\r\n\r\nx\r\n.\r\n');
        assert.equal((await c.reply(15000)).text, '451 4.4.1 Upstream server unavailable, try again later');
        assert.equal(recorder.messages.length, 0);
        assert.equal((await c.cmd('NOOP')).code, 250);
        assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 451, 'still gone: a 4xx again, never 250');
      } finally {
        c.close();
      }
    } finally {
      await upstream.stop();
    }
  });

  test('an upstream that dies while the body is sent: 451 at DATA', async () => {
    await using fake = await scripted((line) => (line === 'DATA' ? '354 go ahead' : line.startsWith('QUIT') ? '221 bye' : '250 ok'), {
      onBody: (socket) => socket.destroy(),
    });
    await using proxy = await startProxy(fake.port);
    const c = await greeted(proxy.port);
    try {
      assert.equal((await transaction(c, 'Subject: s\r\n\r\nx')).end, '451 4.4.1 Upstream server unavailable, try again later');
      assert.equal((await c.cmd('NOOP')).code, 250);
    } finally {
      c.close();
    }
  });

  test('a 421 from the upstream at RCPT becomes 451; our client stays connected', async () => {
    await using fake = await scripted((line) => (line.startsWith('RCPT') ? '421 4.3.2 shutting down' : '250 ok'), { closeAfter421: true });
    await using proxy = await startProxy(fake.port);
    const c = await greeted(proxy.port);
    try {
      assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<b@example.com>')).text, '451 4.3.2 shutting down');
      assert.equal((await c.cmd('NOOP')).code, 250);
      assert.equal(c.closed, false);
    } finally {
      c.close();
    }
  });

  test('RSET ends the upstream transaction; the next one starts clean on a new connection', async () => {
    const counting = new Counting();
    await using upstream = await startServer(counting, { logger: quiet });
    await using proxy = await startProxy(upstream.port);
    const c = await greeted(proxy.port);
    try {
      assert.equal((await c.cmd('MAIL FROM:<first@example.com>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<one@example.com>')).code, 250);
      assert.equal((await c.cmd('RSET')).text, '250 2.0.0 OK');
      await waitFor(async () => counting.quits === 1, 'QUIT upstream after RSET', 5000);
      assert.equal((await c.cmd('MAIL FROM:<second@example.com>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<two@example.com>')).code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
      c.send('Subject: second\r\n\r\nx\r\n.\r\n');
      assert.equal((await c.reply(15000)).code, 250);
      assert.equal(counting.messages.length, 1);
      assert.equal(counting.messages[0]!.mailFrom, 'second@example.com');
      assert.deepEqual(counting.messages[0]!.rcptTos, ['two@example.com']);
      assert.equal(counting.mails, 2, 'one MAIL per transaction');
      await waitFor(async () => counting.quits === 2, 'QUIT upstream after DATA', 5000);
      // EHLO in the middle of a transaction ends it too.
      assert.equal((await c.cmd('MAIL FROM:<third@example.com>')).code, 250);
      assert.equal((await c.cmd('EHLO client.example')).code, 250);
      await waitFor(async () => counting.quits === 3, 'QUIT upstream after EHLO', 5000);
      assert.equal((await c.cmd('QUIT')).code, 221);
      assert.equal(counting.messages.length, 1);
    } finally {
      c.close();
    }
  });

  test('a client that vanishes mid-transaction: the upstream connection is closed by the idle timeout', async () => {
    const counting = new Counting();
    await using upstream = await startServer(counting, { logger: quiet });
    await using proxy = await startProxy(upstream.port, 5000, { idleTimeout: 300 });
    const c = await greeted(proxy.port);
    assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250);
    c.close();
    await waitFor(async () => counting.quits === 1, 'the idle upstream connection says QUIT', 5000);
    assert.equal(counting.messages.length, 0);
  });

  test('a transaction whose upstream connection idled out is opened again, once, at the next command', async () => {
    const counting = new Counting();
    await using upstream = await startServer(counting, { logger: quiet });
    await using proxy = await startProxy(upstream.port, 5000, { idleTimeout: 200 });
    const c = await greeted(proxy.port);
    try {
      assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250);
      await waitFor(async () => counting.quits === 1, 'idle QUIT', 5000);
      assert.equal((await c.cmd('RCPT TO:<c@example.com>')).code, 250);
      await waitFor(async () => counting.quits === 2, 'idle QUIT again', 5000);
      assert.equal((await c.cmd('DATA')).code, 354);
      c.send('Subject: s\r\n\r\nx\r\n.\r\n');
      assert.equal((await c.reply(15000)).code, 250);
      assert.equal(counting.messages.length, 1);
      assert.equal(counting.messages[0]!.mailFrom, 'a@example.com');
      assert.deepEqual(counting.messages[0]!.rcptTos, ['b@example.com', 'c@example.com']);
      assert.equal(counting.mails, 3);
    } finally {
      c.close();
    }
  });

  test('LMTP: one reply per accepted recipient, the upstream final reply each', async () => {
    const picky = new Picky();
    await using upstream = await startServer(picky, { logger: quiet });
    await using proxy = await startProxy(upstream.port, 5000, {}, { lmtp: true });
    const c = await greeted(proxy.port, 'LHLO client.example');
    try {
      for (const [subject, want] of [
        ['fine', '250 2.6.0 OK'],
        ['reject me', '554 5.7.1 Rejected by policy'],
      ] as const) {
        assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
        assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250);
        assert.equal((await c.cmd('RCPT TO:<nobody@example.com>')).text, '550 5.1.1 No such user');
        assert.equal((await c.cmd('RCPT TO:<c@example.com>')).code, 250);
        assert.equal((await c.cmd('DATA')).code, 354);
        c.send(`Subject: ${subject}\r\n\r\nx\r\n.\r\n`);
        assert.equal((await c.reply(15000)).text, want);
        assert.equal((await c.reply(15000)).text, want);
        assert.equal((await c.cmd('NOOP')).code, 250, 'exactly two replies');
      }
      assert.equal(picky.messages.length, 1);
      assert.deepEqual(picky.messages[0]!.rcptTos, ['b@example.com', 'c@example.com']);
    } finally {
      c.close();
    }
  });

  test('SIZE, BODY=8BITMIME and SMTPUTF8 go upstream when the client declared them', async () => {
    const recorder = new Recorder();
    await using upstream = await startServer(recorder, { logger: quiet });
    await using proxy = await startProxy(upstream.port);
    const c = await greeted(proxy.port);
    try {
      assert.equal((await c.cmd('MAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME SMTPUTF8')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<ü@example.com>')).code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
      c.send('Subject: s\r\n\r\nx\r\n.\r\n');
      assert.equal((await c.reply(15000)).code, 250);
      const xPeer = `X-Peer: 127.0.0.1:${c.socket.localPort}\r\n`;
      assert.deepEqual(recorder.messages[0]!.mailParams, [`SIZE=${100 + xPeer.length + 2}`, 'BODY=8BITMIME', 'SMTPUTF8']);
      assert.deepEqual(recorder.messages[0]!.rcptTos, ['ü@example.com']);
    } finally {
      c.close();
    }
  });

  test('an upstream without SMTPUTF8: non-ASCII addresses get 553 5.6.7, ASCII ones go on without it', async () => {
    const recorder = new Recorder();
    await using upstream = await startServer(recorder, { logger: quiet, enableSMTPUTF8: false });
    await using proxy = await startProxy(upstream.port);
    const c = await greeted(proxy.port);
    try {
      assert.match((await c.cmd('MAIL FROM:<ü@example.com> SMTPUTF8')).text, /^553 5\.6\.7 /);
      assert.equal((await c.cmd('MAIL FROM:<a@example.com> SMTPUTF8')).code, 250);
      assert.match((await c.cmd('RCPT TO:<ü@example.com>')).text, /^553 5\.6\.7 /);
      assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
      c.send('Subject: s\r\n\r\nx\r\n.\r\n');
      assert.equal((await c.reply(15000)).code, 250);
      assert.deepEqual(recorder.messages[0]!.mailParams, []);
      assert.deepEqual(recorder.messages[0]!.rcptTos, ['b@example.com']);
    } finally {
      c.close();
    }
  });

  test('BINARYMIME is not offered (the message goes on with DATA) and BODY=BINARYMIME is refused', async () => {
    const recorder = new Recorder();
    await using upstream = await startServer(recorder, { logger: quiet });
    await using proxy = await startProxy(upstream.port);
    const c = await RawClient.connect(proxy.port);
    try {
      assert.equal((await c.reply()).code, 220);
      const ehlo = await c.cmd('EHLO client.example');
      assert.ok(!ehlo.lines.some((l) => /BINARYMIME/i.test(l)), ehlo.text);
      assert.ok(ehlo.lines.some((l) => /CHUNKING/i.test(l)), 'BDAT from the client is fine');
      assert.match((await c.cmd('MAIL FROM:<a@example.com> BODY=BINARYMIME')).text, /^555 /);
      // BDAT from the client, DATA upstream.
      assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250);
      const body = 'Subject: bdat\r\n\r\n.dot\nbare\r\n';
      c.send(`BDAT ${Buffer.byteLength(body)} LAST\r\n${body}`);
      assert.equal((await c.reply(15000)).code, 250);
      assert.equal(
        recorder.messages[0]!.content.toString('latin1'),
        `X-Peer: 127.0.0.1:${c.socket.localPort}\r\nSubject: bdat\r\n\r\n.dot\r\nbare\r\n`,
      );
    } finally {
      c.close();
    }
  });

  test('a handler that delegates only handleDATA to a Proxy: recipients are put upstream at DATA', async () => {
    const picky = new Picky();
    await using upstream = await startServer(picky, { logger: quiet });
    const relay = new Proxy('127.0.0.1', upstream.port, { timeout: 5000 });
    const router = { handleDATA: (server: SMTPServer, session: Session, envelope: Envelope) => relay.handleDATA(server, session, envelope) };
    await using front = await startServer(router, { logger: quiet });
    const c = await greeted(front.port);
    try {
      assert.equal((await transaction(c, 'Subject: s\r\n\r\nx', ['b@example.com', 'c@example.com'])).end, '250 2.6.0 OK');
      assert.equal(picky.messages.length, 1);
      assert.deepEqual(picky.messages[0]!.rcptTos, ['b@example.com', 'c@example.com']);
      // SMTP has one reply per message: with one recipient refused upstream, none gets it.
      const r = await transaction(c, 'Subject: s\r\n\r\nx', ['b@example.com', 'nobody@example.com']);
      assert.deepEqual(r.rcpt, [250, 250], 'accepted here by the default handleRCPT');
      assert.equal(r.end, '550 5.1.1 No such user');
      assert.equal(picky.messages.length, 1, 'nothing delivered');
      assert.equal((await transaction(c, 'Subject: s\r\n\r\nx', ['b@example.com'], 'spammer@example.com')).end, '553 5.7.1 Sender refused');
    } finally {
      c.close();
    }
  });
});

describe('Proxy against aiosmtpd (Debian python3-aiosmtpd)', () => {
  const available = hasAiosmtpd();
  test('the Maildir gets the message once, bare line endings normalized', { skip: !available && !process.env.CI && 'python3 -m aiosmtpd not installed' }, async () => {
    const top = await mkdtemp(join(tmpdir(), 'tsmtpd-proxy-'));
    // Python's Maildir creates tmp/, new/, cur/ only when it creates the directory itself.
    const dir = join(top, 'Maildir');
    const port = await freePort();
    const child = spawn('/usr/bin/python3', ['-m', 'aiosmtpd', '-n', '-c', 'aiosmtpd.handlers.Mailbox', dir, '-l', `127.0.0.1:${port}`], {
      stdio: 'ignore',
    });
    try {
      await waitFor(() => canConnect(port), 'aiosmtpd listening');
      await using proxy = await startProxy(port);
      const c = await greeted(proxy.port);
      try {
        const body = 'Subject: via aiosmtpd\r\n\r\nhello\n.\nMAIL FROM:<evil@x>\r\n..dot line\r\nend';
        const r = await transaction(c, body, ['b@example.com', 'c@example.com']);
        assert.equal(r.end, '250 2.6.0 OK');
      } finally {
        c.close();
      }
      const files = await readdir(join(dir, 'new'));
      assert.equal(files.length, 1, 'one message');
      const text = (await readFile(join(dir, 'new', files[0]!))).toString('latin1');
      assert.match(text, /^X-Peer: 127\.0\.0\.1:\d+\n/);
      assert.match(text, /\nSubject: via aiosmtpd\n/);
      // aiosmtpd's Mailbox stores with \n; the bare LFs arrived as line ends, the dot unstuffed once.
      assert.match(text, /\n\nhello\n\.\nMAIL FROM:<evil@x>\n\.dot line\nend\n/);
      assert.match(text, /\nX-MailFrom: a@example\.com\n/);
      assert.match(text, /\nX-RcptTo: b@example\.com, c@example\.com\n/);
    } finally {
      child.kill('SIGKILL');
      await rm(top, { recursive: true, force: true });
    }
  });
});

describe('Proxy on the command line', () => {
  test('tsmtpd -n -l 127.0.0.1:P1 -c Proxy 127.0.0.1 P2 relays to a live upstream', async () => {
    const recorder = new Recorder();
    await using upstream = await startServer(recorder);
    const port = await freePort();
    const cli = new CliProcess(['-n', '-l', `127.0.0.1:${port}`, '-c', 'Proxy', '127.0.0.1', String(upstream.port)]);
    try {
      await cli.listening();
      const c = await greeted(port);
      try {
        assert.equal((await transaction(c, 'Subject: cli\r\n\r\nbare\nlf')).end, '250 2.6.0 OK');
      } finally {
        c.close();
      }
      assert.equal(recorder.messages.length, 1);
      assert.match(recorder.messages[0]!.content.toString('latin1'), /^X-Peer: 127\.0\.0\.1:\d+\r\nSubject: cli\r\n\r\nbare\r\nlf\r\n$/);
    } finally {
      await cli.stop();
    }
  });

  test('wrong arguments are a usage error (exit 2)', async () => {
    for (const args of [[], ['127.0.0.1'], ['127.0.0.1', '0'], ['127.0.0.1', '65536'], ['127.0.0.1', '25x'], ['h', '25', 'extra']]) {
      const cli = new CliProcess(['-n', '-l', '127.0.0.1:0', '-c', 'Proxy', ...args]);
      try {
        const exit = await cli.waitExit();
        assert.equal(exit.code, 2, `args ${JSON.stringify(args)}: ${cli.stderr}`);
        assert.match(cli.stderr, /Proxy/);
      } finally {
        await cli.stop();
      }
    }
  });
});

describe('Proxy construction', () => {
  test('fromCli validates HOST PORT', () => {
    const p = Proxy.fromCli('mx.example', '2525');
    assert.equal(p.host, 'mx.example');
    assert.equal(p.port, 2525);
    for (const args of [[], ['h'], ['h', '0'], ['h', '65536'], ['h', '-1'], ['h', '25.0'], ['h', ' 25'], ['', '25'], ['h', '25', 'x']]) {
      assert.throws(() => Proxy.fromCli(...args), UsageError, JSON.stringify(args));
    }
  });

  test('the constructor refuses a bad port', () => {
    for (const port of [0, 65536, 25.5, NaN]) assert.throws(() => new Proxy('h', port), RangeError);
    assert.equal(new Proxy('h', 65535).port, 65535);
  });

  test('toCRLF turns every bare CR and LF into CRLF and leaves CRLF alone', () => {
    const cases: Array<[string, string]> = [
      ['', ''],
      ['a\r\nb', 'a\r\nb'],
      ['a\nb\rc', 'a\r\nb\r\nc'],
      ['\n\r', '\r\n\r\n'],
      ['\r\r\n\n', '\r\n\r\n\r\n'],
      ['x\r', 'x\r\n'],
      ['\n.\n', '\r\n.\r\n'],
    ];
    for (const [input, want] of cases) assert.equal(toCRLF(Buffer.from(input, 'latin1')).toString('latin1'), want, JSON.stringify(input));
    const clean = Buffer.from('a\r\nb\r\n');
    assert.equal(toCRLF(clean), clean, 'no copy when nothing changes');
  });
});

/** An upstream with opinions: refuses some senders, recipients and messages. */
class Picky extends Recorder {
  handleMAIL(_s: SMTPServer, _session: Session, envelope: Envelope, address: string): string {
    if (address.startsWith('spammer@')) return '553 5.7.1 Sender refused';
    envelope.mailFrom = address;
    return '250 OK';
  }
  handleRCPT(_s: SMTPServer, _session: Session, envelope: Envelope, address: string, options: RcptOptions): string {
    if (address.startsWith('nobody@')) return '550 5.1.1 No such user';
    envelope.rcptTos.push(address);
    envelope.rcptOptions.push(options);
    return '250 OK';
  }
  override handleDATA(server: SMTPServer, session: Session, envelope: Envelope): string {
    const text = envelope.originalContent!.toString('latin1');
    if (text.includes('Subject: reject me')) return '554 5.7.1 Rejected by policy';
    if (text.includes('Subject: defer me')) return '452 4.3.1 Insufficient storage';
    return super.handleDATA(server, session, envelope);
  }
}

/** An upstream that counts MAIL, QUIT and RSET. */
class Counting extends Recorder {
  mails = 0;
  quits = 0;
  handleMAIL(_s: SMTPServer, _session: Session, envelope: Envelope, address: string): string {
    this.mails++;
    envelope.mailFrom = address;
    return '250 OK';
  }
  handleQUIT(): string {
    this.quits++;
    return '221 Bye';
  }
}

/**
 * A fake upstream speaking from a script: a 220 greeting, then `answer(line)` for each command
 * line; after a 354, the body goes to `onBody` (or is read to CRLF.CRLF and answered 250).
 */
async function scripted(
  answer: (line: string) => string,
  opts: { onBody?: (socket: net.Socket) => void; closeAfter421?: boolean } = {},
): Promise<{ port: number; [Symbol.asyncDispose](): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    let buf = '';
    let inBody = false;
    socket.write('220 fake ESMTP\r\n');
    socket.on('data', (chunk: Buffer) => {
      buf += chunk.toString('latin1');
      for (;;) {
        if (inBody) {
          if (opts.onBody) return opts.onBody(socket);
          const end = buf.indexOf('\r\n.\r\n');
          if (end === -1) return;
          buf = buf.slice(end + 5);
          inBody = false;
          socket.write('250 queued\r\n');
          continue;
        }
        const nl = buf.indexOf('\r\n');
        if (nl === -1) return;
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        const reply = answer(line);
        socket.write(reply + '\r\n');
        if (reply.startsWith('354')) inBody = true;
        if (reply.startsWith('221') || (reply.startsWith('421') && opts.closeAfter421)) return void socket.end();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    async [Symbol.asyncDispose]() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

function hasAiosmtpd(): boolean {
  try {
    execFileSync('/usr/bin/python3', ['-c', 'import aiosmtpd'], { stdio: 'ignore', timeout: 10000 });
    return true;
  } catch {
    return false;
  }
}

async function waitFor(check: () => Promise<boolean>, what: string, ms = 10000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
