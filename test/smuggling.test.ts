/**
 * SMTP smuggling over real sockets: an end-of-data lookalike followed by commands must stay
 * message content. Only CRLF.CRLF ends DATA (DESIGN.md §3), however the bytes are cut.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RawClient, startServer } from './helpers.js';
import { Spy, referenceBody, repliesUntilClose, sendBytewise, sendPieces } from './attack-util.js';

const SMUGGLED = 'MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nsmuggled\r\n';
const PREFIX = 'Subject: test\r\n\r\nhello';
const TERM = '\r\n.\r\n';

/** Each lookalike, and what it becomes in the content (a dot at a real line start is unstuffed). */
const LOOKALIKES: Array<[name: string, bytes: string, inContent: string]> = [
  ['LF.LF', '\n.\n', '\n.\n'],
  ['CRLF.LF', '\r\n.\n', '\r\n\n'],
  ['LF.CRLF', '\n.\r\n', '\n.\r\n'],
  ['CR.CRLF', '\r.\r\n', '\r.\r\n'],
  ['CRLF.CR', '\r\n.\r', '\r\n\r'],
  ['CRLF.CR CRLF', '\r\n.\r\r\n', '\r\n\r\r\n'],
  ['CR.CR', '\r.\r', '\r.\r'],
  ['LF.CR', '\n.\r', '\n.\r'],
];

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

function expectedContent(inContent: string): Buffer {
  return b(PREFIX + inContent + SMUGGLED + '\r\n');
}

async function connect(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  c.socket.setNoDelay(true);
  assert.equal((await c.reply()).code, 220);
  assert.equal((await c.cmd('EHLO client.example')).code, 250);
  return c;
}

/**
 * One transaction whose body is sent by `send`; then exactly one 250 for the message, and the
 * next reply is the NOOP's (no reply for any smuggled command).
 */
