/**
 * XFORWARD (Postfix's extension, https://www.postfix.org/XFORWARD_README.html) over real
 * sockets: offered and obeyed only for MTAs in xforwardAllow; the attributes land typed in
 * session.xforward for one transaction and name the client in the trace headers; bad values are
 * 501, an untrusted client 550, XFORWARD inside a transaction 503.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Controller, type ControllerOptions } from '../src/controller.js';
import type { Handler, SMTPServer } from '../src/handler.js';
import type { Logger } from '../src/options.js';
import { formatClient, type Envelope, type Session } from '../src/session.js';
import type { XForwardData } from '../src/xforward.js';
import { parseXforward } from '../src/xforward.js';
import { prepareMessage } from '../src/handlers/headers.js';
import { Debugging } from '../src/handlers/debugging.js';
import { Probe } from './scale-util.js';
import { authResultsOf, withAuthResults } from '../src/authres/index.js';
import { fixtureResolver, message } from './authres-util.js';

const quiet: Logger = { debugEnabled: false, debug() {}, info() {}, warn() {}, error() {} };
const KEYWORD = 'XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE';

/** Keeps what each hook saw of session.xforward, and each message with the trace headers in front. */
class Seen implements Handler {
  atMail: Array<XForwardData | null> = [];
  atData: Array<XForwardData | null> = [];
  messages: string[] = [];
  handleMAIL(_s: SMTPServer, session: Session, envelope: Envelope, address: string): string {
    this.atMail.push(session.xforward);
    envelope.mailFrom = address;
    return '250 OK';
  }
  handleDATA(_s: SMTPServer, session: Session, envelope: Envelope): string {
    this.atData.push(session.xforward);
    this.messages.push(prepareMessage(session, envelope).toString('utf8'));
    return '250 OK';
  }
}

async function start(options: ControllerOptions = {}) {
  const handler = new Seen();
  const controller = new Controller(handler, { hostname: '127.0.0.1', port: 0, logger: quiet, ...options });
  await controller.start();
  return { controller, handler };
}

/** A server with `options`, a greeted client, `fn`, then both closed. */
async function withSession(options: ControllerOptions, fn: (s: { p: Probe; handler: Seen; ehlo: string[] }) => Promise<void>): Promise<void> {
  const { controller, handler } = await start(options);
  const { p, ehlo } = await session(controller.port);
  try {
    await fn({ p, handler, ehlo });
  } finally {
    p.close();
    await controller.stop();
  }
}

async function session(port: number): Promise<{ p: Probe; ehlo: string[] }> {
  const p = await Probe.connect(port);
  assert.equal((await p.reply()).code, 220);
  const r = await p.cmd('EHLO filter.example');
  assert.equal(r.code, 250, r.text);
  return { p, ehlo: r.lines };
}

async function expect(p: Probe, command: string, code: number): Promise<string> {
  const r = await p.cmd(command);
  assert.equal(r.code, code, `${command}: ${r.text}`);
  return r.text;
}

async function send(p: Probe, body = 'Subject: hi\r\n\r\nhello\r\n'): Promise<void> {
  await expect(p, 'MAIL FROM:<a@example.com>', 250);
  await expect(p, 'RCPT TO:<b@example.com>', 250);
  await expect(p, 'DATA', 354);
  await expect(p, `${body}.`, 250);
}

