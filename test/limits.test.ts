/**
 * Attacks on every limit of the SMTP class (DESIGN.md §3 "Limits"): line length, idle timeout,
 * unrecognized commands, errors, per-command call limits, garbage bytes, message size, and a
 * client that never reads its replies. Each attack is followed by a check that the server still
 * serves (a fresh connection delivers a message).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { RawClient, Recorder, startServer } from './helpers.js';
import type { Envelope, MailOptions, Session } from '../src/session.js';
import { Rng } from './rng.js';
import { deliverOne, replies, repliesUntilClose, sleep, startRawServer } from './attack-util.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

async function open(port: number, ehlo: string | null = 'EHLO client.example'): Promise<RawClient> {
  const c = await RawClient.connect(port);
  assert.equal((await c.reply()).code, 220);
  if (ehlo !== null) assert.equal((await c.cmd(ehlo)).code, 250);
  return c;
}

/** A command line of exactly `total` octets, CRLF included: `head` padded with `pad`. */
function lineOf(total: number, head: string, pad = 'x'): string {
  const n = total - 2 - head.length;
  assert.ok(n >= 0);
  return head + pad.repeat(n);
}

function is5xx(code: number): boolean {
  return code >= 500 && code <= 599;
}

// ---- command line length ------------------------------------------------------------------

test('a 512-octet command line is fine; 513 gets 500 and the session goes on', async () => {
  await using server = await startServer(new Recorder());
  const c = await open(server.port);
  const ok = lineOf(512, 'NOOP ');
  assert.equal(Buffer.byteLength(ok) + 2, 512);
  assert.equal((await c.cmd(ok)).code, 250);
  const long = await c.cmd(lineOf(513, 'NOOP '));
  assert.equal(long.text, '500 5.5.2 Error: command line too long');
  assert.equal((await c.cmd('NOOP')).code, 250);
  // RCPT has no allowance: 512 is parsed, 513 is too long.
  assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
  assert.equal((await c.cmd(lineOf(513, 'RCPT TO:<b@example.com> X='))).text, '500 5.5.2 Error: command line too long');
  assert.notEqual((await c.cmd(lineOf(512, 'RCPT TO:<b@example.com> X='))).text, '500 5.5.2 Error: command line too long');
  // Far over the limit (a few KiB, still under one read) is the same 500, once.
  c.line(lineOf(5000, 'NOOP '));
  assert.equal((await c.reply()).text, '500 5.5.2 Error: command line too long');
  assert.equal((await c.cmd('NOOP')).code, 250);
  assert.ok(await c.noReplyWithin(50));
  c.close();
});

test('MAIL gets +26 octets (SIZE), and +10 more with enableSMTPUTF8', async () => {
  for (const [utf8, limit] of [
    [false, 538],
    [true, 548],
  ] as const) {
    await using server = await startServer(new Recorder(), { enableSMTPUTF8: utf8, acceptUnknownParameters: true });
    const c = await open(server.port);
    const head = 'MAIL FROM:<a@example.com> SIZE=100 X-PAD=';
    assert.equal((await c.cmd(lineOf(limit, head))).code, 250, `MAIL of ${limit} octets, SMTPUTF8 ${utf8}`);
    assert.equal((await c.cmd('RSET')).code, 250);
    assert.equal((await c.cmd(lineOf(limit + 1, head))).text, '500 5.5.2 Error: command line too long', `MAIL of ${limit + 1}`);
    // Other verbs keep 512.
    assert.equal((await c.cmd(lineOf(513, 'NOOP '))).text, '500 5.5.2 Error: command line too long');
    assert.equal((await c.cmd('NOOP')).code, 250);
    c.close();
  }
});

test('commandSizeLimit option moves the limit', async () => {
  await using server = await startServer(new Recorder(), { commandSizeLimit: 100 });
  const c = await open(server.port);
  assert.equal((await c.cmd(lineOf(100, 'NOOP '))).code, 250);
  assert.equal((await c.cmd(lineOf(101, 'NOOP '))).code, 500);
  assert.equal((await c.cmd('NOOP')).code, 250);
  c.close();
});

