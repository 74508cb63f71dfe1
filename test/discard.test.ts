/**
 * Discarded input costs no memory: an over-long command line or AUTH response is dropped as it
 * arrives, never stored or joined, whatever the chunk sizes. Pure framer tests count the copies;
 * socket tests bound the server's buffer memory while many connections are discarding at once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { CommandFramer, LINE_TOO_LONG } from '../src/framing.js';
import { Sink } from '../src/handlers/sink.js';
import { RawClient, startServer } from './helpers.js';

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const MiB = 1024 * 1024;

/** Runs fn with Buffer.concat counted. */
function countingConcat(fn: () => void): number {
  const original = Buffer.concat;
  let calls = 0;
  Buffer.concat = ((list: readonly Uint8Array[], total?: number) => {
    calls++;
    return original(list, total);
  }) as typeof Buffer.concat;
  try {
    fn();
  } finally {
    Buffer.concat = original;
  }
  return calls;
}

for (const size of [1, 100, 4096, 65_536]) {
  test(`framer: a ${size === 1 ? 1 : 16} MiB line in ${size}-byte chunks is dropped with at most maxLine/${size} joins, nothing held`, () => {
    const framer = new CommandFramer(512);
    const chunk = Buffer.alloc(size, 0x41); // one buffer, pushed again and again: the framer allocates alone
    const pushes = Math.ceil((size === 1 ? 1 : 16) * MiB / size); // 1 MiB for 1-byte chunks keeps the loop short
    let held = 0;
    const joins = countingConcat(() => {
      for (let i = 0; i < pushes; i++) {
        framer.push(chunk);
        assert.equal(framer.next(), null);
        held = Math.max(held, framer.buffered);
      }
    });
    assert.ok(joins <= Math.ceil(512 / size) + 1, `${joins} joins`);
    assert.ok(held <= 512 + size, `held ${held} bytes`);
    framer.push(Buffer.from('tail\r\nNOOP\r\n'));
    assert.equal(framer.next(), LINE_TOO_LONG);
    assert.equal(String(framer.next()), 'NOOP');
    assert.equal(framer.next(), null);
  });
}

test('framer: the end of a skipped line and the commands behind it may arrive in any split', () => {
  const line = Buffer.concat([Buffer.alloc(2000, 0x42), Buffer.from('\r\nRSET\r\nNOOP\r\n')]);
  for (let split = 1; split < line.length; split += 97) {
    const framer = new CommandFramer(512);
    framer.push(line.subarray(0, split));
    const out: string[] = [];
    for (let line2 = framer.next(); line2 !== null; line2 = framer.next()) out.push(String(line2 === LINE_TOO_LONG ? 'TOO LONG' : line2));
    framer.push(line.subarray(split));
    for (let line2 = framer.next(); line2 !== null; line2 = framer.next()) out.push(String(line2 === LINE_TOO_LONG ? 'TOO LONG' : line2));
    assert.deepEqual(out, ['TOO LONG', 'RSET', 'NOOP'], `split at ${split}`);
  }
});

/**
 * Sends up to `total` bytes of one endless line from one reused buffer (the client allocates
 * nothing), then CRLF and QUIT; returns every reply until the server closed.
 */
async function flood(port: number, total: number, prefix: string): Promise<string[]> {
  const c = await RawClient.connect(port);
  try {
    assert.equal((await c.reply()).code, 220);
    const chunk = Buffer.alloc(64 * 1024, 0x41);
    c.send(prefix);
    for (let sent = 0; sent < total && !c.closed && c.unread === ''; sent += chunk.length) {
      if (!c.socket.write(chunk)) await Promise.race([once(c.socket, 'drain'), once(c.socket, 'close')]);
    }
    c.send('\r\nQUIT\r\n');
    const got: string[] = [];
    // Until the server closes, or says it does (a client still writing waits for the close).
    while ((!c.closed || c.unread !== '') && !got.some((r) => r.startsWith('421'))) {
      got.push((await c.reply(30_000).catch(() => null))?.text ?? 'closed');
    }
    return got.filter((r) => r !== 'closed');
  } finally {
    c.close();
  }
}

test('a command line under 1 MiB is dropped with 500 and the session goes on', async () => {
  await using server = await startServer(new Sink(), { logger: quiet });
  assert.deepEqual(await flood(server.port, 900 * 1024, 'NOOP '), ['500 5.5.2 Error: command line too long', '221 2.0.0 Bye']);
});

test('8 connections each sending a 32 MiB command line: 421 after 1 MiB, buffer memory stays near what was read', async () => {
  await using server = await startServer(new Sink(), { logger: quiet });
  const before = process.memoryUsage().arrayBuffers;
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().arrayBuffers)), 5);
  try {
    const replies = await Promise.all(Array.from({ length: 8 }, () => flood(server.port, 32 * MiB, 'NOOP ')));
    for (const r of replies) assert.deepEqual(r, ['421 4.7.0 Error: command line too long, closing']);
  } finally {
    clearInterval(sampler);
  }
  // A line past 1 MiB is not read on: what the server read is about 1 MiB per connection, and
  // those read buffers are what the garbage collector has to free (it was 32-40 MiB for the 8
  // when every line was read to its end).
  const grew = (peak - before) / MiB;
  assert.ok(grew < 32, `buffers grew by ${grew.toFixed(1)} MiB`);
});

test('an AUTH response of 20 MiB gets 421 once 1 MiB of it was dropped; the rest is never read', async () => {
  await using server = await startServer(new Sink(), {
    logger: quiet,
    authRequireTLS: false,
    authenticator: () => ({ success: false }),
  });
  const c = await RawClient.connect(server.port);
  try {
    assert.equal((await c.reply()).code, 220);
    assert.equal((await c.cmd('EHLO client.example')).code, 250);
    assert.equal((await c.cmd('AUTH LOGIN')).code, 334);
    const chunk = Buffer.alloc(64 * 1024, 0x41);
    let sent = 0;
    for (; sent < 20 * MiB && c.unread === '' && !c.closed; sent += chunk.length) {
      if (!c.socket.write(chunk)) await Promise.race([once(c.socket, 'drain'), once(c.socket, 'close')]);
    }
    const r = await c.reply(30_000);
    assert.equal(r.text, '421 4.7.0 Error: command line too long, closing');
    assert.ok(sent < 20 * MiB, 'the server answered before the client was done');
  } finally {
    c.close();
  }
});