describe('XFORWARD from a trusted MTA', () => {
  test('offered in EHLO right after XCLIENT; attributes typed on the session', async () => {
    await withSession({ xforwardAllow: ['127.0.0.0/8'], xclientAllow: ['127.0.0.1'] }, async ({ p, handler, ehlo }) => {
      const keywords = ehlo.map((l) => l.slice(4));
      const at = keywords.indexOf(KEYWORD);
      assert.ok(at > 0, ehlo.join('|'));
      assert.match(keywords[at - 1]!, /^XCLIENT /);
      // Postfix's smtp client sends two lines; names are case-insensitive, values xtext.
      await expect(p, 'XFORWARD NAME=mail.client.example addr=IPv6:2001:db8::25 PORT=4567', 250);
      await expect(p, 'XFORWARD PROTO=ESMTP HELO=client+2Eexample IDENT=4Xyz12 SOURCE=remote', 250);
      await send(p);
      assert.deepEqual(handler.atData[0], {
        NAME: 'mail.client.example',
        ADDR: '2001:db8::25',
        PORT: 4567,
        PROTO: 'ESMTP',
        HELO: 'client.example',
        IDENT: '4Xyz12',
        SOURCE: 'REMOTE',
      });
      assert.match(handler.messages[0]!, /^X-Peer: \[2001:db8::25\]:4567\r\n/);
    });
  });

  test('[UNAVAILABLE] and [TEMPUNAVAIL] are null; without an address X-Peer shows the real peer', async () => {
    await withSession({ xforwardAllow: ['127.0.0.1'] }, async ({ p, handler }) => {
      await expect(p, 'XFORWARD NAME=[UNAVAILABLE] ADDR=[UNAVAILABLE] PORT=[TEMPUNAVAIL] SOURCE=LOCAL', 250);
      await send(p);
      assert.deepEqual(handler.atData[0], { NAME: null, ADDR: null, PORT: null, SOURCE: 'LOCAL' });
      assert.match(handler.messages[0]!, /^X-Peer: 127\.0\.0\.1:\d+\r\n/);
    });
  });

  test('an address without a port is shown alone; a later XFORWARD overrides an earlier one', async () => {
    await withSession({ xforwardAllow: ['127.0.0.1'] }, async ({ p, handler }) => {
      await expect(p, 'XFORWARD ADDR=192.0.2.1 HELO=first.example', 250);
      await expect(p, 'XFORWARD ADDR=198.51.100.7', 250);
      await send(p);
      assert.deepEqual(handler.atData[0], { ADDR: '198.51.100.7', HELO: 'first.example' });
      assert.match(handler.messages[0]!, /^X-Peer: 198\.51\.100\.7\r\n/);
    });
  });

  test('reset at the end of each transaction: after DATA, after RSET, after a new EHLO', async () => {
    await withSession({ xforwardAllow: ['127.0.0.1'] }, async ({ p, handler }) => {
      await expect(p, 'XFORWARD ADDR=192.0.2.1 PORT=25', 250);
      await send(p);
      await send(p); // the second message came without XFORWARD: no forwarded client
      assert.equal(handler.atData[0]?.ADDR, '192.0.2.1');
      assert.equal(handler.atData[1], null);
      assert.match(handler.messages[1]!, /^X-Peer: 127\.0\.0\.1:\d+\r\n/);
      await expect(p, 'XFORWARD ADDR=192.0.2.2', 250);
      await expect(p, 'RSET', 250);
      await expect(p, 'MAIL FROM:<a@example.com>', 250);
      assert.equal(handler.atMail.at(-1), null);
      await expect(p, 'RSET', 250);
      await expect(p, 'XFORWARD ADDR=192.0.2.3', 250);
      await expect(p, 'EHLO again.example', 250);
      await expect(p, 'MAIL FROM:<a@example.com>', 250);
      assert.equal(handler.atMail.at(-1), null);
    });
  });

  test('the Debugging handler prints the forwarded client as X-Peer', async () => {
    const chunks: string[] = [];
    const stream = new (await import('node:stream')).Writable({
      write(chunk: Buffer, _e, done) {
        chunks.push(chunk.toString());
        done();
      },
    });
    const controller = new Controller(new Debugging(stream), { hostname: '127.0.0.1', port: 0, logger: quiet, xforwardAllow: ['127.0.0.1'] });
    await controller.start();
    const { p } = await session(controller.port);
    try {
      await expect(p, 'XFORWARD ADDR=203.0.113.9 PORT=40000', 250);
      await send(p);
      assert.match(chunks.join(''), /\nX-Peer: 203\.0\.113\.9:40000\n/);
    } finally {
      p.close();
      await controller.stop();
    }
  });

  test('XFORWARD passes the AUTH gate (authRequired), as XCLIENT does; MAIL still does not', async () => {
    await withSession({ xforwardAllow: ['127.0.0.1'], authRequired: true }, async ({ p, ehlo }) => {
      assert.ok(ehlo.some((l) => l.slice(4) === KEYWORD), ehlo.join('|'));
      await expect(p, 'XFORWARD ADDR=192.0.2.1', 250);
      await expect(p, 'MAIL FROM:<a@example.com>', 530);
    });
  });

  test('LMTP: XFORWARD works after LHLO too', async () => {
    const { controller, handler } = await start({ xforwardAllow: ['127.0.0.1'], lmtp: true });
    const p = await Probe.connect(controller.port);
    try {
      assert.equal((await p.reply()).code, 220);
      const r = await p.cmd('LHLO filter.example');
      assert.ok(r.lines.some((l) => l.slice(4) === KEYWORD), r.text);
      await expect(p, 'XFORWARD ADDR=192.0.2.9 PORT=7', 250);
      await send(p);
      assert.equal(handler.atData[0]?.ADDR, '192.0.2.9');
    } finally {
      p.close();
      await controller.stop();
    }
  });

  test('formatClient: the forwarded client, else the peer', () => {
    const s = { peer: { address: '127.0.0.1', port: 1025, family: 'IPv4' }, xforward: null } as unknown as Session;
    assert.equal(formatClient(s), '127.0.0.1:1025');
    s.xforward = { ADDR: 'unix-socket-client', PORT: null };
    assert.equal(formatClient(s), 'unix-socket-client');
  });
});

