/**
 * The PROXY protocol in the engine (connection.ts with proxyProtocolTimeout), over real sockets: the
 * header must come first and within the timeout, session.peer becomes the client the proxy
 * speaks for, session.proxyData keeps the header, handlePROXY accepts or refuses, and a bad,
 * slow, truncated, oversized or fuzzed header closes that connection only, ungreeted.
 * The pure parser has its own tests (proxy-protocol.test.ts); this is the wiring.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { join } from 'node:path';
import { Controller, UnixSocketController } from '../src/controller.js';
import { parseProxyHeader, type ProxyData } from '../src/proxy-protocol.js';
import type { Logger } from '../src/options.js';
import { makeCertsIfPossible, needCerts, type Certs } from './tls-util.js';
import {
  PeerRecorder,
  Probe,
  TLV_ALPN,
  TLV_AUTHORITY,
  TLV_UNIQUE_ID,
  assertClosedUngreeted,
  drip,
  pool,
  removeDir,
  sleep,
  tempDir,
  transaction,
  v1Header,
  v2Header,
} from './scale-util.js';
import { Rng } from './rng.js';

const quiet: Logger = { debugEnabled: false, debug() {}, info() {}, warn() {}, error() {} };
const TIMEOUT = 300;

async function start(handler = new PeerRecorder(), timeout = TIMEOUT, extra: Record<string, unknown> = {}) {
  const controller = new Controller(handler, {
    hostname: '127.0.0.1',
    port: 0,
    proxyProtocolTimeout: timeout,
    logger: quiet,
    ...extra,
  });
  await controller.start();
  return { controller, handler };
}

/** Sends `header` (and maybe more), runs a transaction, returns what the handler saw at MAIL. */
async function through(port: number, handler: PeerRecorder, header: Buffer) {
  const p = await Probe.connect(port);
  try {
    const before = handler.seen.length;
    p.send(header);
    const end = await transaction(p);
    assert.equal(end.code, 250, end.text);
    assert.equal(handler.seen.length, before + 1);
    return { seen: handler.seen[before]!, localPort: p.socket.localPort! };
  } finally {
    p.close();
  }
}