test('a 1 MiB line without LF: one 500 once its LF comes, and the connection survives', async () => {
  const rec = new Recorder();
  await using server = await startServer(rec);
  const c = await open(server.port);
  const mib = Buffer.alloc(1024 * 1024, 0x41);
  await new Promise<void>((resolve) => c.socket.write(mib, () => resolve()));
  assert.ok(await c.noReplyWithin(150), 'a reply came before the line ended');
  assert.equal(c.closed, false);
  c.send('\r\nNOOP\r\n');
  assert.deepEqual(
    (await replies(c, 2)).map((r) => r.text),
    ['500 5.5.2 Error: command line too long', '250 2.0.0 OK'],
  );
  assert.ok(await c.noReplyWithin(50), 'more than one reply for the long line');
  // A 1 MiB line ending with a bare LF is the same single 500.
  c.send(Buffer.concat([mib, b('\nNOOP\r\n')]));
  assert.deepEqual(
    (await replies(c, 2)).map((r) => r.code),
    [500, 250],
  );
  c.close();
  await deliverOne(server.port, rec);
});

// ---- idle timeout --------------------------------------------------------------------------

test('idle timeout: 421 and close', async () => {
  await using server = await startServer(new Recorder(), { timeout: 300 });
  const c = await open(server.port);
  const t0 = Date.now();
  const r = await c.reply(3000);
  const waited = Date.now() - t0;
  assert.equal(r.text, '421 4.4.2 Error: timeout exceeded');
  assert.ok(waited >= 290 && waited < 2000, `timed out after ${waited} ms`);
  await c.waitClosed(2000);
});

test('idle timeout: a client that stalls mid-body gets 421, nothing is delivered', async () => {
  const rec = new Recorder();
  await using server = await startServer(rec, { timeout: 300 });
  const c = await open(server.port);
  assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send('Subject: half\r\n\r\nhalf a bo');
  assert.equal((await c.reply(3000)).code, 421);
  await c.waitClosed(2000);
  assert.equal(rec.messages.length, 0);
});

class SlowMail extends Recorder {
  constructor(private readonly ms: number) {
    super();
  }
  async handleMAIL(_s: unknown, _ss: Session, envelope: Envelope, address: string, _o: MailOptions): Promise<string> {
    await sleep(this.ms);
    envelope.mailFrom = address;
    return '250 OK';
  }
}

test('idle timeout does not fire while a hook is pending longer than the timeout', async () => {
  await using server = await startServer(new SlowMail(800), { timeout: 300 });
  const c = await open(server.port);
  const t0 = Date.now();
  const r = await c.cmd('MAIL FROM:<slow@example.com>');
  assert.equal(r.code, 250, `got ${r.text} after ${Date.now() - t0} ms`);
  assert.ok(Date.now() - t0 >= 700);
  // The clock starts again once the hook is done.
  const t1 = Date.now();
  assert.equal((await c.reply(3000)).code, 421);
  assert.ok(Date.now() - t1 >= 200, 'the timeout fired too early after the hook');
  await c.waitClosed(2000);
});

// ---- unrecognized commands, errors, call limits --------------------------------------------

test('4 unrecognized commands are answered 500; the 5th in a row gets 421 and a close', async () => {
  const rec = new Recorder();
  await using server = await startServer(rec);
  const a = await open(server.port);
  for (let i = 0; i < 4; i++) assert.equal((await a.cmd(`XYZZY${i}`)).text, `500 5.5.1 Error: command "XYZZY${i}" not recognized`);
  assert.equal((await a.cmd('NOOP')).code, 250);
  a.close();

  const c = await open(server.port);
  c.send('BOGUS1\r\nBOGUS2\r\nBOGUS3\r\nBOGUS4\r\nBOGUS5\r\nNOOP\r\nMAIL FROM:<a@example.com>\r\n');
  const got = await repliesUntilClose(c, 20);
  assert.deepEqual(
    got.map((r) => r.code),
    [500, 500, 500, 500, 421],
  );
  assert.equal(got[4]!.text, '421 4.7.0 Too many unrecognized commands, goodbye');
  await deliverOne(server.port, rec);
});

