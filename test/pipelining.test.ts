/**
 * PIPELINING (RFC 2920): many commands in one write are answered in order, one reply each,
 * exactly once; input that arrives while a hook is pending waits its turn.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RawClient, Recorder, startServer } from './helpers.js';
import type { Envelope, MailOptions, RcptOptions, Session } from '../src/session.js';
import { Rng } from './rng.js';
import { Spy, randomChunks, replies, repliesUntilClose, sendPieces, sleep } from './attack-util.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

async function connected(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  c.socket.setNoDelay(true);
  assert.equal((await c.reply()).code, 220);
  return c;
}

function transaction(i: number): string {
  return (
    `MAIL FROM:<s${i}@example.com>\r\n` +
    `RCPT TO:<r${i}a@example.com>\r\n` +
    `RCPT TO:<r${i}b@example.com>\r\n` +
    'DATA\r\n' +
    `Subject: ${i}\r\n\r\nbody ${i}\r\n..dotted\r\n.\r\n`
  );
}
const TX_CODES = [250, 250, 250, 354, 250];

test('three whole transactions, EHLO to QUIT, in one write', async () => {
  const rec = new Recorder();
  await using server = await startServer(rec);
  const c = await connected(server.port);
  c.send('EHLO client.example\r\n' + transaction(1) + transaction(2) + transaction(3) + 'QUIT\r\n');
  const got = await repliesUntilClose(c, 50);
  assert.deepEqual(
    got.map((r) => r.code),
    [250, ...TX_CODES, ...TX_CODES, ...TX_CODES, 221],
  );
  assert.equal(rec.messages.length, 3);
  for (let i = 1; i <= 3; i++) {
    const m = rec.messages[i - 1]!;
    assert.equal(m.mailFrom, `s${i}@example.com`);
    assert.deepEqual(m.rcptTos, [`r${i}a@example.com`, `r${i}b@example.com`]);
    assert.equal(m.content.toString(), `Subject: ${i}\r\n\r\nbody ${i}\r\n.dotted\r\n`);
  }
});

test('the same flood cut into random pieces (1-byte pieces included) gets the same replies', async () => {
  const rng = new Rng(42);
  const wire = b('EHLO client.example\r\n' + transaction(1) + 'NOOP\r\nRSET\r\n' + transaction(2) + 'QUIT\r\n');
  for (let round = 0; round < 4; round++) {
    const rec = new Recorder();
    await using server = await startServer(rec);
    const c = await connected(server.port);
    await sendPieces(c, randomChunks(rng, wire, 40), round % 2);
    const got = await repliesUntilClose(c, 50);
    assert.deepEqual(
      got.map((r) => r.code),
      [250, ...TX_CODES, 250, 250, ...TX_CODES, 221],
      `round ${round}`,
    );
    assert.equal(rec.messages.length, 2);
    assert.equal(rec.messages[1]!.content.toString(), 'Subject: 2\r\n\r\nbody 2\r\n.dotted\r\n');
  }
});

test("a body's first bytes in the same write as DATA", async () => {
  const rec = new Recorder();
  await using server = await startServer(rec);
  const c = await connected(server.port);
  c.send('EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nSubject: early\r\n\r\nfirst');
  assert.deepEqual(
    (await replies(c, 4)).map((r) => r.code),
    [250, 250, 250, 354],
  );
  assert.ok(await c.noReplyWithin(50), 'nothing may be answered before the terminator');
  c.send(' part\r\n.\r\n');
  assert.equal((await c.reply()).code, 250);
  assert.equal(rec.messages[0]!.content.toString(), 'Subject: early\r\n\r\nfirst part\r\n');
  // A body that starts with a stuffed dot in the DATA packet, and a whole body in the DATA packet.
  c.send('MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n..x\r\n.\r\n');
  assert.deepEqual(
    (await replies(c, 4)).map((r) => r.code),
    [250, 250, 354, 250],
  );
  assert.equal(rec.messages[1]!.content.toString(), '.x\r\n');
  // An empty body: DATA and the terminator in one write.
  c.send('MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n.\r\n');
  assert.deepEqual(
    (await replies(c, 4)).map((r) => r.code),
    [250, 250, 354, 250],
  );
  assert.equal(rec.messages[2]!.content.length, 0);
  c.line('QUIT');
  assert.deepEqual(
    (await repliesUntilClose(c, 5)).map((r) => r.code),
    [221],
  );
});

test('commands after the terminator in the same write run after the message, in order', async () => {
  const spy = new Spy();
  await using server = await startServer(spy);
  const c = await connected(server.port);
  assert.equal((await c.cmd('EHLO c.example')).code, 250);
  assert.equal((await c.cmd('MAIL FROM:<one@example.com>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<r@example.com>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send('body one\r\n.\r\nNOOP a\r\nMAIL FROM:<two@example.com>\r\nRCPT TO:<r@example.com>\r\nDATA\r\nbody two\r\n.\r\nNOOP b\r\nQUIT\r\n');
  const got = await repliesUntilClose(c, 20);
  assert.deepEqual(
    got.map((r) => r.text),
    [
      '250 2.6.0 OK',
      '250 2.0.0 noop-mark a',
      '250 2.1.0 OK',
      '250 2.1.5 OK',
      '354 End data with <CR><LF>.<CR><LF>',
      '250 2.6.0 OK',
      '250 2.0.0 noop-mark b',
      '221 2.0.0 Bye',
    ],
  );
  assert.deepEqual(
    spy.messages.map((m) => m.content.toString()),
    ['body one\r\n', 'body two\r\n'],
  );
  // The hooks ran in wire order.
  assert.deepEqual(spy.events, [
    'MAIL one@example.com',
    'RCPT r@example.com',
    'DATA one@example.com',
    'NOOP a',
    'MAIL two@example.com',
    'RCPT r@example.com',
    'DATA two@example.com',
    'NOOP b',
  ]);
});

/** A handler whose hooks take time, logging when each starts and ends. */
class Slow extends Recorder {
  log: string[] = [];
  pending = 0;
  maxPending = 0;
  constructor(private readonly delay: (verb: string) => number) {
    super();
  }
  private async slow(what: string, reply: string): Promise<string> {
    this.pending++;
    this.maxPending = Math.max(this.maxPending, this.pending);
    this.log.push(`start ${what}`);
    await sleep(this.delay(what.split(' ')[0]!));
    this.log.push(`end ${what}`);
    this.pending--;
    return reply;
  }
  async handleMAIL(_s: unknown, _ss: Session, envelope: Envelope, address: string, _o: MailOptions): Promise<string> {
    const r = await this.slow(`MAIL ${address}`, '250 OK');
    envelope.mailFrom = address;
    return r;
  }
  async handleRCPT(_s: unknown, _ss: Session, envelope: Envelope, address: string, _o: RcptOptions): Promise<string> {
    const r = await this.slow(`RCPT ${address}`, '250 OK');
    envelope.rcptTos.push(address);
    return r;
  }
  async handleNOOP(_s: unknown, _ss: Session, _e: Envelope, arg: string): Promise<string> {
    return this.slow(`NOOP ${arg}`, `250 2.0.0 noop ${arg}`);
  }
}