describe('a valid header names the client', () => {
  test('v1 TCP4: session.peer is the header source, proxyData the whole header', async () => {
    const { controller, handler } = await start();
    try {
      const { seen } = await through(controller.port, handler, v1Header('TCP4', '192.0.2.10', '198.51.100.1', 40000, 25));
      assert.deepEqual(seen.peer, { address: '192.0.2.10', port: 40000, family: 'IPv4' });
      const d = seen.proxyData!;
      assert.equal(d.version, 1);
      assert.equal(d.command, 'PROXY');
      assert.equal(d.family, 'TCP4');
      assert.equal(d.srcAddress, '192.0.2.10');
      assert.equal(d.dstAddress, '198.51.100.1');
      assert.equal(d.srcPort, 40000);
      assert.equal(d.dstPort, 25);
      // The message's trace goes to the real client too.
      assert.deepEqual(handler.messages.at(-1)!.peer, seen.peer);
    } finally {
      await controller.stop();
    }
  });

  test('v1 TCP6: an IPv6 peer, in the canonical form', async () => {
    const { controller, handler } = await start();
    try {
      const { seen } = await through(controller.port, handler, v1Header('TCP6', '2001:DB8:0:0:0:0:0:10', '2001:db8::1', 40001, 587));
      assert.deepEqual(seen.peer, { address: '2001:db8::10', port: 40001, family: 'IPv6' });
      assert.equal(seen.proxyData!.family, 'TCP6');
      assert.equal(seen.proxyData!.dstAddress, '2001:db8::1');
      assert.equal(seen.proxyData!.dstPort, 587);
    } finally {
      await controller.stop();
    }
  });

  test('v2 PROXY over INET with ALPN, AUTHORITY, UNIQUE_ID and CRC32C TLVs', async () => {
    const { controller, handler } = await start();
    try {
      const uid = Buffer.from('0123456789abcdef0123456789abcdef', 'hex');
      const header = v2Header({
        family: 'TCP4',
        src: '203.0.113.7',
        dst: '198.51.100.25',
        srcPort: 51234,
        dstPort: 25,
        tlvs: [
          { type: TLV_ALPN, value: 'smtp' },
          { type: TLV_AUTHORITY, value: 'mx.example.org' },
          { type: TLV_UNIQUE_ID, value: uid },
        ],
        crc: true,
      });
      const { seen } = await through(controller.port, handler, header);
      assert.deepEqual(seen.peer, { address: '203.0.113.7', port: 51234, family: 'IPv4' });
      const d = seen.proxyData!;
      assert.equal(d.version, 2);
      assert.equal(d.command, 'PROXY');
      assert.equal(d.family, 'TCP4');
      assert.equal(d.dstAddress, '198.51.100.25');
      assert.equal(d.dstPort, 25);
      assert.equal(d.alpn!.toString(), 'smtp');
      assert.equal(d.authority, 'mx.example.org');
      assert.deepEqual(d.uniqueId, uid);
      assert.equal(d.crc32cValid, true);
      assert.deepEqual(
        d.tlvs.map((t) => t.type),
        [0x01, 0x02, 0x05, 0x03],
      );
    } finally {
      await controller.stop();
    }
  });

  test('v2 PROXY over INET6 with TLVs', async () => {
    const { controller, handler } = await start();
    try {
      const header = v2Header({
        family: 'TCP6',
        src: '2001:db8:0:1::77',
        dst: '2001:db8::25',
        srcPort: 61000,
        dstPort: 465,
        tlvs: [
          { type: TLV_ALPN, value: 'smtp' },
          { type: TLV_AUTHORITY, value: 'mail.example.net' },
          { type: TLV_UNIQUE_ID, value: Buffer.from('req-42') },
        ],
        crc: true,
      });
      const { seen } = await through(controller.port, handler, header);
      assert.deepEqual(seen.peer, { address: '2001:db8:0:1::77', port: 61000, family: 'IPv6' });
      const d = seen.proxyData!;
      assert.equal(d.family, 'TCP6');
      assert.equal(d.dstAddress, '2001:db8::25');
      assert.equal(d.dstPort, 465);
      assert.equal(d.authority, 'mail.example.net');
      assert.equal(d.uniqueId!.toString(), 'req-42');
      assert.equal(d.crc32cValid, true);
    } finally {
      await controller.stop();
    }
  });

  test('v2 LOCAL (a health check): the peer stays the socket peer', async () => {
    const { controller, handler } = await start();
    try {
      const { seen, localPort } = await through(controller.port, handler, v2Header({ command: 'LOCAL' }));
      assert.deepEqual(seen.peer, { address: '127.0.0.1', port: localPort, family: 'IPv4' });
      assert.equal(seen.proxyData!.command, 'LOCAL');
      assert.equal(seen.proxyData!.srcAddress, null);
    } finally {
      await controller.stop();
    }
  });

  test('v1 PROXY UNKNOWN: the peer stays the socket peer', async () => {
    const { controller, handler } = await start();
    try {
      const { seen, localPort } = await through(controller.port, handler, Buffer.from('PROXY UNKNOWN\r\n'));
      assert.deepEqual(seen.peer, { address: '127.0.0.1', port: localPort, family: 'IPv4' });
      assert.equal(seen.proxyData!.family, 'UNKNOWN');
    } finally {
      await controller.stop();
    }
  });

  test('a header split into one-byte writes works (v1 and v2)', async () => {
    const { controller, handler } = await start(new PeerRecorder(), 5000);
    try {
      const headers = [
        v1Header('TCP4', '192.0.2.33', '192.0.2.1', 1234, 25),
        v2Header({ src: '192.0.2.34', dst: '192.0.2.1', srcPort: 1235, dstPort: 25, tlvs: [{ type: TLV_AUTHORITY, value: 'a.example' }], crc: true }),
      ];
      for (const [i, header] of headers.entries()) {
        const p = await Probe.connect(controller.port);
        try {
          await drip(p, header, 2);
          const end = await transaction(p);
          assert.equal(end.code, 250);
          assert.equal(handler.seen.at(-1)!.peer.address, `192.0.2.${33 + i}`);
        } finally {
          p.close();
        }
      }
    } finally {
      await controller.stop();
    }
  });

  test('header, EHLO and MAIL in one write: the greeting, then both replies, in order', async () => {
    const { controller, handler } = await start();
    try {
      for (const header of [v1Header('TCP4', '192.0.2.44', '192.0.2.1', 4444, 25), v2Header({ src: '192.0.2.45', srcPort: 4445 })]) {
        const p = await Probe.connect(controller.port);
        try {
          p.send(Buffer.concat([header, Buffer.from('EHLO x.example\r\nMAIL FROM:<a@example.com>\r\n')]));
          assert.equal((await p.reply()).code, 220);
          const ehlo = await p.reply();
          assert.equal(ehlo.code, 250);
          assert.match(ehlo.lines[0]!, /^250-/);
          const mail = await p.reply();
          assert.equal(mail.code, 250);
          assert.match(mail.text, /peer=192\.0\.2\.4[45]:444[45]/);
        } finally {
          p.close();
        }
      }
      assert.deepEqual(
        handler.seen.map((s) => s.peer.address),
        ['192.0.2.44', '192.0.2.45'],
      );
    } finally {
      await controller.stop();
    }
  });
});