test('maxUnrecognizedCommands option: 2', async () => {
  await using server = await startServer(new Recorder(), { maxUnrecognizedCommands: 2 });
  const c = await open(server.port);
  assert.equal((await c.cmd('FOO')).code, 500);
  c.line('BAR');
  const got = await repliesUntilClose(c, 5);
  assert.deepEqual(
    got.map((r) => r.code),
    [421],
  );
});

test('maxErrors: 3 failed commands, then 421 and a close; nothing after is run', async () => {
  // Postfix's hard error limit: the failing command gets its own reply, then 421 and a close.
  const spy = new Recorder();
  await using server = await startServer(spy, { maxErrors: 3 });
  const c = await open(server.port, null);
  c.send('MAIL FROM:<a@example.com>\r\nMAIL FROM:<a@example.com>\r\nMAIL FROM:<a@example.com>\r\nMAIL FROM:<a@example.com>\r\nEHLO x\r\n');
  const got = await repliesUntilClose(c, 20);
  assert.deepEqual(
    got.map((r) => r.code),
    [503, 503, 503, 421],
  );
  assert.equal(got[3]!.text, '421 4.7.0 Too many errors, goodbye');
  await deliverOne(server.port, spy);
});

test('commandCallLimit: true: the 21st NOOP gets 421 and a close', async () => {
  await using server = await startServer(new Recorder(), { commandCallLimit: true });
  const c = await open(server.port);
  let wire = '';
  for (let i = 0; i < 25; i++) wire += i % 2 ? 'NOOP\r\n' : 'noop\r\n';
  c.send(wire);
  const got = await repliesUntilClose(c, 40);
  assert.equal(got.length, 21);
  assert.ok(got.slice(0, 20).every((r) => r.code === 250));
  assert.equal(got[20]!.text, '421 4.7.0 NOOP sent too many times');
});

test('commandCallLimit as a number: 3 calls per command', async () => {
  await using server = await startServer(new Recorder(), { commandCallLimit: 3 });
  const c = await open(server.port); // EHLO: 1 of 3
  for (let i = 0; i < 3; i++) assert.equal((await c.cmd('NOOP')).code, 250);
  for (let i = 0; i < 3; i++) assert.equal((await c.cmd('HELP')).code, 214); // its own budget
  assert.equal((await c.cmd('EHLO again.example')).code, 250); // 2 of 3
  assert.equal((await c.cmd('EHLO again.example')).code, 250); // 3 of 3
  c.line('NOOP');
  const got = await repliesUntilClose(c, 5);
  assert.deepEqual(
    got.map((r) => r.text),
    ['421 4.7.0 NOOP sent too many times'],
  );
});

test("commandCallLimit as a map: {'NOOP': 2, '*': 5}", async () => {
  await using server = await startServer(new Recorder(), { commandCallLimit: { NOOP: 2, '*': 5 } });
  const a = await open(server.port);
  assert.equal((await a.cmd('NOOP')).code, 250);
  assert.equal((await a.cmd('NOOP')).code, 250);
  a.line('NOOP');
  assert.deepEqual(
    (await repliesUntilClose(a, 5)).map((r) => r.text),
    ['421 4.7.0 NOOP sent too many times'],
  );
  const c = await open(server.port);
  for (let i = 0; i < 5; i++) assert.equal((await c.cmd('HELP')).code, 214);
  c.line('HELP');
  assert.deepEqual(
    (await repliesUntilClose(c, 5)).map((r) => r.text),
    ['421 4.7.0 HELP sent too many times'],
  );
});