test('input arriving while handleMAIL is pending (50 ms) waits; replies in order, exactly once', async () => {
  const slow = new Slow((verb) => (verb === 'MAIL' ? 50 : 0));
  await using server = await startServer(slow);
  const c = await connected(server.port);
  assert.equal((await c.cmd('EHLO c.example')).code, 250);
  c.line('MAIL FROM:<first@example.com>');
  await sleep(10); // the hook is now pending
  let flood = '';
  // A bare 250 from handleMAIL/handleRCPT gets their enhanced codes (RFC 3463: 2.1.0, 2.1.5).
  const expected: string[] = ['250 2.1.0 OK'];
  for (let i = 0; i < 5; i++) {
    flood += `RCPT TO:<r${i}@example.com>\r\n`;
    expected.push('250 2.1.5 OK');
  }
  flood += 'DATA\r\nhello\r\n.\r\n';
  expected.push('354 End data with <CR><LF>.<CR><LF>', '250 2.6.0 OK');
  for (let i = 0; i < 50; i++) {
    flood += `NOOP ${i}\r\n`;
    expected.push(`250 2.0.0 noop ${i}`);
  }
  flood += 'MAIL FROM:<second@example.com>\r\nRCPT TO:<x@example.com>\r\nRSET\r\nQUIT\r\n';
  expected.push('250 2.1.0 OK', '250 2.1.5 OK', '250 2.0.0 OK', '221 2.0.0 Bye');
  c.send(flood);
  const got = await repliesUntilClose(c, 200);
  assert.deepEqual(
    got.map((r) => r.text),
    expected,
  );
  assert.equal(slow.maxPending, 1, 'two hooks ran at once');
  // RCPT did not start before MAIL's hook had finished.
  assert.deepEqual(slow.log.slice(0, 3), ['start MAIL first@example.com', 'end MAIL first@example.com', 'start RCPT r0@example.com']);
  assert.equal(slow.messages.length, 1);
  assert.deepEqual(slow.messages[0]!.rcptTos, ['r0@example.com', 'r1@example.com', 'r2@example.com', 'r3@example.com', 'r4@example.com']);
});