describe('a missing or bad header closes that connection, ungreeted', () => {
  test('no header within the timeout: closed at the timeout, no greeting', async () => {
    const { controller } = await start();
    try {
      const p = await Probe.connect(controller.port);
      const took = await assertClosedUngreeted(p, 3000, 'silent client');
      assert.ok(took >= TIMEOUT - 50, `closed after ${took} ms, before the ${TIMEOUT} ms timeout`);
    } finally {
      await controller.stop();
    }
  });

  test('a plain SMTP client (EHLO first) is closed at once, ungreeted, and its command never runs', async () => {
    const handler = new PeerRecorder();
    const { controller } = await start(handler, 3000);
    try {
      const p = await Probe.connect(controller.port);
      p.send('EHLO x\r\nMAIL FROM:<a@example.com>\r\n');
      const took = await assertClosedUngreeted(p, 2000, 'EHLO first');
      assert.ok(took < 1500, `closed after ${took} ms: an impossible header should be refused at once`);
      assert.equal(handler.seen.length, 0);
    } finally {
      await controller.stop();
    }
  });

  for (const [name, bytes] of [
    ['a truncated v1 header', Buffer.from('PROXY TCP4 192.0.2.1 192.0.2.2 12')],
    ['a v1 header without its LF', Buffer.from('PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r')],
    ['a truncated v2 header (signature only)', v2Header({ src: '192.0.2.1' }).subarray(0, 12)],
    ['a v2 header missing its last byte', v2Header({ src: '192.0.2.1', tlvs: [{ type: TLV_ALPN, value: 'x' }] }).subarray(0, -1)],
  ] as const) {
    test(`${name}, then silence: closed at the timeout, ungreeted`, async () => {
      const handler = new PeerRecorder();
      const { controller } = await start(handler);
      try {
        const calls = handler.proxyCalls.length;
        const p = await Probe.connect(controller.port);
        p.send(bytes);
        const took = await assertClosedUngreeted(p, 3000, name);
        assert.ok(took >= TIMEOUT - 50, `closed after ${took} ms`);
        assert.equal(handler.proxyCalls.length, calls, 'handlePROXY must not be called');
      } finally {
        await controller.stop();
      }
    });
  }

  test('an oversized v2 length field is refused at once (no waiting for 64 KiB)', async () => {
    const { controller } = await start(new PeerRecorder(), 3000);
    try {
      for (const length of [0xffff, 4097, 8000]) {
        const p = await Probe.connect(controller.port);
        p.send(v2Header({ src: '192.0.2.1', lengthOverride: length }));
        const took = await assertClosedUngreeted(p, 2500, `length ${length}`);
        assert.ok(took < 1500, `length ${length}: closed only after ${took} ms`);
      }
    } finally {
      await controller.stop();
    }
  });

  test('more than the largest v2 header, streamed: closed, and never buffered without bound', async () => {
    const { controller } = await start(new PeerRecorder(), 3000);
    try {
      const p = await Probe.connect(controller.port);
      // A "valid" prefix that claims 4096 bytes of TLVs (the maximum), then keeps going.
      const head = v2Header({ src: '192.0.2.1', lengthOverride: 4096 });
      p.send(head);
      const junk = Buffer.alloc(64 * 1024, 0x04); // NOOP TLV type bytes
      for (let i = 0; i < 16 && !p.closed; i++) {
        p.send(junk);
        await sleep(5);
      }
      await assertClosedUngreeted(p, 2500, 'streamed oversized header');
    } finally {
      await controller.stop();
    }
  });

  test('a wrong CRC32C closes the connection', async () => {
    const { controller } = await start();
    try {
      const p = await Probe.connect(controller.port);
      p.send(v2Header({ src: '192.0.2.1', srcPort: 1, tlvs: [{ type: TLV_ALPN, value: 'smtp' }], badCrc: true }));
      await assertClosedUngreeted(p, 2000, 'bad CRC32C');
    } finally {
      await controller.stop();
    }
  });

  test('a valid v1 header dripped slower than the timeout allows: closed at the timeout', async () => {
    const { controller } = await start();
    try {
      const p = await Probe.connect(controller.port);
      const header = v1Header('TCP4', '192.0.2.1', '192.0.2.2', 1000, 25);
      // Each byte well inside any per-read timer, the whole header far beyond the deadline.
      const dripping = drip(p, header, 40);
      const took = await assertClosedUngreeted(p, 3000, 'slow drip');
      assert.ok(took >= TIMEOUT - 50 && took < TIMEOUT + 1000, `closed after ${took} ms`);
      await dripping;
    } finally {
      await controller.stop();
    }
  });

  test('silent connections do not hold up others: a valid client is served at once meanwhile', async () => {
    const handler = new PeerRecorder();
    const { controller } = await start(handler, 2000);
    const idle: Probe[] = [];
    try {
      for (let i = 0; i < 30; i++) idle.push(await Probe.connect(controller.port));
      const started = Date.now();
      const { seen } = await through(controller.port, handler, v1Header('TCP4', '192.0.2.99', '192.0.2.1', 9999, 25));
      assert.equal(seen.peer.address, '192.0.2.99');
      assert.ok(Date.now() - started < 1500, 'the valid client waited for the silent ones');
      for (const p of idle) assert.equal(p.closed, false);
    } finally {
      for (const p of idle) p.close();
      await controller.stop();
    }
  });
});

