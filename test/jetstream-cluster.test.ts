/**
 * The JetStream handler on a three-node cluster (replicas=3, loopback), under a bounded load of
 * ten connections, with failures: kill -9 of the stream's leader, and kill -9 of tsmtpd itself.
 * What must hold: every message answered 250 is in the stream exactly once and complete; none
 * answered with a refusal is there; one left without an answer is there at most once, and a
 * resend of it (the client's retry) is stored no second time.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { jetstreamManager, RetentionPolicy } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { JetStream } from '../src/handlers/jetstream.js';
import { RawClient } from './helpers.js';
import { startServer } from './helpers.js';
import { CliProcess, freePort } from './cli-util.js';
import { jetStreamReady, needNats, withJetStream, sleep, storedMail, transaction, natsForSuite } from './nats-util.js';

const CONNECTIONS = 10;
const PER_CONNECTION = 12;
const CHUNK = 64 * 1024;

type Outcome = 'ok' | 'refused' | 'unanswered';

/** Message `n`: every seventh is large enough to go as several chunks. */
function body(n: string): string {
  const filler = n.endsWith('-3') ? `${'z'.repeat(78)}\r\n`.repeat(2500) : '';
  return `Subject: ${n}\r\nMessage-ID: <${n}@load.example>\r\n\r\nmessage ${n}\r\n${filler}`;
}

function subjectOf(text: string): string {
  return /^Subject: (\S+)/m.exec(text)?.[1] ?? '?';
}

/**
 * Ten connections, each sending its messages in turn; a 4xx is retried (the same bytes) up to
 * `retries` times. `progress` is told each 250. A connection that dies leaves its message
 * unanswered and stops.
 */
async function load(port: number, names: string[][], retries: number, progress: () => void): Promise<Map<string, Outcome>> {
  // However the cluster behaves, the load ends: past this, a 4xx is final.
  const end = Date.now() + 90_000;
  const outcomes = new Map<string, Outcome>();
  await Promise.all(
    names.map(async (mine) => {
      let c: RawClient;
      try {
        c = await RawClient.connect(port);
        if ((await c.reply()).code !== 220 || (await c.cmd('EHLO load.example')).code !== 250) throw new Error('greeting');
      } catch {
        for (const n of mine) outcomes.set(n, 'unanswered');
        return;
      }
      let dead = false;
      for (const n of mine) {
        if (dead) {
          outcomes.set(n, 'unanswered');
          continue;
        }
        let outcome: Outcome = 'refused';
        for (let attempt = 0; attempt <= retries; attempt++) {
          let reply: string;
          try {
            reply = (await transaction(c, 'load@example.com', ['rcpt@example.net'], body(n)))[0]!;
          } catch {
            dead = true;
            outcome = 'unanswered';
            break;
          }
          if (reply.startsWith('250')) {
            outcome = 'ok';
            progress();
            break;
          }
          if (!reply.startsWith('4') || Date.now() > end) break;
          await sleep(200);
        }
        outcomes.set(n, outcome);
      }
      c.close();
    }),
  );
  return outcomes;
}

function names(prefix: string): string[][] {
  return Array.from({ length: CONNECTIONS }, (_, i) => Array.from({ length: PER_CONNECTION }, (_, j) => `${prefix}-${i}-${j}`));
}

/** How many complete copies of each message the stream holds. */
async function copies(servers: string[], stream: string, subject = 'mail.in'): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const mail of await storedMail(servers, stream, subject)) {
    const n = subjectOf(mail.body.toString());
    counts.set(n, (counts.get(n) ?? 0) + 1);
  }
  return counts;
}

function check(outcomes: Map<string, Outcome>, stored: Map<string, number>): void {
  for (const [n, count] of stored) {
    assert.ok(outcomes.has(n), `${n} is stored but was never sent`);
    assert.equal(count, 1, `${n} is stored ${count} times`);
  }
  for (const [n, outcome] of outcomes) {
    if (outcome === 'ok') assert.equal(stored.get(n), 1, `${n} was answered 250 but is not stored`);
    if (outcome === 'refused') assert.equal(stored.get(n), undefined, `${n} was refused but is stored`);
  }
}