async function transaction(c: RawClient, tag: string, send: () => Promise<void>): Promise<void> {
  assert.equal((await c.cmd(`MAIL FROM:<${tag}@legit.example>`)).code, 250);
  assert.equal((await c.cmd('RCPT TO:<rcpt@legit.example>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  await send();
  const end = await c.reply();
  assert.equal(end.text, '250 2.6.0 OK', `${tag}: end of data`);
  const noop = await c.cmd(`NOOP ${tag}`);
  assert.equal(noop.text, `250 2.0.0 noop-mark ${tag}`, `${tag}: a smuggled command was answered`);
}

async function finish(c: RawClient): Promise<void> {
  c.line('QUIT');
  const rest = await repliesUntilClose(c, 10);
  assert.deepEqual(
    rest.map((r) => r.code),
    [221],
  );
}

function checkNoSmuggling(spy: Spy, expected: Array<{ tag: string; content: Buffer }>): void {
  assert.equal(spy.messages.length, expected.length, 'one message per transaction, no more');
  for (let i = 0; i < expected.length; i++) {
    const m = spy.messages[i]!;
    const { tag, content } = expected[i]!;
    assert.equal(m.mailFrom, `${tag}@legit.example`);
    assert.deepEqual(m.rcptTos, ['rcpt@legit.example']);
    assert.deepEqual(m.content, content, `${tag}: content must be kept byte for byte`);
    assert.ok(m.content.includes(b(SMUGGLED)), `${tag}: smuggled text missing from the content`);
  }
  assert.ok(!spy.events.some((e) => e.includes('evil@x') || e.includes('victim@y')), `a second transaction started: ${spy.events.join(' | ')}`);
  assert.equal(spy.events.filter((e) => e.startsWith('MAIL ')).length, expected.length);
}

test('the reference reader agrees with the table of expected contents', () => {
  for (const [name, bytes, inContent] of LOOKALIKES) {
    const ref = referenceBody(b(PREFIX + bytes + SMUGGLED + TERM));
    assert.equal(ref.done, true, name);
    assert.deepEqual(ref.content, expectedContent(inContent), name);
    assert.equal(ref.rest.length, 0, name);
  }
});

test('lookalikes in one write: one message, smuggled commands stay content', async () => {
  const spy = new Spy();
  await using server = await startServer(spy);
  const c = await connect(server.port);
  const expected = [];
  for (const [name, bytes, inContent] of LOOKALIKES) {
    await transaction(c, name.replace(/\W/g, '_'), async () => c.send(b(PREFIX + bytes + SMUGGLED + TERM)));
    expected.push({ tag: name.replace(/\W/g, '_'), content: expectedContent(inContent) });
  }
  await finish(c);
  checkNoSmuggling(spy, expected);
});

test('lookalikes sent one byte per write', async () => {
  const spy = new Spy();
  await using server = await startServer(spy);
  const c = await connect(server.port);
  const expected = [];
  for (const [name, bytes, inContent] of LOOKALIKES) {
    const tag = `byte_${name.replace(/\W/g, '_')}`;
    await transaction(c, tag, () => sendBytewise(c, PREFIX + bytes + SMUGGLED + TERM));
    expected.push({ tag, content: expectedContent(inContent) });
  }
  await finish(c);
  checkNoSmuggling(spy, expected);
});

test('lookalikes split exactly around every CR, LF and dot', async () => {
  const spy = new Spy();
  await using server = await startServer(spy);
  const c = await connect(server.port);
  const expected = [];
  let n = 0;
  for (const [name, bytes, inContent] of LOOKALIKES) {
    // A cut before, inside and after the lookalike at every position.
    for (let p = 0; p <= bytes.length; p++) {
      const tag = `cut${n++}`;
      await transaction(c, tag, () => sendPieces(c, [PREFIX + bytes.slice(0, p), bytes.slice(p) + SMUGGLED + TERM]));
      expected.push({ tag, content: expectedContent(inContent) });
    }
    // Every byte of the lookalike in its own write, the rest in bulk.
    const tag = `each${n++}`;
    await transaction(c, tag, () => sendPieces(c, [PREFIX, ...bytes.split(''), SMUGGLED, ...TERM.split('')]));
    expected.push({ tag, content: expectedContent(inContent) });
  }
  // The real terminator itself, cut at every position.
  for (let p = 1; p < TERM.length; p++) {
    const tag = `term${p}`;
    await transaction(c, tag, () => sendPieces(c, [PREFIX + '\n.\n' + SMUGGLED + TERM.slice(0, p), TERM.slice(p)]));
    expected.push({ tag, content: expectedContent('\n.\n') });
  }
  await finish(c);
  checkNoSmuggling(spy, expected);
});

test('lookalikes at the very start of the body (a dot right after DATA)', async () => {
  const spy = new Spy();
  await using server = await startServer(spy);
  const c = await connect(server.port);
  const starts: Array<[string, string]> = [
    ['.\n', '\n'],
    ['.\r', '\r'],
    ['.\r\r\n', '\r\r\n'],
    ['\n.\n', '\n.\n'],
    ['\r.\r\n', '\r.\r\n'],
    ['..\r\n', '.\r\n'],
  ];
  const expected = [];
  let n = 0;
  for (const [bytes, inContent] of starts) {
    for (const mode of ['whole', 'bytes'] as const) {
      const tag = `start${n++}`;
      const body = bytes + SMUGGLED + TERM;
      await transaction(c, tag, () => (mode === 'whole' ? (c.send(b(body)), Promise.resolve()) : sendBytewise(c, body)));
      const content = b(inContent + SMUGGLED + '\r\n');
      assert.deepEqual(referenceBody(b(body)).content, content);
      expected.push({ tag, content });
    }
  }
  await finish(c);
  assert.equal(spy.messages.length, expected.length);
  for (let i = 0; i < expected.length; i++) assert.deepEqual(spy.messages[i]!.content, expected[i]!.content, expected[i]!.tag);
  assert.ok(!spy.events.some((e) => e.includes('evil@x')));
});

test('control: CR CRLF . CRLF does contain a real CRLF.CRLF, so the message ends there', async () => {
  // "\r\r\n.\r\n" is a stray CR followed by the genuine terminator: the body ends after "hello\r\r\n"
  // and what follows is a new, legitimate transaction. Both servers and relays agree on this one,
  // so it is not smuggling; it checks that the reader does not over-correct.
  for (const mode of ['whole', 'bytes'] as const) {
    const spy = new Spy();
    await using server = await startServer(spy);
    const c = await connect(server.port);
    assert.equal((await c.cmd('MAIL FROM:<a@legit.example>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<rcpt@legit.example>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    const wire = PREFIX + '\r\r\n.\r\n' + SMUGGLED + TERM;
    if (mode === 'whole') c.send(b(wire));
    else await sendBytewise(c, wire);
    // End of the first message, then MAIL, RCPT, DATA (354) and the end of the second message.
    const codes: number[] = [];
    for (let i = 0; i < 5; i++) codes.push((await c.reply()).code);
    assert.deepEqual(codes, [250, 250, 250, 354, 250], mode);
    await finish(c);
    assert.equal(spy.messages.length, 2);
    assert.deepEqual(spy.messages[0]!.content, b(PREFIX + '\r\r\n'));
    assert.equal(spy.messages[1]!.mailFrom, 'evil@x');
    assert.deepEqual(spy.messages[1]!.content, b('smuggled\r\n\r\n'));
  }
});
