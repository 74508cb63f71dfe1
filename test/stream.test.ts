/** The streaming body API (handleDATAStream): backpressure, size limit, early answers. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Readable } from 'node:stream';
import type { Handler } from '../src/handler.js';
import { greeted, startServer } from './helpers.js';

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

async function openTransaction(port: number) {
  const c = await greeted(port);
  assert.equal((await c.cmd('MAIL FROM:<a@b.org>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<c@d.org>')).code, 250);
  return c;
}

test('the body arrives as a stream, dot-unstuffed, and the reply waits for the handler', async () => {
  const got: Buffer[] = [];
  const handler: Handler = {
    async handleDATAStream(_s, _session, envelope, stream) {
      got.push(await readAll(stream));
      assert.equal(envelope.content, null);
      return '250 2.0.0 streamed';
    },
  };
  await using server = await startServer(handler);
  const c = await openTransaction(server.port);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send('Subject: s\r\n\r\nline\r\n..dot\r\n\n.\n bare\r\n.\r\n');
  const r = await c.reply();
  assert.equal(r.text, '250 2.0.0 streamed');
  assert.equal(got[0]!.toString(), 'Subject: s\r\n\r\nline\r\n.dot\r\n\n.\n bare\r\n');
  c.close();
});

test('a slow consumer holds the socket back (backpressure) and still gets every byte', async () => {
  let received = 0;
  const handler: Handler = {
    async handleDATAStream(_s, _session, _envelope, stream) {
      for await (const part of stream) {
        received += (part as Buffer).length;
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      return '250 OK';
    },
  };
  await using server = await startServer(handler);
  const c = await openTransaction(server.port);
  assert.equal((await c.cmd('DATA')).code, 354);
  const line = 'x'.repeat(998) + '\r\n';
  const total = 4 * 1024 * 1024;
  const body = line.repeat(Math.floor(total / line.length));
  c.send(body + '.\r\n');
  assert.equal((await c.reply(30_000)).code, 250);
  assert.equal(received, body.length);
  c.close();
});

test('past the size limit the stream errors and the client gets 552 whatever the hook says', async () => {
  let streamError: unknown = null;
  const handler: Handler = {
    async handleDATAStream(_s, _session, _envelope, stream) {
      try {
        await readAll(stream);
      } catch (error) {
        streamError = error;
      }
      return '250 OK';
    },
  };
  await using server = await startServer(handler, { dataSizeLimit: 1000 });
  const c = await openTransaction(server.port);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send('y'.repeat(5000) + '\r\n.\r\n');
  assert.equal((await c.reply()).code, 552);
  assert.equal((streamError as { code?: string } | null)?.code, 'ESIZELIMIT');
  assert.equal((await c.cmd('NOOP')).code, 250);
  c.close();
});

test('a handler that answers without reading does not hang the transaction', async () => {
  const handler: Handler = {
    handleDATAStream() {
      return '250 2.0.0 did not read';
    },
  };
  await using server = await startServer(handler);
  const c = await openTransaction(server.port);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send(('z'.repeat(998) + '\r\n').repeat(2000) + '.\r\n'); // ~2 MB: more than any buffer
  assert.equal((await c.reply(20_000)).text, '250 2.0.0 did not read');
  assert.equal((await c.cmd('NOOP')).code, 250);
  c.close();
});

test('a handler that answers before the body ends never sees it end: the rest was dropped', async () => {
  let stream: Readable | null = null;
  const handler: Handler = {
    handleDATAStream(_server, _session, _envelope, body) {
      stream = body;
      return '250 2.0.0 answered early';
    },
  };
  await using server = await startServer(handler);
  const c = await openTransaction(server.port);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send('Subject: early\r\n\r\n' + ('y'.repeat(998) + '\r\n').repeat(500) + '.\r\n');
  assert.equal((await c.reply(20_000)).text, '250 2.0.0 answered early');
  assert.equal((await c.cmd('NOOP')).code, 250);
  const body = stream as Readable | null;
  assert.ok(body !== null);
  // Whatever was read before the answer is there; no 'end' says the body was whole.
  let ended = false;
  body.on('end', () => (ended = true));
  body.resume();
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(ended, false);
  assert.equal(body.readableEnded, false);
  c.close();
});

test('a handler that neither reads nor answers is bounded by the idle timeout', async () => {
  const handler: Handler = {
    handleDATAStream() {
      return new Promise<string>(() => {});
    },
  };
  await using server = await startServer(handler, { timeout: 300 });
  const c = await openTransaction(server.port);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send(('w'.repeat(998) + '\r\n').repeat(4000)); // fills the stream, then the socket pauses
  const r = await c.reply(10_000);
  assert.equal(r.code, 421);
  await c.waitClosed();
});

test('BDAT chunks stream too, and the reply comes after LAST', async () => {
  const got: string[] = [];
  const handler: Handler = {
    async handleDATAStream(_s, _session, _envelope, stream) {
      got.push((await readAll(stream)).toString());
      return '250 OK';
    },
  };
  await using server = await startServer(handler);
  const c = await openTransaction(server.port);
  c.send('BDAT 5\r\nab\r\ncBDAT 4 LAST\r\n.\r\nx');
  assert.equal((await c.reply()).code, 250);
  assert.equal((await c.reply()).code, 250);
  assert.deepEqual(got, ['ab\r\nc.\r\nx']);
  c.close();
});

test('a client that vanishes mid-body makes the stream error; nothing is answered 250', async () => {
  let outcome = 'pending';
  const handler: Handler = {
    async handleDATAStream(_s, _session, _envelope, stream) {
      try {
        await readAll(stream);
        outcome = 'ended';
      } catch {
        outcome = 'errored';
      }
      return '250 OK';
    },
  };
  await using server = await startServer(handler);
  const c = await openTransaction(server.port);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send('partial body\r\n');
  await new Promise((resolve) => setTimeout(resolve, 50));
  c.close();
  for (let i = 0; i < 50 && outcome === 'pending'; i++) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(outcome, 'errored');
});