describe('connection limits behind a proxy', () => {
  test('maxConnectionsPerClient counts the client the header names, not the load balancer', async () => {
    // HAProxy on another machine (not loopback: connectionLimitExempt [] stands for that) opens
    // every connection; the per-client limit must not turn into a limit on the load balancer.
    const handler = new PeerRecorder();
    const { controller } = await start(handler, 2000, { maxConnectionsPerClient: 3, connectionLimitExempt: [] });
    const probes: Probe[] = [];
    try {
      for (let i = 0; i < 8; i++) {
        const p = await Probe.connect(controller.port);
        probes.push(p);
        p.send(v1Header('TCP4', `198.51.100.${10 + i}`, '192.0.2.1', 40000 + i, 25));
        const r = await p.reply(2000).catch((e: Error) => e);
        assert.ok(!(r instanceof Error), `client ${i}: ${r instanceof Error ? r.message : ''}`);
        assert.equal(r.code, 220, `client ${i} (198.51.100.${10 + i}, its only connection) got ${JSON.stringify(r.text)}`);
      }
      // And the limit still holds per real client: a fourth connection naming the same client is refused.
      const same: Probe[] = [];
      const codes: number[] = [];
      for (let i = 0; i < 4; i++) {
        const p = await Probe.connect(controller.port);
        same.push(p);
        probes.push(p);
        p.send(v1Header('TCP4', '198.51.100.99', '192.0.2.1', 50000 + i, 25));
        codes.push(await p.reply(2000).then((r) => r.code, () => 0));
      }
      assert.deepEqual(codes.slice(0, 3), [220, 220, 220]);
      assert.notEqual(codes[3], 220, 'a fourth connection from one real client was accepted');
    } finally {
      for (const p of probes) p.close();
      await controller.stop();
    }
  });
});