test('maxRecipients: past it RCPT gets 452, the message still goes to the others', async () => {
  const rec = new Recorder();
  await using server = await startServer(rec, { maxRecipients: 3 });
  const c = await open(server.port);
  assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
  let wire = '';
  for (let i = 0; i < 5; i++) wire += `RCPT TO:<r${i}@example.com>\r\n`;
  c.send(wire);
  assert.deepEqual(
    (await replies(c, 5)).map((r) => r.code),
    [250, 250, 250, 452, 452],
  );
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send('x\r\n.\r\n');
  assert.equal((await c.reply()).code, 250);
  assert.deepEqual(rec.messages[0]!.rcptTos, ['r0@example.com', 'r1@example.com', 'r2@example.com']);
  c.close();
});

// ---- garbage -------------------------------------------------------------------------------

function garbageCases(): Array<[string, Buffer]> {
  const rng = new Rng(0xbad);
  const random = (n: number): Buffer => {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) {
      let x = rng.int(0, 255);
      if (x === 0x0a) x = 0x0b; // one line only
      out[i] = x;
    }
    return out;
  };
  return [
    ['NUL in the verb', b('NO\0OP\r\n')],
    ['NUL in an argument', b('NOOP a\0b\r\n')],
    ['NUL in an address', b('MAIL FROM:<a\0b@example.com>\r\n')],
    ['a lone NUL', b('\0\r\n')],
    ['bare CR in the verb', b('NO\rOP\r\n')],
    ['bare CR before CRLF', b('NOOP\r\r\n')],
    ['bare CR in an address', b('MAIL FROM:<a\r@example.com>\r\n')],
    ['DEL', b('NOOP\x7f\r\n')],
    ['random binary 1', random(40)],
    ['random binary 2', random(300)],
    ['random binary 3', Buffer.concat([b('MAIL FROM:<'), random(60), b('>')])],
    ['0xFF bytes', b('\xff\xff\xff\xff\r\n')],
    ['0xFF in the verb', b('NO\xffOP\r\n')],
    ['0xFF in an address', b('MAIL FROM:<\xff@example.com>\r\n')],
    ['invalid UTF-8 (C3 28)', b('NOOP \xc3\x28\r\n')],
    ['overlong UTF-8 slash', b('MAIL FROM:<a\xc0\xafb@example.com>\r\n')],
    ['UTF-8 surrogate', b('MAIL FROM:<\xed\xa0\x80@example.com>\r\n')],
    ['truncated UTF-8', b('RCPT TO:<\xe2\x82@example.com>\r\n')],
    ['invalid UTF-8 in EHLO', b('EHLO \xfe\xfe\r\n')],
    ['empty line', b('\r\n')],
    ['only spaces', b('    \r\n')],
  ].map(([name, bytes]) => {
    const buf = bytes as Buffer;
    // Every case ends with exactly one CRLF.
    const body = buf.subarray(buf.length - 2).equals(b('\r\n')) ? buf : Buffer.concat([buf, b('\r\n')]);
    return [name as string, body];
  });
}

for (const utf8 of [false, true]) {
  test(`garbage commands get 5xx, never a crash (enableSMTPUTF8: ${utf8})`, async () => {
    const rec = new Recorder();
    await using server = await startServer(rec, { enableSMTPUTF8: utf8 });
    for (const [name, bytes] of garbageCases()) {
      const c = await open(server.port);
      // A transaction open, so MAIL/RCPT garbage reaches the address parser.
      assert.equal((await c.cmd('MAIL FROM:<ok@example.com>')).code, 250);
      if (bytes.toString('latin1').startsWith('MAIL')) assert.equal((await c.cmd('RSET')).code, 250);
      c.send(bytes);
      const r = await c.reply();
      assert.ok(is5xx(r.code), `${name}: got ${JSON.stringify(r.text)}`);
      // The session goes on, and nothing else was answered.
      const n = await c.cmd('NOOP');
      assert.equal(n.code, 250, `${name}: then NOOP got ${n.text}`);
      c.close();
      await deliverOne(server.port, rec, `after${rec.messages.length}`);
    }
    // Non-ASCII UTF-8 without SMTPUTF8 is refused too; with it, a valid UTF-8 NOOP argument is fine.
    const c = await open(server.port);
    const r = await c.cmd('NOOP é');
    assert.equal(r.code, utf8 ? 250 : 500, r.text);
    c.close();
  });
}

