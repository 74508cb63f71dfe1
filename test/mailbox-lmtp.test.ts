/**
 * Mailbox behind LMTP: one Maildir gets one file per message, however many recipients, and every
 * recipient still gets its own reply (RFC 2033 §4.2): all 250 after the one write, or all 451 when
 * it failed. The attack: a thousand recipients of a 4 MiB message must not mean a thousand writes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Mailbox } from '../src/handlers/mailbox.js';
import { greet, sendLarge, startMode, withTempDir } from './lmtp-util.js';

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

test('1000 LMTP recipients of a 4 MiB message: one file in new/, 1000 replies of 250, nothing in tmp/', () =>
  withTempDir(async (dir) => {
    await using server = await startMode('LMTP', new Mailbox(dir), { logger: quiet });
    const { c } = await greet(server.port);
    try {
      const rcpts = Array.from({ length: 1000 }, (_, i) => `user${i}@example.com`);
      c.send(`MAIL FROM:<a@example.com>\r\n${rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join('')}DATA\r\n`);
      for (let i = 0; i < 1001; i++) assert.equal((await c.reply()).code, 250);
      assert.equal((await c.reply()).code, 354);
      const body = Buffer.concat([Buffer.from('Subject: big\r\n\r\n'), Buffer.alloc(3 * 1_400_000, 'x\r\n')]);
      await sendLarge(c, Buffer.concat([body, Buffer.from('.\r\n')]));
      for (const rcpt of rcpts) {
        const r = await c.reply(30_000);
        assert.equal(r.code, 250, r.text);
        assert.ok(r.text.includes(`<${rcpt}>`), r.text);
      }
      const files = await readdir(join(dir, 'new'));
      assert.equal(files.length, 1, 'one Maildir, one file');
      assert.deepEqual(await readdir(join(dir, 'tmp')), []);
      const { size } = await stat(join(dir, 'new', files[0]!));
      assert.ok(size > body.length && size < body.length + 64 * 1024, `${size} bytes: the body once, plus the trace headers`);
    } finally {
      c.close();
    }
  }));

test('LMTP into a Maildir that cannot be written: every recipient gets its own 451, and the session goes on', () =>
  withTempDir(async (dir) => {
    const box = new Mailbox(dir);
    await box.init();
    await rm(join(dir, 'new'), { recursive: true });
    await writeFile(join(dir, 'new'), ''); // new/ is a file: the link into it fails
    await using server = await startMode('LMTP', box, { logger: quiet });
    const { c } = await greet(server.port);
    try {
      c.send('MAIL FROM:<a@example.com>\r\nRCPT TO:<p@example.com>\r\nRCPT TO:<q@example.com>\r\nDATA\r\n');
      for (let i = 0; i < 3; i++) assert.equal((await c.reply()).code, 250);
      assert.equal((await c.reply()).code, 354);
      c.send('Subject: s\r\n\r\nb\r\n.\r\n');
      const replies = [await c.reply(), await c.reply()];
      assert.deepEqual(replies.map((r) => r.code), [451, 451]);
      assert.match(replies[0]!.text, /<p@example\.com>/);
      assert.match(replies[1]!.text, /<q@example\.com>/);
      assert.deepEqual(await readdir(join(dir, 'tmp')), [], 'the failed write left nothing behind');
      assert.equal((await c.cmd('NOOP')).code, 250);
    } finally {
      c.close();
    }
  }));