describe('handlePROXY', () => {
  test('false or a throw drops the connection ungreeted; true greets; the peer is already the real one', async () => {
    const handler = new PeerRecorder();
    const peersSeenByHook: string[] = [];
    handler.proxyVerdict = (data: ProxyData) => {
      if (data.command === 'LOCAL') return true; // the controller's readiness check
      peersSeenByHook.push(data.srcAddress!);
      if (data.srcAddress === '192.0.2.66') return false;
      if (data.srcAddress === '192.0.2.67') throw new Error('boom');
      return true;
    };
    const { controller } = await start(handler, 2000);
    try {
      for (const address of ['192.0.2.66', '192.0.2.67']) {
        const p = await Probe.connect(controller.port);
        p.send(Buffer.concat([v1Header('TCP4', address, '192.0.2.1', 5000, 25), Buffer.from('EHLO x\r\nMAIL FROM:<a@b.example>\r\n')]));
        const took = await assertClosedUngreeted(p, 2000, `refused ${address}`);
        assert.ok(took < 1500, `refused ${address} only after ${took} ms`);
      }
      assert.equal(handler.seen.length, 0, 'nothing after a refused header may run');
      const { seen } = await through(controller.port, handler, v1Header('TCP4', '192.0.2.68', '192.0.2.1', 5000, 25));
      assert.equal(seen.peer.address, '192.0.2.68');
      assert.deepEqual(peersSeenByHook, ['192.0.2.66', '192.0.2.67', '192.0.2.68']);
    } finally {
      await controller.stop();
    }
  });

  test('an async handlePROXY is awaited; pipelined commands wait for it and run in order', async () => {
    const handler = new PeerRecorder();
    let session: { peer: { address: string } } | null = null;
    handler.proxyVerdict = async (data: ProxyData) => {
      await sleep(100);
      return data.command === 'LOCAL' || data.srcAddress !== '192.0.2.70';
    };
    // Check session.peer inside the hook too: wrap handlePROXY.
    const original = handler.handlePROXY.bind(handler);
    handler.handlePROXY = (server, s, envelope, data) => {
      session = s as unknown as { peer: { address: string } };
      return original(server, s, envelope, data);
    };
    const { controller } = await start(handler, 2000);
    try {
      const p = await Probe.connect(controller.port);
      try {
        const started = Date.now();
        p.send(Buffer.concat([v2Header({ src: '192.0.2.71', srcPort: 7100 }), Buffer.from('EHLO x\r\nMAIL FROM:<a@b.example>\r\n')]));
        assert.equal((await p.reply()).code, 220);
        assert.ok(Date.now() - started >= 90, 'greeted before handlePROXY settled');
        assert.equal(session!.peer.address, '192.0.2.71');
        assert.equal((await p.reply()).code, 250);
        assert.match((await p.reply()).text, /peer=192\.0\.2\.71:7100/);
      } finally {
        p.close();
      }
      const refused = await Probe.connect(controller.port);
      refused.send(v1Header('TCP4', '192.0.2.70', '192.0.2.1', 1, 25));
      await assertClosedUngreeted(refused, 2000, 'async false');
    } finally {
      await controller.stop();
    }
  });
});

