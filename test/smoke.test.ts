import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Recorder, greeted, startServer } from './helpers.js';

test('one message end to end over a raw socket', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send('Subject: x\r\n\r\nhello\r\n..dot\r\n.\r\n');
  assert.equal((await c.reply()).code, 250);
  assert.equal((await c.cmd('QUIT')).code, 221);
  await c.waitClosed();
  assert.equal(handler.messages.length, 1);
  assert.equal(handler.messages[0]!.content.toString(), 'Subject: x\r\n\r\nhello\r\n.dot\r\n');
});