test('200 NOOPs with random async delays in one write: 200 replies, in order', async () => {
  const rng = new Rng(7);
  const slow = new Slow(() => (rng.next() < 0.2 ? rng.int(1, 4) : 0));
  await using server = await startServer(slow);
  const c = await connected(server.port);
  let wire = 'EHLO c.example\r\n';
  for (let i = 0; i < 200; i++) wire += `NOOP ${i}\r\n`;
  wire += 'QUIT\r\n';
  c.send(wire);
  const got = await repliesUntilClose(c, 300, 10_000);
  assert.equal(got.length, 202);
  assert.equal(got[0]!.code, 250);
  for (let i = 0; i < 200; i++) assert.equal(got[i + 1]!.text, `250 2.0.0 noop ${i}`);
  assert.equal(got[201]!.code, 221);
  assert.equal(slow.maxPending, 1);
});

test('slow hooks with the flood dribbling in meanwhile, several transactions', async () => {
  const rng = new Rng(99);
  const slow = new Slow(() => rng.int(0, 8));
  await using server = await startServer(slow);
  const c = await connected(server.port);
  const wire = b('EHLO c.example\r\n' + transaction(1) + 'NOOP x\r\n' + transaction(2) + transaction(3) + 'QUIT\r\n');
  await sendPieces(c, randomChunks(rng, wire, 30), 1);
  const got = await repliesUntilClose(c, 50, 10_000);
  assert.deepEqual(
    got.map((r) => r.code),
    [250, ...TX_CODES, 250, ...TX_CODES, ...TX_CODES, 221],
  );
  assert.equal(got[6]!.text, '250 2.0.0 noop x');
  assert.equal(slow.maxPending, 1);
  assert.deepEqual(
    slow.messages.map((m) => m.mailFrom),
    ['s1@example.com', 's2@example.com', 's3@example.com'],
  );
});

test('nothing after QUIT in the same write is executed or answered', async () => {
  const spy = new Spy();
  await using server = await startServer(spy);
  const c = await connected(server.port);
  c.send('EHLO c.example\r\nNOOP 1\r\nQUIT\r\nNOOP 2\r\nMAIL FROM:<late@example.com>\r\n');
  const got = await repliesUntilClose(c, 10);
  assert.deepEqual(
    got.map((r) => r.code),
    [250, 250, 221],
  );
  assert.deepEqual(spy.events, ['NOOP 1']);
});

test('a client that half-closes (FIN) while a hook is pending is gone: nothing it pipelined after runs', async () => {
  // A FIN is the vanished-client case: the server must not go on to deliver for it.
  const slow = new Slow((verb) => (verb === 'MAIL' ? 50 : 5));
  await using server = await startServer(slow);
  const c = await connected(server.port);
  c.send('EHLO c.example\r\n' + transaction(1) + 'NOOP end\r\n');
  c.socket.end();
  await c.waitClosed();
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(slow.messages.length, 0);
});