describe('withAuthResults and XFORWARD', () => {
  /** The SPF result for mail from alice@fwd.example, whose SPF allows only 203.0.113.9. */
  async function spfOf(options: ControllerOptions, xforward: string | null): Promise<{ result: string | undefined; ip: string | undefined }> {
    const seen: Array<string | undefined> = [];
    const ips: Array<string | undefined> = [];
    const inner: Handler = {
      handleDATA(_s, _session, envelope) {
        seen.push(authResultsOf(envelope)?.spf?.result);
        ips.push(authResultsOf(envelope)?.spf?.clientIp);
        return '250 OK';
      },
    };
    const resolver = fixtureResolver({ 'fwd.example TXT': ['v=spf1 ip4:203.0.113.9 -all'] });
    const controller = new Controller(withAuthResults(inner, { authservId: 'mx.test', resolver }), { hostname: '127.0.0.1', port: 0, logger: quiet, ...options });
    await controller.start();
    const { p } = await session(controller.port);
    try {
      if (xforward !== null) await p.cmd(xforward);
      await expect(p, 'MAIL FROM:<alice@fwd.example>', 250);
      await expect(p, 'RCPT TO:<b@example.com>', 250);
      await expect(p, 'DATA', 354);
      await expect(p, `${message('alice@fwd.example').toString()}.`, 250);
      return { result: seen[0], ip: ips[0] };
    } finally {
      p.close();
      await controller.stop();
    }
  }

  test('SPF is checked for the forwarded client of a trusted MTA, and for the peer otherwise', async () => {
    assert.deepEqual(await spfOf({ xforwardAllow: ['127.0.0.1'] }, 'XFORWARD ADDR=203.0.113.9 HELO=client.fwd.example'), { result: 'pass', ip: '203.0.113.9' });
    assert.deepEqual(await spfOf({ xforwardAllow: ['127.0.0.1'] }, null), { result: 'fail', ip: '127.0.0.1' });
    // Attack: an untrusted client cannot claim a passing address.
    assert.deepEqual(await spfOf({}, 'XFORWARD ADDR=203.0.113.9'), { result: 'fail', ip: '127.0.0.1' });
    // A non-IP forwarded address is no address for SPF: the peer's is used.
    assert.deepEqual(await spfOf({ xforwardAllow: ['127.0.0.1'] }, 'XFORWARD ADDR=some-unix-client'), { result: 'fail', ip: '127.0.0.1' });
  });
});

