/**
 * XCLIENT (Postfix's extension, https://www.postfix.org/XCLIENT_README.html) over real sockets:
 * offered and obeyed only for clients in xclientAllow, it replaces what the handler sees of the
 * client (session.peer, session.xclient, LOGIN as authentication) and starts the session over
 * with a fresh 220, as Postfix does; bad syntax is 501, during a transaction 503.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Controller, type ControllerOptions } from '../src/controller.js';
import type { Logger } from '../src/options.js';
import { PeerRecorder, Probe, v1Header } from './scale-util.js';

const quiet: Logger = { debugEnabled: false, debug() {}, info() {}, warn() {}, error() {} };
const XCLIENT_KEYWORD = /^250[ -]XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT$/;

async function start(options: ControllerOptions = {}) {
  const handler = new PeerRecorder();
  const controller = new Controller(handler, { hostname: '127.0.0.1', port: 0, logger: quiet, ...options });
  await controller.start();
  return { controller, handler };
}

/** Connects (from `localAddress`), reads the greeting, sends EHLO; returns the probe and the EHLO reply. */
async function ehlo(port: number, options: { host?: string; localAddress?: string } = {}) {
  const p = await Probe.connect(port, options);
  assert.equal((await p.reply()).code, 220);
  const r = await p.cmd('EHLO proxy.example');
  assert.equal(r.code, 250, r.text);
  return { p, offered: r.lines.some((l) => XCLIENT_KEYWORD.test(l)) };
}

async function expect(p: Probe, command: string, code: number): Promise<string> {
  const r = await p.cmd(command);
  assert.equal(r.code, code, `${command}: ${r.text}`);
  return r.text;
}

