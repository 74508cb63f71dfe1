/**
 * Past maxRecipients a RCPT gets 452 (RFC 5321 §4.5.3.1.10: deliver to the accepted ones, send
 * the rest later); that 452 counts toward maxErrors only past recipientOvershootLimit, as
 * Postfix's smtpd_recipient_overshoot_limit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Recorder, greeted, startServer } from './helpers.js';
import { replies } from './attack-util.js';

function rcpts(from: number, to: number): string {
  let wire = '';
  for (let i = from; i < to; i++) wire += `RCPT TO:<r${i}@example.com>\r\n`;
  return wire;
}

test('a pipelining client with 1,100 recipients reaches DATA, and its retry with the rest works', async () => {
  const rec = new Recorder();
  await using server = await startServer(rec);
  const c = await greeted(server.port);
  c.send('MAIL FROM:<a@example.com>\r\n' + rcpts(0, 1100) + 'DATA\r\n');
  const got = await replies(c, 1102);
  assert.equal(got[0]!.code, 250);
  const codes = got.slice(1, 1101).map((r) => r.code);
  assert.deepEqual(codes.slice(0, 1000), new Array(1000).fill(250));
  assert.deepEqual(codes.slice(1000), new Array(100).fill(452));
  assert.equal(got[1101]!.code, 354);
  c.send('Subject: first\r\n\r\nx\r\n.\r\n');
  assert.equal((await c.reply()).code, 250);
  assert.equal(rec.messages[0]!.rcptTos.length, 1000);
  assert.equal(rec.messages[0]!.rcptTos[999], 'r999@example.com');
  // The retry, for the 100 refused, in the same session.
  c.send('MAIL FROM:<a@example.com>\r\n' + rcpts(1000, 1100) + 'DATA\r\n');
  const again = await replies(c, 102);
  assert.ok(again.slice(0, 101).every((r) => r.code === 250));
  assert.equal(again[101]!.code, 354);
  c.send('Subject: rest\r\n\r\nx\r\n.\r\n');
  assert.equal((await c.reply()).code, 250);
  assert.deepEqual(rec.messages[1]!.rcptTos, Array.from({ length: 100 }, (_, i) => `r${1000 + i}@example.com`));
  assert.equal((await c.cmd('QUIT')).code, 221);
  c.close();
});

test('past the overshoot limit each excess RCPT counts toward maxErrors', async () => {
  const rec = new Recorder();
  await using server = await startServer(rec, { maxRecipients: 2, recipientOvershootLimit: 3, maxErrors: 2 });
  const c = await greeted(server.port);
  c.send('MAIL FROM:<a@example.com>\r\n' + rcpts(0, 10));
  const got = await replies(c, 9);
  // MAIL, 2 accepted, 3 free 452s, then two counted ones: the second reaches maxErrors.
  assert.deepEqual(got.map((r) => r.code), [250, 250, 250, 452, 452, 452, 452, 452, 421]);
  assert.equal(got[8]!.text, '421 4.7.0 Too many errors, goodbye');
  await c.waitClosed();
  assert.equal(rec.messages.length, 0);
});

test('the overshoot is counted per transaction: RSET starts it over', async () => {
  await using server = await startServer(new Recorder(), { maxRecipients: 1, recipientOvershootLimit: 2, maxErrors: 1 });
  const c = await greeted(server.port);
  for (let round = 0; round < 3; round++) {
    c.send('MAIL FROM:<a@example.com>\r\n' + rcpts(0, 3) + 'RSET\r\n');
    assert.deepEqual((await replies(c, 5)).map((r) => r.code), [250, 250, 452, 452, 250]);
  }
  assert.equal((await c.cmd('NOOP')).code, 250);
  c.close();
});