describe('fuzzed headers', () => {
  test('~300 garbage and mutated headers: no crash, each closed ungreeted (or served when valid), server still serves', async () => {
    const handler = new PeerRecorder();
    const { controller } = await start(handler, TIMEOUT);
    const rng = new Rng(0x5eed6);
    const valid = [
      v1Header('TCP4', '192.0.2.1', '192.0.2.2', 1111, 25),
      v1Header('TCP6', '2001:db8::1', '2001:db8::2', 2222, 25),
      Buffer.from('PROXY UNKNOWN\r\n'),
      v2Header({ src: '192.0.2.3', srcPort: 3333, tlvs: [{ type: TLV_ALPN, value: 'smtp' }], crc: true }),
      v2Header({ family: 'TCP6', src: '2001:db8::3', dst: '2001:db8::4', srcPort: 4444, tlvs: [{ type: TLV_UNIQUE_ID, value: 'u' }] }),
      v2Header({ command: 'LOCAL' }),
    ];
    const inputs: Buffer[] = [];
    for (let i = 0; i < 300; i++) {
      const kind = rng.int(0, 5);
      let input: Buffer;
      if (kind === 0) {
        input = rng.bytes(rng.int(1, 200));
      } else if (kind === 1) {
        // A v2 signature and random bytes after it.
        input = Buffer.concat([valid[3]!.subarray(0, 12), rng.bytes(rng.int(0, 120))]);
      } else if (kind === 2) {
        input = Buffer.concat([Buffer.from('PROXY '), rng.bytes(rng.int(0, 110))]);
      } else {
        // A valid header with 1-4 bytes flipped, inserted or cut.
        input = Buffer.from(rng.pick(valid));
        for (let k = rng.int(1, 4); k > 0; k--) {
          const at = rng.int(0, input.length - 1);
          const op = rng.int(0, 2);
          if (op === 0) input[at] = rng.int(0, 255);
          else if (op === 1) input = Buffer.concat([input.subarray(0, at), rng.bytes(1), input.subarray(at)]);
          else input = Buffer.concat([input.subarray(0, at), input.subarray(at + 1)]);
        }
      }
      inputs.push(input);
    }
    const outcome = { ok: 0, invalid: 0, incomplete: 0 };
    try {
      await pool(inputs, 30, async (input, i) => {
        const verdict = parseProxyHeader(input).status;
        outcome[verdict]++;
        const p = await Probe.connect(controller.port);
        try {
          p.send(input);
          if (verdict === 'ok') {
            // The header is valid (or the mutation left it so): the server agrees and greets,
            // or, when the bytes after the header are junk, at least never crashes.
            assert.ok(await p.waitLineOrClose(3000), `input ${i} ${input.toString('hex')}: no answer`);
            if (p.received.length > 0) assert.match(p.received.toString('latin1'), /^220 /, `input ${i}`);
          } else {
            await assertClosedUngreeted(p, 3000, `input ${i} (${verdict}) ${input.toString('hex')}`);
          }
        } finally {
          p.close();
        }
      });
      assert.ok(outcome.invalid > 150, `mostly invalid inputs expected: ${JSON.stringify(outcome)}`);
      assert.ok(outcome.incomplete > 0, `some truncated inputs expected: ${JSON.stringify(outcome)}`);
      // Still serving, and nothing left open.
      const { seen } = await through(controller.port, handler, v1Header('TCP4', '192.0.2.200', '192.0.2.1', 2000, 25));
      assert.equal(seen.peer.address, '192.0.2.200');
      const open = await new Promise<number>((resolve, reject) =>
        controller.server!.getConnections((error, count) => (error ? reject(error) : resolve(count))),
      );
      assert.ok(open <= 1, `${open} connections still open after the fuzz`);
    } finally {
      await controller.stop();
    }
  });
});