test('a blob of random binary with many line breaks: only 5xx or a final 421, then the server serves', async () => {
  const rec = new Recorder();
  await using server = await startServer(rec);
  const rng = new Rng(31337);
  const blob = Buffer.alloc(64 * 1024);
  for (let i = 0; i < blob.length; i++) blob[i] = rng.next() < 0.02 ? 0x0a : rng.int(0, 255);
  const c = await open(server.port);
  c.send(blob);
  c.send('\r\n');
  const got = await repliesUntilClose(c, 5000);
  assert.ok(got.length > 0);
  for (const r of got.slice(0, -1)) assert.ok(is5xx(r.code), r.text);
  assert.equal(got[got.length - 1]!.code, 421); // maxErrors (20) ends it
  await deliverOne(server.port, rec);
});

test('a bare-LF command gets 500 and is not executed', async () => {
  const rec = new Recorder();
  await using server = await startServer(rec);
  const c = await open(server.port);
  c.send('MAIL FROM:<a@example.com>\n');
  assert.equal((await c.reply()).text, '500 5.5.2 Error: command line must end with <CR><LF>');
  assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 503, 'MAIL was executed');
  c.send('QUIT\n');
  assert.equal((await c.reply()).code, 500);
  c.send('NOOP\nNOOP\r\n');
  assert.deepEqual(
    (await replies(c, 2)).map((r) => r.code),
    [500, 250],
  );
  assert.equal(c.closed, false, 'QUIT with a bare LF was executed');
  assert.ok(await c.noReplyWithin(50));
  c.close();
  await deliverOne(server.port, rec);
});

// ---- message size --------------------------------------------------------------------------

test('dataSizeLimit 1000: a 5000-byte body gets 552, the handler is not called, the session goes on', async () => {
  const rec = new Recorder();
  await using server = await startServer(rec, { dataSizeLimit: 1000 });
  const c = await open(server.port, null);
  const ehlo = await c.cmd('EHLO client.example');
  assert.ok(ehlo.lines.includes('250-SIZE 1000'), ehlo.text);
  // Declared too big: refused at MAIL.
  assert.equal((await c.cmd('MAIL FROM:<a@example.com> SIZE=5000')).code, 552);
  assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send(('z'.repeat(98) + '\r\n').repeat(50) + '.\r\n');
  assert.equal((await c.reply()).text, '552 5.3.4 Error: message too big for system');
  assert.equal(rec.messages.length, 0);
  // The transaction is gone; a new one at exactly the limit is delivered.
  assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 503);
  assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  const exact = ('k'.repeat(98) + '\r\n').repeat(10);
  c.send(exact + '.\r\n');
  assert.equal((await c.reply()).code, 250);
  assert.equal(rec.messages.length, 1);
  assert.equal(rec.messages[0]!.content.toString(), exact);
  c.close();
});