describe('XFORWARD attacks', () => {
  for (const [label, allow] of [
    ['no xforwardAllow (the default)', undefined],
    ['an allow-list without this client', ['10.0.0.0/8', '::1']],
    ['an XCLIENT allow-list only', null],
  ] as const) {
    test(`${label}: not offered, XFORWARD refused with 550 5.7.0, nothing forwarded`, async () => {
      const options: ControllerOptions = allow === null ? { xclientAllow: ['127.0.0.1'] } : allow === undefined ? {} : { xforwardAllow: [...allow] };
      const { controller, handler } = await start(options);
      const { p, ehlo } = await session(controller.port);
      try {
        assert.ok(!ehlo.some((l) => l.includes('XFORWARD')), ehlo.join('|'));
        assert.match(await expect(p, 'XFORWARD ADDR=203.0.113.9 NAME=trusted.example', 550), /^550 5\.7\.0 /);
        await send(p);
        assert.equal(handler.atData[0], null);
        assert.match(handler.messages[0]!, /^X-Peer: 127\.0\.0\.1:\d+\r\n/);
      } finally {
        p.close();
        await controller.stop();
      }
    });
  }

  test('XFORWARD inside a transaction: 503, and the transaction keeps its client', async () => {
    await withSession({ xforwardAllow: ['127.0.0.1'] }, async ({ p, handler }) => {
      await expect(p, 'MAIL FROM:<a@example.com>', 250);
      assert.match(await expect(p, 'XFORWARD ADDR=203.0.113.9', 503), /^503 5\.5\.1 /);
      await expect(p, 'RCPT TO:<b@example.com>', 250);
      assert.match(await expect(p, 'XFORWARD ADDR=203.0.113.9', 503), /^503 5\.5\.1 /);
      await expect(p, 'DATA', 354);
      await expect(p, 'Subject: x\r\n\r\nbody\r\n.', 250);
      assert.equal(handler.atData[0], null);
    });
  });

  const long = 'a'.repeat(256);
  for (const [command, reply] of [
    ['XFORWARD', /^501 5\.5\.4 Syntax: XFORWARD/],
    ['XFORWARD ADDR', /^501 5\.5\.4 Syntax/],
    ['XFORWARD =x', /^501 5\.5\.4 Syntax/],
    ['XFORWARD LOGIN=alice', /^501 5\.5\.4 Syntax/], // XCLIENT's, not XFORWARD's
    ['XFORWARD DESTADDR=127.0.0.1', /^501 5\.5\.4 Syntax/],
    ['XFORWARD ADDR=192.0.2.1 ADDR=192.0.2.2', /^501 5\.5\.4 Syntax/],
    ['XFORWARD ADDR=192.0.2.1  NAME=x', /^501 5\.5\.4 Syntax/],
    ['XFORWARD NAME=a+2', /^501 5\.5\.4 Bad XFORWARD NAME syntax/], // a broken xtext escape
    ['XFORWARD NAME=a+2e', /^501 5\.5\.4 Bad XFORWARD NAME syntax/], // lower-case hex is no xtext
    ['XFORWARD NAME=', /^501 5\.5\.4 Bad XFORWARD NAME syntax/],
    ['XFORWARD NAME=evil+0D+0AX-Peer:+201.2.3.4', /^501 5\.5\.4 Bad XFORWARD NAME syntax/],
    ['XFORWARD HELO=a+00b', /^501 5\.5\.4 Bad XFORWARD HELO syntax/],
    ['XFORWARD IDENT=a+09b', /^501 5\.5\.4 Bad XFORWARD IDENT syntax/],
    ['XFORWARD HELO=a+7Fb', /^501 5\.5\.4 Bad XFORWARD HELO syntax/],
    ['XFORWARD HELO=a+20b', /^501 5\.5\.4 Bad XFORWARD HELO syntax/],
    ['XFORWARD NAME=caf+C3+A9.example', /^501 5\.5\.4 Bad XFORWARD NAME syntax/], // non-ASCII
    ['XFORWARD NAME=x+C2+85y', /^501 5\.5\.4 Bad XFORWARD NAME syntax/], // NEL
    [`XFORWARD NAME=${long}`, /^501 5\.5\.4 Bad XFORWARD NAME syntax/],
    [`XFORWARD IDENT=${'+41'.repeat(256)}`, /^501 5\.5\.4 Bad XFORWARD IDENT syntax/],
    [`XFORWARD PROTO=${'P'.repeat(65)}`, /^501 5\.5\.4 Bad XFORWARD PROTO syntax/],
    ['XFORWARD ADDR=IPv6:192.0.2.1', /^501 5\.5\.4 Bad XFORWARD ADDR syntax/],
    ['XFORWARD ADDR=[192.0.2.1]', /^501 5\.5\.4 Bad XFORWARD ADDR syntax/],
    ['XFORWARD ADDR=IPv6:', /^501 5\.5\.4 Bad XFORWARD ADDR syntax/],
    ['XFORWARD PORT=65536', /^501 5\.5\.4 Bad XFORWARD PORT syntax/],
    ['XFORWARD PORT=-1', /^501 5\.5\.4 Bad XFORWARD PORT syntax/],
    ['XFORWARD PORT=123456', /^501 5\.5\.4 Bad XFORWARD PORT syntax/],
    ['XFORWARD SOURCE=ELSEWHERE', /^501 5\.5\.4 Bad XFORWARD SOURCE syntax/],
  ] as const) {
    test(`${command.slice(0, 60)}: ${reply.source.slice(1, 40)}, nothing kept`, async () => {
      const { controller, handler } = await start({ xforwardAllow: ['127.0.0.1'] });
      const { p } = await session(controller.port);
      try {
        // A good first command, then the bad one: the bad one changes nothing.
        await expect(p, 'XFORWARD NAME=good.example', 250);
        assert.match(await expect(p, command, 501), reply);
        await send(p);
        assert.deepEqual(handler.atData[0], { NAME: 'good.example' });
      } finally {
        p.close();
        await controller.stop();
      }
    });
  }

  test('a control character in the line itself is refused before XFORWARD runs', async () => {
    await withSession({ xforwardAllow: ['127.0.0.1'] }, async ({ p, handler }) => {
      p.send('XFORWARD NAME=a\x0bb\r\n');
      assert.equal((await p.reply()).code, 500);
      await send(p);
      assert.equal(handler.atData[0], null);
    });
  });

  test('a line over 2048 octets is too long, one under it is read (seven full attributes fit)', async () => {
    await withSession({ xforwardAllow: ['127.0.0.1'] }, async ({ p, handler }) => {
      const v = 'h'.repeat(255);
      const full = `XFORWARD NAME=${v} ADDR=${v} PORT=1 PROTO=${'p'.repeat(64)} HELO=${v} IDENT=${v} SOURCE=REMOTE`;
      assert.ok(full.length > 512 && full.length < 2046);
      await expect(p, full, 250);
      assert.match(await expect(p, `XFORWARD NAME=${'+41'.repeat(700)}`, 500), /too long/);
      await send(p);
      assert.equal(handler.atData[0]?.NAME, v);
    });
  });

  test('a forwarded value that would bend a header stays one escaped line in X-Peer', () => {
    // parseXforward refuses controls; a handler that sets the session by hand is still escaped.
    assert.equal(parseXforward('ADDR=a+0Db').ok, false);
    const s = { peer: { address: '127.0.0.1', port: 1, family: 'IPv4' }, xforward: { ADDR: 'a\r\nX-Evil: 1' } } as unknown as Session;
    const env = { originalContent: Buffer.from('Subject: x\r\n\r\nb\r\n'), mailFrom: 'a@b', rcptTos: ['c@d'] } as unknown as Envelope;
    const out = prepareMessage(s, env).toString();
    assert.match(out, /^X-Peer: a\\x0d\\x0aX-Evil: 1\r\nX-MailFrom: a@b\r\n/);
  });
});