describe('start() and other listeners with proxyProtocolTimeout', () => {
  test('start() resolves (its readiness check is a v2 LOCAL header) and stop() frees the port', async () => {
    const handler = new PeerRecorder();
    const controller = new Controller(handler, { hostname: '127.0.0.1', port: 0, proxyProtocolTimeout: 200, logger: quiet, readyTimeout: 3000 });
    await controller.start();
    try {
      assert.ok(handler.proxyCalls.length >= 1);
      assert.equal(handler.proxyCalls[0]!.command, 'LOCAL');
      assert.equal(handler.proxyCalls[0]!.version, 2);
      const { seen } = await through(controller.port, handler, v1Header('TCP4', '192.0.2.5', '192.0.2.1', 55, 25));
      assert.equal(seen.peer.address, '192.0.2.5');
    } finally {
      await controller.stop();
    }
  });

  test('a UnixSocketController with proxyProtocolTimeout starts and takes headers', async () => {
    const dir = await tempDir('proxy-unix');
    const handler = new PeerRecorder();
    const controller = new UnixSocketController(handler, { unixSocket: join(dir, 's.sock'), proxyProtocolTimeout: 1000, logger: quiet });
    try {
      await controller.start();
      const p = await new Promise<Probe>((resolve, reject) => {
        const socket = net.connect({ path: join(dir, 's.sock') });
        socket.once('connect', () => resolve(new Probe(socket)));
        socket.once('error', reject);
      });
      try {
        p.send(v1Header('TCP4', '192.0.2.8', '192.0.2.1', 800, 25));
        assert.equal((await transaction(p)).code, 250);
        assert.deepEqual(handler.seen.at(-1)!.peer, { address: '192.0.2.8', port: 800, family: 'IPv4' });
      } finally {
        p.close();
      }
    } finally {
      await controller.stop();
      await removeDir(dir);
    }
  });

  let certs: Certs | null = null;
  test('implicit TLS behind a proxy: the PROXY header comes in clear before the TLS handshake (as HAProxy sends it)', async (t) => {
    certs ??= makeCertsIfPossible();
    if (!needCerts(t, certs)) return;
    const handler = new PeerRecorder();
    const controller = new Controller(handler, {
      hostname: '127.0.0.1',
      port: 0,
      proxyProtocolTimeout: 2000,
      logger: quiet,
      readyTimeout: 3000,
      tls: { cert: certs.server.cert, key: certs.server.key },
    });
    let started = false;
    try {
      await controller.start();
      started = true;
      const raw = await Probe.connect(controller.port);
      raw.send(v1Header('TCP4', '192.0.2.9', '192.0.2.1', 900, 465));
      const secure = await new Promise<Probe>((resolve, reject) => {
        const s = tls.connect({ socket: raw.socket, rejectUnauthorized: false });
        const timer = setTimeout(() => reject(new Error('TLS handshake after the PROXY header did not complete')), 3000);
        s.once('secureConnect', () => {
          clearTimeout(timer);
          resolve(new Probe(s));
        });
        s.once('error', (error) => {
          clearTimeout(timer);
          reject(new Error(`TLS handshake after the PROXY header failed: ${error.message}`));
        });
      });
      try {
        assert.equal((await transaction(secure)).code, 250);
        assert.equal(handler.seen.at(-1)!.peer.address, '192.0.2.9');
      } finally {
        secure.close();
        raw.close();
      }
    } finally {
      if (started) await controller.stop();
      certs?.cleanup();
      certs = null;
    }
  });
});
