/**
 * The idle timeout is per record (Postfix's smtpd_per_record_deadline): a command line or a body
 * line must arrive in full within it, so a client trickling a byte at a time is cut off at the
 * timeout. Under stress (open connections at stressThreshold of maxConnections) the timeout and
 * the error limit tighten, and relax when the load falls. Bounds only, never exact timing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RawClient, Recorder, greeted, startServer } from './helpers.js';
import { sleep } from './attack-util.js';

/** Sends one byte every `every` ms (never an LF) until the server closes or `ms` pass. */
async function trickle(c: RawClient, every: number, ms: number): Promise<number> {
  const start = Date.now();
  let sent = 0;
  while (!c.closed && Date.now() - start < ms) {
    c.send('x');
    sent++;
    await sleep(every);
  }
  return sent;
}

test('a client trickling a byte every 20 ms is cut off with 421 at the timeout, on a command line and in a body', async (t) => {
  const rec = new Recorder();
  await using server = await startServer(rec, { timeout: 300 });
  for (const inBody of [false, true]) {
    const c = await greeted(server.port);
    if (inBody) {
      assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
    }
    const start = Date.now();
    const sent = await trickle(c, 20, 5000);
    const kept = Date.now() - start;
    t.diagnostic(`${inBody ? 'body' : 'command line'}: kept ${kept} ms, ${sent} bytes, timeout 300 ms`);
    assert.ok(c.closed, 'still open after 5 s of trickling');
    assert.ok(sent >= 5, `only ${sent} bytes were sent`);
    assert.match(c.unread, /^421 4\.4\.2 Error: timeout exceeded\r\n$/);
    assert.ok(kept >= 250 && kept < 3000, `kept ${kept} ms`);
    c.close();
  }
  assert.equal(rec.messages.length, 0);
});

test('complete lines more often than the timeout keep a session, though the whole takes many timeouts', async () => {
  await using server = await startServer(new Recorder(), { timeout: 300 });
  const c = await greeted(server.port);
  const start = Date.now();
  for (let i = 0; i < 10; i++) {
    await sleep(100);
    assert.equal((await c.cmd('NOOP')).code, 250);
  }
  assert.ok(Date.now() - start >= 900);
  // A body sent line by line, each line in time, is fine too.
  assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  for (let i = 0; i < 6; i++) {
    c.send(`line ${i}\r\n`);
    await sleep(100);
  }
  assert.equal((await c.cmd('.')).code, 250);
  c.close();
});

test('under stress the stress timeout and error limit apply; they relax when the load falls', async (t) => {
  // 4 of 5 is the default 80 %.
  await using server = await startServer(new Recorder(), { maxConnections: 5, timeout: 10_000, stressTimeout: 400, maxErrors: 20 });
  const clients: RawClient[] = [];
  for (let i = 0; i < 4; i++) clients.push(await greeted(server.port));
  assert.equal(server.underStress, true);
  // One error is one too many under stress.
  const bad = clients[3]!;
  assert.equal((await bad.cmd('MAIL FROM:<bad')).code, 501);
  assert.equal((await bad.reply()).text, '421 4.7.0 Too many errors, goodbye');
  await bad.waitClosed();
  clients.pop();
  for (let i = 0; i < 10 && server.underStress; i++) await sleep(10);
  assert.equal(server.underStress, false, 'three of five open: no stress');
  // Not under stress: errors are counted against the usual limit, idle clients stay.
  assert.equal((await clients[0]!.cmd('MAIL FROM:<bad')).code, 501);
  await sleep(700);
  for (const c of clients) assert.equal((await c.cmd('NOOP')).code, 250, 'kept past the stress timeout without stress');
  // Stress again: idle ones go at the stress timeout, not at 10 s. (Each one that goes lowers
  // the load, so the last ones may be kept: only the first is waited for.)
  const start = Date.now();
  clients.push(await greeted(server.port));
  assert.equal(server.underStress, true);
  await Promise.race(clients.map((c) => c.waitClosed(5000)));
  const kept = Date.now() - start;
  t.diagnostic(`under stress, an idle client kept ${kept} ms (stressTimeout 400 ms, timeout 10 s)`);
  assert.ok(kept < 5000, `kept ${kept} ms`);
  const gone = clients.find((c) => c.closed)!;
  assert.match(gone.unread, /421 4\.4\.2 Error: timeout exceeded\r\n$/);
  for (const c of clients) c.close();
  for (let i = 0; i < 50 && server.underStress; i++) await sleep(10);
  // Load gone: a new client is kept past the stress timeout again.
  const after = await greeted(server.port);
  await sleep(700);
  assert.equal((await after.cmd('NOOP')).code, 250);
  after.close();
});