describe('who may use XCLIENT', () => {
  for (const [label, allow] of [
    ['no xclientAllow (the default)', undefined],
    ['an empty xclientAllow', []],
    ['an allow-list without this client (10.0.0.0/8)', ['10.0.0.0/8']],
    ['an allow-list naming another loopback address (127.0.0.2)', ['127.0.0.2']],
  ] as const) {
    test(`${label}: not offered, and XCLIENT is an unknown command (500)`, async () => {
      const { controller, handler } = await start(allow === undefined ? {} : { xclientAllow: [...allow] });
      const { p, offered } = await ehlo(controller.port);
      try {
        assert.equal(offered, false);
        assert.match(await expect(p, 'XCLIENT ADDR=203.0.113.9 LOGIN=alice', 500), /XCLIENT/);
        // Nothing changed: the session goes on as it was.
        await expect(p, 'MAIL FROM:<a@example.com>', 250);
        assert.equal(handler.seen[0]!.peer.address, '127.0.0.1');
        assert.equal(handler.seen[0]!.authenticated, false);
        assert.equal(handler.seen[0]!.xclient, null);
      } finally {
        p.close();
        await controller.stop();
      }
    });
  }

  for (const allow of [['127.0.0.1'], ['127.0.0.0/8'], ['192.0.2.1', '127.0.0.0/24']]) {
    test(`xclientAllow ${JSON.stringify(allow)}: offered in EHLO to 127.0.0.1`, async () => {
      const { controller } = await start({ xclientAllow: allow });
      const { p, offered } = await ehlo(controller.port);
      try {
        assert.equal(offered, true);
        assert.equal((await p.cmd('XCLIENT ADDR=203.0.113.9')).code, 220);
      } finally {
        p.close();
        await controller.stop();
      }
    });
  }

  test('the allow-list is judged per client: 127.0.0.2 is not in [127.0.0.1]', async () => {
    const { controller } = await start({ hostname: '0.0.0.0', xclientAllow: ['127.0.0.1'] });
    const { p, offered } = await ehlo(controller.port, { localAddress: '127.0.0.2' });
    try {
      assert.equal(offered, false);
      await expect(p, 'XCLIENT ADDR=203.0.113.9', 500);
    } finally {
      p.close();
      await controller.stop();
    }
  });

  test('an IPv4 client on a dual-stack listener (::ffff:127.0.0.1) matches 127.0.0.0/8', async (t) => {
    const dual = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(0, '::', () => s.close(() => resolve(true)));
    });
    if (!dual) return t.skip('no IPv6 on this machine');
    const { controller, handler } = await start({ hostname: '::', xclientAllow: ['127.0.0.0/8'] });
    const { p, offered } = await ehlo(controller.port, { host: '127.0.0.1' });
    try {
      assert.equal(offered, true);
      await expect(p, 'XCLIENT ADDR=203.0.113.10', 220);
      await expect(p, 'EHLO proxy.example', 250);
      await expect(p, 'MAIL FROM:<a@example.com>', 250);
      assert.equal(handler.seen[0]!.peer.address, '203.0.113.10');
    } finally {
      p.close();
      await controller.stop();
    }
  });

  test('::1 in the allow-list admits an IPv6 loopback client', async (t) => {
    const v6 = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(0, '::1', () => s.close(() => resolve(true)));
    });
    if (!v6) return t.skip('no IPv6 loopback on this machine');
    const { controller } = await start({ hostname: '::1', xclientAllow: ['::1'] });
    const { p, offered } = await ehlo(controller.port, { host: '::1' });
    try {
      assert.equal(offered, true);
      await expect(p, 'XCLIENT ADDR=IPV6:2001:db8::5', 220);
    } finally {
      p.close();
      await controller.stop();
    }
  });

  test('behind a PROXY header, XCLIENT is judged by the client the proxy names (as Postfix does), not the proxy', async () => {
    // Internet -> load balancer (on loopback here, inside 127.0.0.0/8) -> tsmtpd. The operator
    // trusts its own filters on 127.0.0.0/8 with XCLIENT; a stranger coming through the load
    // balancer must not be able to rename itself with it.
    const { controller, handler } = await start({ proxyProtocolTimeout: 2000, xclientAllow: ['127.0.0.0/8'] });
    const stranger = await Probe.connect(controller.port);
    try {
      stranger.send(v1Header('TCP4', '198.51.100.66', '192.0.2.1', 40000, 25));
      assert.equal((await stranger.reply()).code, 220);
      const r = await stranger.cmd('EHLO stranger.example');
      assert.equal(r.lines.some((l) => XCLIENT_KEYWORD.test(l)), false, 'XCLIENT offered to a proxied stranger');
      const x = await stranger.cmd('XCLIENT ADDR=127.0.0.1 LOGIN=postmaster');
      assert.notEqual(x.code, 220, 'a proxied stranger renamed itself with XCLIENT');
      await expect(stranger, 'MAIL FROM:<a@example.com>', 250);
      assert.equal(handler.seen.at(-1)!.peer.address, '198.51.100.66');
      assert.equal(handler.seen.at(-1)!.authenticated, false);
    } finally {
      stranger.close();
      await controller.stop();
    }
  });
});