test('dataSizeLimit 0 means no limit: SIZE without a number, a 2 MiB body is delivered', async () => {
  const rec = new Recorder();
  await using server = await startServer(rec, { dataSizeLimit: 0 });
  const c = await open(server.port, null);
  const ehlo = await c.cmd('EHLO client.example');
  assert.ok(ehlo.lines.includes('250-SIZE'), ehlo.text);
  assert.equal((await c.cmd('MAIL FROM:<a@example.com> SIZE=999999999')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  // Lines within dataLineLimit's 1001 octets (RFC 5321 §4.5.3.1.6), so only the size is at stake.
  const body = ('m'.repeat(998) + '\r\n').repeat(2100);
  c.send(body + '.\r\n');
  assert.equal((await c.reply()).code, 250);
  assert.equal(rec.messages[0]!.content.length, body.length);
  c.close();
});

test('an 8 MiB body with a 1 KiB limit is read and dropped; 552 only after the terminator', async () => {
  const rec = new Recorder();
  await using server = await startServer(rec, { dataSizeLimit: 1024 });
  const c = await open(server.port);
  assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  const line = Buffer.from('a'.repeat(998) + '\r\n'); // within dataLineLimit: the size decides
  const chunk = Buffer.concat(Array.from({ length: 64 }, () => line)); // 64 KB
  for (let i = 0; i < 128; i++) {
    await new Promise<void>((resolve) => c.socket.write(chunk, () => resolve()));
    if (i === 1) assert.ok(await c.noReplyWithin(20), 'a reply came in the middle of the body');
  }
  // Everything sent; the server has not answered: it waits for the terminator.
  assert.ok(await c.noReplyWithin(300), 'the 552 came before the terminator');
  assert.equal(c.closed, false);
  c.send('.\r\n');
  assert.equal((await c.reply()).code, 552);
  assert.equal(rec.messages.length, 0);
  assert.ok(await c.noReplyWithin(50));
  c.close();
  await deliverOne(server.port, rec);
});

test('a client that vanishes mid-body delivers nothing and costs nothing', async () => {
  const rec = new Recorder();
  await using server = await startServer(rec);
  for (let i = 0; i < 5; i++) {
    const c = await open(server.port);
    assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    c.send('Subject: gone\r\n\r\nhalf\r\n.'); // even the start of a terminator
    await sleep(10);
    c.close();
  }
  await sleep(50);
  assert.equal(rec.messages.length, 0);
  await deliverOne(server.port, rec);
});

// ---- write backpressure --------------------------------------------------------------------

function rawConnect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1' }, () => resolve(s));
    s.once('error', reject);
  });
}

/** NOOP answered with a 64-line, ~7 KiB reply, so that a few thousand fill every socket buffer. */
const BIG_LINES = 64;
class BigNoop extends Recorder {
  calls = 0;
  handleNOOP(): string {
    this.calls++;
    return Array.from({ length: BIG_LINES }, (_, i) => `250 line ${i} ${'x'.repeat(100)}`).join('\r\n');
  }
}

/**
 * Writes NOOPs without reading the replies until the server side is paused with replies queued
 * and has stopped reading (its bytesRead stands still), or `max` were sent. Returns the count.
 */
async function floodUntilServerStops(sock: net.Socket, srv: () => net.Socket | undefined, max: number, per = 200): Promise<number> {
  const batch = Buffer.from('NOOP\r\n'.repeat(per));
  let sent = 0;
  while (sent < max) {
    if (sock.write(batch)) await sleep(1);
    else await Promise.race([new Promise((resolve) => sock.once('drain', resolve)), sleep(200)]);
    sent += per;
    const s = srv();
    if (s !== undefined && s.isPaused() && s.writableLength > 0) {
      const read = s.bytesRead;
      await sleep(300);
      if (s.bytesRead === read) return sent;
    }
  }
  return sent;
}

