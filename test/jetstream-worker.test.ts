/**
 * The JetStream worker against a real nats-server: mail stored by the JetStream handler is
 * delivered into a Maildir, over LMTP and over SMTP, acknowledged only once delivered; a failing
 * target gets the message again after a backoff; a partial LMTP failure is retried only for the
 * recipients left; chunks are removed once delivered. And the worker's command-line arguments.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { Controller } from '../src/controller.js';
import type { Handler, SMTPServer } from '../src/handler.js';
import { UsageError } from '../src/handler.js';
import { JetStream } from '../src/handlers/jetstream.js';
import type { Envelope, Session } from '../src/session.js';
import { parseWorkerArgs } from '../src/jetstream-worker-args.js';
import { startJetStreamWorker, type DeliveryTarget, type JetStreamWorker } from '../src/jetstream-worker.js';
import { ROOT } from './cli-util.js';
import { startServer } from './helpers.js';
import { greet } from './lmtp-util.js';
import { freePort, needNats, sleep, storedMail, streamMessages, transaction, natsForSuite } from './nats-util.js';
import { tempDir } from './scale-util.js';

/** Records each delivery per recipient; the first `failures` deliveries to a listed recipient get 451. */
class Target implements Handler {
  got: Array<{ rcpt: string; body: string }> = [];
  constructor(private failing = new Map<string, number>()) {}
  handleDATA(server: SMTPServer, _session: Session, envelope: Envelope): string[] {
    return envelope.rcptTos.map((rcpt) => {
      const left = this.failing.get(rcpt) ?? 0;
      if (left > 0) {
        this.failing.set(rcpt, left - 1);
        return `451 4.3.0 <${rcpt}> not now`;
      }
      this.got.push({ rcpt, body: envelope.originalContent!.toString() });
      return server.lmtp ? `250 2.0.0 <${rcpt}> ok` : '250 OK';
    });
  }
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('JetStream worker', { timeout: 180_000 }, () => {
  const nats = natsForSuite(1);

  /** Stores `bodies` through a JetStream handler on its own stream, then runs `run` with a worker on it. */
  async function scenario(t: TestContext, stream: string, bodies: Array<{ to: string[]; body: string }>, target: DeliveryTarget, run: (worker: JetStreamWorker) => Promise<void>) {
    if (!needNats(t)) return;
    const subject = `${stream.toLowerCase()}.in`;
    const handler = new JetStream({ servers: nats().urls, stream, subject, deadline: 10_000, chunkSize: 64 * 1024 });
    const server = await startServer(handler);
    try {
      const { c } = await greet(server.port, 'SMTP');
      for (const { to, body } of bodies) assert.match((await transaction(c, 'sender@example.com', to, body))[0]!, /^250 /);
      c.close();
    } finally {
      await server.stop();
      await handler.close();
    }
    const worker = await startJetStreamWorker({ servers: nats().urls, stream, subject, target, backoff: { initial: 50, max: 400 } });
    try {
      await run(worker);
    } finally {
      await worker.stop();
    }
    assert.deepEqual(await storedMail(nats().urls, stream, subject), [], 'acknowledged mail leaves the work queue');
  }

  const big = `Subject: big\r\n\r\n${'y'.repeat(78)}\r\n`.repeat(4000); // ~320 kB: five 64 kB chunks

  test('delivers into a Maildir, chunked bodies whole, and removes the chunks', async (t) => {
    const dir = await tempDir('jsworker');
    try {
      const mails = [
        { to: ['a@example.net'], body: 'Subject: one\r\n\r\nfirst\r\n' },
        { to: ['b@example.net', 'c@example.net'], body: big },
      ];
      await scenario(t, 'WMAILDIR', mails, { maildir: dir }, async (worker) => {
        await until('two messages in new/', async () => (await readdir(join(dir, 'new')).catch(() => [])).length === 2);
        const files = await readdir(join(dir, 'new'));
        const texts = await Promise.all(files.map((f) => readFile(join(dir, 'new', f), 'utf8')));
        assert.ok(texts.some((x) => x.includes('X-RcptTo: a@example.net') && x.endsWith('first\r\n')));
        assert.ok(texts.some((x) => x.includes('X-RcptTo: b@example.net, c@example.net') && x.endsWith(big)));
        await until('counts', () => worker.counts.delivered === 2);
      });
      assert.equal(await streamMessages(nats().urls, 'WMAILDIR'), 0, 'no chunk is left behind');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('LMTP: a recipient that gets 451 is retried after a backoff, alone; the others get it once', async (t) => {
    const target = new Target(new Map([['y@example.net', 2]]));
    const lmtp = await startServer(target, { lmtp: true });
    try {
      await scenario(t, 'WLMTP', [{ to: ['x@example.net', 'y@example.net'], body: 'Subject: lmtp\r\n\r\nhello\r\n' }], { host: '127.0.0.1', port: lmtp.port, lmtp: true }, async (worker) => {
        await until('both recipients', () => target.got.length === 2);
        assert.deepEqual(target.got.map((g) => g.rcpt).sort(), ['x@example.net', 'y@example.net']);
        assert.ok(target.got.every((g) => g.body.includes('hello')));
        await until('counts', () => worker.counts.delivered === 1);
        assert.equal(worker.counts.retry, 2);
      });
    } finally {
      await lmtp.stop();
    }
  });

  test('SMTP: a target that is down at first gets the message once it is up', async (t) => {
    const port = await freePort();
    const target = new Target();
    let smtp: Controller | null = null;
    try {
      await scenario(t, 'WSMTP', [{ to: ['s@example.net'], body: big }], { host: '127.0.0.1', port }, async (worker) => {
        await until('a failed attempt', () => worker.counts.retry >= 1);
        assert.equal(target.got.length, 0);
        smtp = new Controller(target, { hostname: '127.0.0.1', port });
        await smtp.start();
        await until('the delivery', () => worker.counts.delivered === 1);
        assert.equal(target.got.length, 1);
        assert.equal(target.got[0]!.body, big);
      });
    } finally {
      await (smtp as Controller | null)?.stop();
    }
  });
});

describe('tsmtpd-jetstream-worker, the command', { timeout: 60_000 }, () => {
  const nats = natsForSuite(1);
  test('delivers into a Maildir and exits 0 on SIGTERM', async (t) => {
    if (!needNats(t)) return;
    const dir = await tempDir('jsworker-cli');
    const handler = new JetStream({ servers: nats().urls, stream: 'WCLI', subject: 'wcli.in' });
    const server = await startServer(handler);
    const child = spawn(process.execPath, [join(ROOT, 'dist', 'jetstream-worker-cli.js'), nats().urls[0]!, 'WCLI', 'subject=wcli.in', `maildir=${dir}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const { c } = await greet(server.port, 'SMTP');
      assert.match((await transaction(c, 'a@example.com', ['cli@example.net'], 'Subject: cli\r\n\r\nby the bin\r\n'))[0]!, /^250 /);
      c.close();
      await until('the file in new/', async () => (await readdir(join(dir, 'new')).catch(() => [])).length === 1);
      // The file can be in new/ before the worker's log line has come through the pipe.
      await until('the delivery logged', async () => /delivered [0-9a-f]+ to cli@example\.net/.test(stderr));
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
    } finally {
      child.kill('SIGKILL');
      await server.stop();
      await handler.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('tsmtpd-jetstream-worker arguments', () => {
  test('a target, a durable name, and the connection settings -c JetStream takes', () => {
    assert.deepEqual(parseWorkerArgs(['nats://a:1', 'IN', 'maildir=/var/mail/x', 'durable=w1', 'batch=4', 'user=u', 'pass=p']), {
      servers: ['nats://a:1'],
      stream: 'IN',
      user: 'u',
      pass: 'p',
      durable: 'w1',
      batch: 4,
      target: { maildir: '/var/mail/x' },
    });
    assert.deepEqual(parseWorkerArgs(['nats://a:1', 'lmtp=[::1]:24']).target, { host: '::1', port: 24, lmtp: true });
    assert.deepEqual(parseWorkerArgs(['nats://a:1', 'smtp=mx:25']).target, { host: 'mx', port: 25, lmtp: false });
  });
  test('no target, two targets, bad ports: usage errors', () => {
    for (const args of [['nats://a:1'], ['nats://a:1', 'maildir=/x', 'smtp=h:1'], ['nats://a:1', 'smtp=h'], ['nats://a:1', 'lmtp=h:0'], ['nats://a:1', 'maildir='], ['nats://a:1', 'smtp=h:1', 'batch=0'], ['nats://a:1', 'smtp=h:1', 'bogus=1']]) {
      assert.throws(() => parseWorkerArgs(args), UsageError, JSON.stringify(args));
    }
  });
});
