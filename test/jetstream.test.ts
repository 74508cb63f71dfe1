/**
 * The JetStream handler against a real nats-server (one node): 250 only once stored, the record
 * and session facts, the idempotency id, 451 4.3.0 while NATS is down or stopped and success on
 * the retry, bodies larger than a NATS message, LMTP's reply per recipient; and its CLI arguments.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { UsageError } from '../src/handler.js';
import { JetStream, type JetStreamOptions } from '../src/handlers/jetstream.js';
import { parseJetStreamArgs } from '../src/handlers/jetstream-cli.js';
import { startServer } from './helpers.js';
import { expectCmd, greet, type Mode } from './lmtp-util.js';
import { freePort, needNats, NatsNode, startNats, storedMail, transaction, natsForSuite } from './nats-util.js';

function message(n: number | string, extra = ''): string {
  return `From: a@example.com\r\nTo: b@example.net\r\nSubject: ${n}\r\nMessage-ID: <${n}@example.com>\r\n\r\nBody ${n}\r\n${extra}`;
}

describe('JetStream handler, one node', { timeout: 120_000 }, () => {
  const nats = natsForSuite(1);

  async function withServer(t: import('node:test').TestContext, options: Partial<JetStreamOptions>, mode: Mode, run: (port: number, handler: JetStream) => Promise<void>) {
    if (!needNats(t)) return;
    const handler = new JetStream({ servers: nats().urls, deadline: 3000, ...options });
    const server = await startServer(handler, { lmtp: mode === 'LMTP' });
    try {
      await run(server.port, handler);
    } finally {
      await server.stop();
      await handler.close();
    }
  }

  test('answers 250 once stored, with the envelope, the session facts and the body byte for byte', async (t) => {
    await withServer(t, { stream: 'STORE', subject: 'store.in' }, 'SMTP', async (port) => {
      const { c } = await greet(port, 'SMTP');
      const body = message('store', 'bare\nLF and \u00e9\r\n');
      const [reply] = await transaction(c, 'a@example.com', ['b@example.net', 'c@example.net'], body);
      assert.match(reply!, /^250 2\.0\.0 Queued as [0-9a-f]{16} \(STORE #\d+\)$/);
      c.close();
      const mail = await storedMail(nats().urls, 'STORE', 'store.in');
      assert.equal(mail.length, 1);
      const { record, body: stored } = mail[0]!;
      assert.equal(record.mailFrom, 'a@example.com');
      assert.deepEqual(record.rcptTos, ['b@example.net', 'c@example.net']);
      assert.equal(record.protocol, 'SMTP');
      assert.equal(record.session.hostName, 'client.example');
      assert.equal(record.session.peer.address, '127.0.0.1');
      assert.equal(record.session.extendedSmtp, true);
      assert.equal(stored.toString(), body);
      assert.deepEqual(record.chunks, []);
    });
  });

  test('the same message sent again (a retry after a lost reply) is stored once; a different one is not merged', async (t) => {
    await withServer(t, { stream: 'IDEM', subject: 'idem.in' }, 'SMTP', async (port) => {
      const { c } = await greet(port, 'SMTP');
      const first = await transaction(c, 'a@example.com', ['b@example.net'], message('idem'));
      const again = await transaction(c, 'a@example.com', ['b@example.net'], message('idem'));
      const other = await transaction(c, 'a@example.com', ['b@example.net'], message('idem-2'));
      for (const r of [...first, ...again, ...other]) assert.match(r, /^250 /);
      assert.equal(first[0], again[0], 'the retry is told the first copy');
      c.close();
      const mail = await storedMail(nats().urls, 'IDEM', 'idem.in');
      assert.deepEqual(mail.map((m) => m.record.rcptTos.length), [1, 1]);
    });
  });

  test('bodies larger than one NATS message go as chunks and come back whole', async (t) => {
    await withServer(t, { stream: 'BIG', subject: 'big.in', deadline: 20_000 }, 'SMTP', async (port) => {
      const { c } = await greet(port, 'SMTP');
      // 3 MB: more than nats-server's default max_payload (1 MB).
      const line = 'x'.repeat(998) + '\r\n';
      const body = message('big', line.repeat(3 * 1024));
      const [reply] = await transaction(c, 'a@example.com', ['b@example.net'], body);
      assert.match(reply!, /^250 /);
      c.close();
      const [mail] = await storedMail(nats().urls, 'BIG', 'big.in');
      assert.ok(mail !== undefined);
      assert.ok(mail.record.chunks.length >= 3, `${mail.record.chunks.length} chunks`);
      assert.equal(mail.body.toString(), body);
    });
  });

  test('LMTP: one reply per recipient, the message stored once', async (t) => {
    await withServer(t, { stream: 'LMTP', subject: 'lmtp.in' }, 'LMTP', async (port) => {
      const { c } = await greet(port, 'LMTP');
      const replies = await transaction(c, 'a@example.com', ['x@example.net', 'y@example.net', 'z@example.net'], message('lmtp'), 'LMTP');
      assert.equal(replies.length, 3);
      for (const r of replies) assert.match(r, /^250 2\.0\.0 Queued/);
      c.close();
      const mail = await storedMail(nats().urls, 'LMTP', 'lmtp.in');
      assert.equal(mail.length, 1);
      assert.equal(mail[0]!.record.protocol, 'LMTP');
      assert.deepEqual(mail[0]!.record.rcptTos, ['x@example.net', 'y@example.net', 'z@example.net']);
    });
  });

  test('NATS stopped (SIGSTOP): 451 4.3.0 past the deadline, the connection lives, the retry succeeds', async (t) => {
    await withServer(t, { stream: 'SLOW', subject: 'slow.in', deadline: 800 }, 'SMTP', async (port) => {
      const { c } = await greet(port, 'SMTP');
      assert.match((await transaction(c, 'a@example.com', ['b@example.net'], message('warm')))[0]!, /^250 /);
      await nats().nodes[0]!.pause();
      try {
        assert.match((await transaction(c, 'a@example.com', ['b@example.net'], message('slow')))[0]!, /^451 4\.3\.0 /);
        await expectCmd(c, 'NOOP', 250);
      } finally {
        nats().nodes[0]!.resume();
      }
      let reply = '';
      for (let i = 0; i < 10 && !reply.startsWith('250'); i++) {
        reply = (await transaction(c, 'a@example.com', ['b@example.net'], message('slow')))[0]!;
      }
      assert.match(reply, /^250 /);
      c.close();
      const mail = await storedMail(nats().urls, 'SLOW', 'slow.in');
      assert.deepEqual(mail.map((m) => m.body.toString().includes('Subject: slow\r')), [false, true]);
    });
  });
});

describe('JetStream handler, NATS down', { timeout: 120_000 }, () => {
  test('unreachable at the first message, and killed later: 451 4.3.0, then 250 once it is back', async (t) => {
    if (!needNats(t)) return;
    // A node whose port is known before it runs, so the handler starts with nothing to talk to.
    const probe = await startNats(1);
    const config = probe.nodes[0]!.config;
    await probe.nodes[0]!.kill('SIGTERM');
    const node = new NatsNode('n1', probe.nodes[0]!.port, config);
    const handler = new JetStream({ servers: [node.url], stream: 'DOWN', subject: 'down.in', deadline: 1000 });
    const server = await startServer(handler);
    try {
      const { c } = await greet(server.port, 'SMTP');
      assert.match((await transaction(c, 'a@example.com', ['b@example.net'], message('down-1')))[0]!, /^451 4\.3\.0 /);
      await expectCmd(c, 'NOOP', 250);
      await node.start();
      assert.match((await transaction(c, 'a@example.com', ['b@example.net'], message('down-1')))[0]!, /^250 /);
      await node.kill();
      assert.match((await transaction(c, 'a@example.com', ['b@example.net'], message('down-2')))[0]!, /^451 4\.3\.0 /);
      await node.start();
      let reply = '';
      for (let i = 0; i < 20 && !reply.startsWith('250'); i++) {
        reply = (await transaction(c, 'a@example.com', ['b@example.net'], message('down-2')))[0]!;
      }
      assert.match(reply, /^250 /);
      c.close();
      const mail = await storedMail([node.url], 'DOWN', 'down.in');
      assert.equal(mail.length, 2);
    } finally {
      await server.stop();
      await handler.close();
      await node.kill('SIGTERM');
      await probe.stop();
    }
  });

  test('a server that refuses the connection costs no more than the deadline', async () => {
    const errors: unknown[] = [];
    const handler = new JetStream({ servers: [`nats://127.0.0.1:${await freePort()}`], deadline: 300, onError: (e) => errors.push(e) });
    const server = await startServer(handler);
    try {
      const { c } = await greet(server.port, 'SMTP');
      assert.match((await transaction(c, 'a@example.com', ['b@example.net'], message('refused')))[0]!, /^451 4\.3\.0 /);
      assert.equal(errors.length, 1, 'the operator is told why');
      await expectCmd(c, 'QUIT', 221);
    } finally {
      await server.stop();
      await handler.close();
    }
  });
});

describe('JetStream CLI arguments', () => {
  test('servers, stream and key=value settings', () => {
    assert.deepEqual(parseJetStreamArgs(['nats://a:4222,nats://b:4222', 'INBOUND', 'subject=mx.in', 'deadline=2.5', 'replicas=3', 'user=u', 'pass=p=q', 'tlsca=/ca.pem', 'tlscert=/c.pem', 'tlskey=/k.pem', 'create=no', 'chunk=65536']), {
      servers: ['nats://a:4222', 'nats://b:4222'],
      stream: 'INBOUND',
      subject: 'mx.in',
      deadline: 2500,
      replicas: 3,
      user: 'u',
      pass: 'p=q',
      tls: { caFile: '/ca.pem', certFile: '/c.pem', keyFile: '/k.pem' },
      createStream: false,
      chunkSize: 65536,
    });
    assert.deepEqual(parseJetStreamArgs(['tls://mq:4443', 'token=t', 'creds=/x.creds']), { servers: ['tls://mq:4443'], token: 't', credsFile: '/x.creds' });
    assert.ok(JetStream.fromCli('nats://127.0.0.1:4222') instanceof JetStream);
  });

  test('bad arguments are usage errors', () => {
    for (const args of [[], [''], ['http://x:1'], ['nats://a:1', 'bad stream'], ['nats://a:1', 'x=1'], ['nats://a:1', 'deadline=0'], ['nats://a:1', 'replicas=2.5'], ['nats://a:1', 'subject=a..b'], ['nats://a:1', 'S', 'plain'], ['nats://a:1', 'create=maybe']]) {
      assert.throws(() => JetStream.fromCli(...args), UsageError, JSON.stringify(args));
    }
  });
});