async function leaderOf(servers: string[], stream: string): Promise<string> {
  const nc = await connect({ servers });
  try {
    const info = await (await jetstreamManager(nc)).streams.info(stream);
    return info.cluster?.leader ?? '';
  } finally {
    await nc.close();
  }
}

/**
 * The stream with three replicas, made before the load: a node restarted by the previous test
 * may take a few seconds before it can hold a replica again.
 */
async function makeStream(servers: string[], stream: string): Promise<void> {
  await withJetStream(servers, 30_000, (jsm) =>
    jsm.streams.add({ name: stream, subjects: ['rx.in', 'rx.in.chunk'], retention: RetentionPolicy.Workqueue, num_replicas: 3, duplicate_window: 120e9 }),
  );
}

describe('JetStream handler on a three-node cluster', { timeout: 300_000 }, () => {
  const nats = natsForSuite(3);

  test('kill -9 of the stream leader during a load: every 250 is stored once, nothing refused is stored', async (t) => {
    if (!needNats(t)) return;
    const handler = new JetStream({ servers: nats().urls, stream: 'NODEKILL', replicas: 3, deadline: 5000, chunkSize: CHUNK });
    const server = await startServer(handler);
    try {
      const all = names('nk');
      const total = CONNECTIONS * PER_CONNECTION;
      let done = 0;
      let killed: Promise<void> | null = null;
      // The stream exists once the first message is stored; its leader dies a third of the way in.
      const outcomes = await load(server.port, all, 20, () => {
        done += 1;
        if (done === Math.floor(total / 3)) {
          killed = leaderOf(nats().urls, 'NODEKILL').then((leader) => nats().nodes.find((n) => n.name === leader)!.kill());
        }
      });
      assert.ok(killed !== null, 'the leader was killed');
      await killed;
      const stored = await copies(nats().urls.filter((_, i) => nats().nodes[i]!.running), 'NODEKILL');
      check(outcomes, stored);
      assert.equal([...outcomes.values()].filter((o) => o === 'ok').length, total, 'with retries every message gets its 250');
    } finally {
      await server.stop();
      await handler.close();
      for (const node of nats().nodes) if (!node.running) await node.start();
      await jetStreamReady(nats().urls);
    }
  });

  test('kill -9 of tsmtpd during a load: the unanswered are stored at most once, and their resend not again', async (t) => {
    if (!needNats(t)) return;
    const cli = (port: number) =>
      new CliProcess(['-n', '-l', `127.0.0.1:${port}`, '-c', 'JetStream', nats().urls.join(','), 'RXKILL', 'subject=rx.in', 'replicas=3', 'deadline=5', `chunk=${CHUNK}`]);
    await makeStream(nats().urls, 'RXKILL');
    const port = await freePort();
    const first = cli(port);
    let second: CliProcess | null = null;
    try {
      await first.listening(15_000);
      const all = names('rk');
      let done = 0;
      const outcomes = await load(port, all, 5, () => {
        done += 1;
        if (done === 40) first.child.kill('SIGKILL');
      });
      await first.exited;
      const unanswered = [...outcomes].filter(([, o]) => o === 'unanswered').map(([n]) => n);
      assert.ok(unanswered.length > 0, 'the kill left messages unanswered');
      check(outcomes, await copies(nats().urls, 'RXKILL', 'rx.in'));

      // The clients come back to another receiver and send what was left unanswered again.
      const port2 = await freePort();
      second = cli(port2);
      await second.listening(15_000);
      const again = await load(port2, [unanswered], 20, () => undefined);
      assert.ok([...again.values()].every((o) => o === 'ok'), JSON.stringify([...again]));
      for (const [n, o] of again) outcomes.set(n, o);
      const stored = await copies(nats().urls, 'RXKILL', 'rx.in');
      check(outcomes, stored);
      assert.equal(stored.size, CONNECTIONS * PER_CONNECTION);
    } finally {
      await first.stop();
      await second?.stop();
    }
  });
});
