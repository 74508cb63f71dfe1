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

test('a client trickling its body past dataTimeout gets 421 and is closed', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler, { dataTimeout: 400 });
  const c = await RawClient.connect(server.port);
  await c.reply();
  await c.cmd('EHLO x');
  await c.cmd('MAIL FROM:<a@b.org>');
  await c.cmd('RCPT TO:<c@d.org>');
  assert.equal((await c.cmd('DATA')).code, 354);
  const started = Date.now();
  let closed = false;
  c.socket.once('close', () => (closed = true));
  // One byte every 50 ms: never idle long enough for the idle timeout.
  while (!closed && Date.now() - started < 3000) {
    c.send('x');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.equal((await c.reply()).code, 421);
  await c.waitClosed();
  assert.ok(Date.now() - started < 2500);
  assert.equal(handler.messages.length, 0);
});

test('connections past maxConnectionsPerClient get 421; loopback is exempt unless told otherwise', async () => {
  await using server = await startServer(new Recorder(), { maxConnectionsPerClient: 2, connectionLimitExempt: [] });
  const a = await RawClient.connect(server.port);
  const b = await RawClient.connect(server.port);
  assert.equal((await a.reply()).code, 220);
  assert.equal((await b.reply()).code, 220);
  const c = await RawClient.connect(server.port);
  assert.equal((await c.reply()).code, 421);
  await c.waitClosed();
  a.close();
  await a.waitClosed();
  await new Promise((resolve) => setTimeout(resolve, 50));
  const d = await RawClient.connect(server.port);
  assert.equal((await d.reply()).code, 220);
  b.close();
  d.close();

  await using exempt = await startServer(new Recorder(), { maxConnectionsPerClient: 1 });
  const e = await RawClient.connect(exempt.port);
  const f = await RawClient.connect(exempt.port);
  assert.equal((await e.reply()).code, 220);
  assert.equal((await f.reply()).code, 220);
  e.close();
  f.close();
});

test('connections past maxConnections get 421', async () => {
  await using server = await startServer(new Recorder(), { maxConnections: 2 });
  // The controller's own readiness probe has come and gone.
  await new Promise((resolve) => setTimeout(resolve, 50));
  const a = await RawClient.connect(server.port);
  const b = await RawClient.connect(server.port);
  assert.equal((await a.reply()).code, 220);
  assert.equal((await b.reply()).code, 220);
  const c = await RawClient.connect(server.port);
  assert.equal((await c.reply()).code, 421);
  a.close();
  b.close();
  c.close();
});
