import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RawClient, Recorder, startServer } from './helpers.js';

test('an HTTP request sent to the SMTP port ends the session at once: its body never runs', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler);
  const c = await RawClient.connect(server.port);
  assert.equal((await c.reply()).code, 220);
  c.send(
    'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 80\r\n\r\n' +
      'EHLO x\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\nevil\r\n.\r\n',
  );
  const r = await c.reply();
  assert.equal(r.code, 421);
  await c.waitClosed();
  assert.equal(handler.messages.length, 0);
});

test('forbiddenCommands can be changed', async () => {
  await using server = await startServer(new Recorder(), { forbiddenCommands: ['XYZZY'] });
  const c = await RawClient.connect(server.port);
  await c.reply();
  assert.equal((await c.cmd('GET /')).code, 500); // now merely unknown
  assert.equal((await c.cmd('XYZZY')).code, 421);
  await c.waitClosed();
});