test('a client that never reads its replies: the server stops reading it, serves others, and answers every NOOP once when it reads again', async () => {
  const rec = new BigNoop();
  await using server = await startRawServer(rec);
  const abuser = await rawConnect(server.port);
  abuser.on('error', () => {});
  abuser.pause(); // never read (until later)
  const sent = await floodUntilServerStops(abuser, () => server.sockets[0], 20_000);
  const srv = server.sockets[0]!;
  assert.ok(sent < 20_000, `the server never stopped reading (${srv.bytesRead} bytes read, ${srv.writableLength} queued)`);
  // The server stopped reading: while the client sends more, no command is handled, and the
  // server side takes in at most what fills Node's readable buffer.
  const read1 = srv.bytesRead;
  const calls1 = rec.calls;
  const extra = 2000;
  abuser.write('NOOP\r\n'.repeat(extra));
  await sleep(300);
  assert.equal(rec.calls, calls1, 'commands were handled while the replies could not be written');
  const grown = srv.bytesRead - read1;
  assert.ok(grown <= srv.readableHighWaterMark + 65536, `the server read ${grown} more bytes from a client that does not read`);
  assert.ok(srv.isPaused(), 'server side not paused');
  // What it holds is bounded by one read's worth of replies, not by what the client sent.
  assert.ok(srv.writableLength < 16 * 1024 * 1024, `the server holds ${srv.writableLength} bytes of replies`);
  // Meanwhile another client is served normally.
  await deliverOne(server.port, rec);
  // The client reads again: every NOOP gets exactly one reply, in order, and nothing else.
  const want = sent + extra;
  let text = '';
  let replies = 0;
  let greeting = false;
  let lineInReply = 0;
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${replies} of ${want} replies`)), 10_000);
    abuser.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      const parts = text.split('\r\n');
      text = parts.pop()!;
      for (const p of parts) {
        if (!greeting) {
          greeting = p.startsWith('220 ');
          if (!greeting) reject(new Error(`greeting ${p}`));
          continue;
        }
        const last = lineInReply === BIG_LINES - 1;
        const expected = `250${last ? ' ' : '-'}2.0.0 line ${lineInReply} ${'x'.repeat(100)}`;
        if (p !== expected) {
          clearTimeout(timer);
          reject(new Error(`reply ${replies} line ${lineInReply}: ${JSON.stringify(p.slice(0, 40))}`));
          return;
        }
        lineInReply = last ? 0 : lineInReply + 1;
        if (last) replies++;
      }
      if (replies >= want) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  abuser.resume();
  await done;
  await sleep(50);
  assert.equal(replies, want);
  assert.equal(text, '');
  abuser.destroy();
});

test('200k pipelined NOOPs never read: no crash, others are served meanwhile, clean destroy', async () => {
  const rec = new Recorder();
  await using server = await startRawServer(rec);
  const abuser = await rawConnect(server.port);
  abuser.on('error', () => {});
  abuser.pause();
  const all = Buffer.from('NOOP\r\n'.repeat(200_000));
  abuser.write(all);
  await sleep(100);
  await deliverOne(server.port, rec, 'meanwhile');
  const srv = server.sockets[0]!;
  assert.equal(srv.destroyed, false);
  const closed = new Promise<void>((resolve) => (srv.destroyed ? resolve() : srv.once('close', () => resolve())));
  abuser.destroy();
  await Promise.race([closed, sleep(3000).then(() => assert.fail('the server side never closed'))]);
  await deliverOne(server.port, rec, 'after');
});

test('a client that never reads can be destroyed cleanly while the server is blocked writing to it', async () => {
  const rec = new BigNoop();
  await using server = await startRawServer(rec);
  const abuser = await rawConnect(server.port);
  abuser.on('error', () => {});
  abuser.pause();
  const sent = await floodUntilServerStops(abuser, () => server.sockets[0], 20_000);
  assert.ok(sent < 20_000, 'the server never blocked');
  const srv = server.sockets[0]!;
  assert.ok(srv.writableLength > 0, 'the server is not blocked on its writes');
  // 6 MB more: nothing of it is handled, and the server side reads at most a buffer's worth.
  const read1 = srv.bytesRead;
  const calls1 = rec.calls;
  abuser.write('NOOP\r\n'.repeat(1_000_000));
  await sleep(300);
  assert.equal(rec.calls, calls1);
  assert.ok(srv.bytesRead - read1 <= srv.readableHighWaterMark + 65536, `read ${srv.bytesRead - read1} more`);
  const closed = new Promise<void>((resolve) => (srv.destroyed ? resolve() : srv.once('close', () => resolve())));
  abuser.destroy();
  await Promise.race([closed, sleep(3000).then(() => assert.fail('the server side never closed'))]);
  assert.ok(srv.destroyed);
  await deliverOne(server.port, rec);
});