describe('what XCLIENT does', () => {
  test('ADDR PORT NAME LOGIN: a fresh 220, then the handler sees the original client', async () => {
    const { controller, handler } = await start({ xclientAllow: ['127.0.0.1'] });
    const { p } = await ehlo(controller.port);
    try {
      const r = await p.cmd('XCLIENT ADDR=203.0.113.9 PORT=4000 NAME=mx.example LOGIN=alice');
      assert.equal(r.code, 220, r.text);
      assert.equal(r.lines.length, 1);
      // The session starts over: greet again, then mail.
      await expect(p, 'EHLO mx.example', 250);
      await expect(p, 'MAIL FROM:<a@example.com>', 250);
      await expect(p, 'RCPT TO:<b@example.com>', 250);
      await expect(p, 'DATA', 354);
      p.send('Subject: x\r\n\r\nbody\r\n.\r\n');
      assert.equal((await p.reply()).code, 250);
      const seen = handler.seen[0]!;
      assert.deepEqual(seen.peer, { address: '203.0.113.9', port: 4000, family: 'IPv4' });
      assert.equal(seen.xclient!.NAME, 'mx.example');
      assert.equal(seen.xclient!.ADDR, '203.0.113.9');
      assert.equal(seen.xclient!.PORT, '4000');
      assert.equal(seen.authenticated, true);
      assert.equal(seen.authData, 'alice');
      assert.equal(seen.hostName, 'mx.example');
      assert.deepEqual(handler.messages[0]!.peer, seen.peer);
    } finally {
      p.close();
      await controller.stop();
    }
  });

  test('ADDR=IPV6:2001:db8::1: an IPv6 peer', async () => {
    const { controller, handler } = await start({ xclientAllow: ['127.0.0.0/8'] });
    const { p } = await ehlo(controller.port);
    try {
      await expect(p, 'XCLIENT ADDR=IPV6:2001:db8::1 PORT=25', 220);
      await expect(p, 'EHLO x.example', 250);
      await expect(p, 'MAIL FROM:<a@example.com>', 250);
      assert.deepEqual(handler.seen[0]!.peer, { address: '2001:db8::1', port: 25, family: 'IPv6' });
    } finally {
      p.close();
      await controller.stop();
    }
  });

  test('[UNAVAILABLE] and [TEMPUNAVAIL] values: null, and the peer is left as it was', async () => {
    const { controller, handler } = await start({ xclientAllow: ['127.0.0.1'] });
    const { p } = await ehlo(controller.port);
    try {
      await expect(p, 'XCLIENT NAME=[UNAVAILABLE] ADDR=[UNAVAILABLE] LOGIN=[UNAVAILABLE] HELO=[TEMPUNAVAIL]', 220);
      await expect(p, 'EHLO x.example', 250);
      await expect(p, 'MAIL FROM:<a@example.com>', 250);
      const seen = handler.seen[0]!;
      assert.equal(seen.xclient!.NAME, null);
      assert.equal(seen.xclient!.ADDR, null);
      assert.equal(seen.xclient!.HELO, null);
      assert.equal(seen.peer.address, '127.0.0.1');
      assert.equal(seen.authenticated, false);
    } finally {
      p.close();
      await controller.stop();
    }
  });

  test('xtext values are decoded: +2B is "+", +3D is "="', async () => {
    const { controller, handler } = await start({ xclientAllow: ['127.0.0.1'] });
    const { p } = await ehlo(controller.port);
    try {
      await expect(p, 'XCLIENT LOGIN=alice+2Btag NAME=a+3Db.example', 220);
      await expect(p, 'EHLO x.example', 250);
      await expect(p, 'MAIL FROM:<a@example.com>', 250);
      assert.equal(handler.seen[0]!.authData, 'alice+tag');
      assert.equal(handler.seen[0]!.xclient!.NAME, 'a=b.example');
    } finally {
      p.close();
      await controller.stop();
    }
  });

  test('attribute names are case-insensitive; PROTO and DESTADDR/DESTPORT are kept', async () => {
    const { controller, handler } = await start({ xclientAllow: ['127.0.0.1'] });
    const { p } = await ehlo(controller.port);
    try {
      await expect(p, 'xclient addr=192.0.2.77 proto=esmtp destaddr=192.0.2.1 destport=25', 220);
      await expect(p, 'EHLO x.example', 250);
      await expect(p, 'MAIL FROM:<a@example.com>', 250);
      const x = handler.seen[0]!.xclient!;
      assert.equal(handler.seen[0]!.peer.address, '192.0.2.77');
      assert.equal(x.PROTO, 'ESMTP');
      assert.equal(x.DESTADDR, '192.0.2.1');
      assert.equal(x.DESTPORT, '25');
    } finally {
      p.close();
      await controller.stop();
    }
  });

  test('a second XCLIENT is allowed (judged by the real connection) and replaces the first', async () => {
    const { controller, handler } = await start({ xclientAllow: ['127.0.0.1'] });
    const { p } = await ehlo(controller.port);
    try {
      await expect(p, 'XCLIENT ADDR=203.0.113.1 LOGIN=alice', 220);
      const r = await p.cmd('EHLO x.example');
      assert.ok(r.lines.some((l) => XCLIENT_KEYWORD.test(l)), 'still offered after XCLIENT');
      await expect(p, 'XCLIENT ADDR=203.0.113.2', 220);
      await expect(p, 'EHLO x.example', 250);
      await expect(p, 'MAIL FROM:<a@example.com>', 250);
      assert.equal(handler.seen[0]!.peer.address, '203.0.113.2');
      assert.equal(handler.seen[0]!.authenticated, false, 'the first LOGIN must not survive the second XCLIENT');
    } finally {
      p.close();
      await controller.stop();
    }
  });

  for (const bad of [
    'XCLIENT',
    'XCLIENT ADDR',
    'XCLIENT =x',
    'XCLIENT ADDR=999.1.1.1',
    'XCLIENT ADDR=not-an-address',
    'XCLIENT PORT=70000',
    'XCLIENT PORT=-1',
    'XCLIENT NAME=a+ZZ',
    'XCLIENT NAME=a+2',
    'XCLIENT NAME=a=b',
    'XCLIENT PROTO=HTTP',
    'XCLIENT ADDR=192.0.2.1 ADDR=192.0.2.2',
    'XCLIENT ADDR=192.0.2.1  NAME=x',
  ]) {
    test(`bad syntax is 501 and changes nothing: ${JSON.stringify(bad)}`, async () => {
      const { controller, handler } = await start({ xclientAllow: ['127.0.0.1'] });
      const { p } = await ehlo(controller.port);
      try {
        assert.match(await expect(p, bad, 501), /^501 5\.5\.4 /);
        await expect(p, 'MAIL FROM:<a@example.com>', 250);
        assert.equal(handler.seen[0]!.peer.address, '127.0.0.1');
        assert.equal(handler.seen[0]!.xclient, null);
      } finally {
        p.close();
        await controller.stop();
      }
    });
  }

  test('an unknown attribute is 501', async () => {
    const { controller } = await start({ xclientAllow: ['127.0.0.1'] });
    const { p } = await ehlo(controller.port);
    try {
      await expect(p, 'XCLIENT FOO=bar', 501);
      await expect(p, 'XCLIENT ADDR=192.0.2.1 COLOR=blue', 501);
    } finally {
      p.close();
      await controller.stop();
    }
  });

  test('during a mail transaction: 503, and the transaction goes on', async () => {
    const { controller, handler } = await start({ xclientAllow: ['127.0.0.1'] });
    const { p } = await ehlo(controller.port);
    try {
      await expect(p, 'MAIL FROM:<a@example.com>', 250);
      await expect(p, 'XCLIENT ADDR=203.0.113.9', 503);
      await expect(p, 'RCPT TO:<b@example.com>', 250);
      await expect(p, 'DATA', 354);
      p.send('x\r\n.\r\n');
      assert.equal((await p.reply()).code, 250);
      assert.equal(handler.messages[0]!.peer.address, '127.0.0.1');
    } finally {
      p.close();
      await controller.stop();
    }
  });

  test('after XCLIENT the client must greet again: MAIL right away is 503', async () => {
    const { controller } = await start({ xclientAllow: ['127.0.0.1'] });
    const { p } = await ehlo(controller.port);
    try {
      await expect(p, 'XCLIENT ADDR=203.0.113.9 HELO=mx.example', 220);
      await expect(p, 'MAIL FROM:<a@example.com>', 503);
      await expect(p, 'HELO mx.example', 250);
      await expect(p, 'MAIL FROM:<a@example.com>', 250);
    } finally {
      p.close();
      await controller.stop();
    }
  });

  test('XCLIENT pipelined with EHLO and MAIL: answered in order', async () => {
    const { controller, handler } = await start({ xclientAllow: ['127.0.0.1'] });
    const { p } = await ehlo(controller.port);
    try {
      p.send('XCLIENT ADDR=203.0.113.50 PORT=5000\r\nEHLO x.example\r\nMAIL FROM:<a@example.com>\r\n');
      assert.equal((await p.reply()).code, 220);
      assert.equal((await p.reply()).code, 250);
      assert.equal((await p.reply()).code, 250);
      assert.deepEqual(handler.seen[0]!.peer, { address: '203.0.113.50', port: 5000, family: 'IPv4' });
    } finally {
      p.close();
      await controller.stop();
    }
  });
});
