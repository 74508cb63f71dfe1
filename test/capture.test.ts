/** Capture as a test inbox: what it keeps, waiting, views and isolation, over real SMTP. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Capture } from '../src/capture/capture.js';
import { CaptureTimeoutError } from '../src/capture/inbox.js';
import { extractLinks, findCode, htmlToText } from '../src/capture/text.js';
import { greeted, startServer } from './helpers.js';
import { smtpTransport as transport } from './capture-util.js';

test('keeps the envelope, the session facts, the raw bytes and the parsed message', async () => {
  const capture = new Capture();
  await using controller = await startServer(capture, {
    authRequireTLS: false,
    authenticator: () => ({ success: true, authData: 'alice' }),
  });
  const info = await transport(controller.port, { auth: { user: 'alice', pass: 'secret' }, name: 'client.test' }).sendMail({
    from: '"Shop" <shop@example.com>',
    to: 'bob@example.com',
    cc: 'carol@example.com',
    subject: 'Your order',
    text: 'Thanks! Your code is 482913.\nTrack it at https://shop.example.com/track?id=7.',
    html: '<p>Thanks!</p><p>Your code is <b>482913</b>.</p><a href="https://shop.example.com/track?id=7&amp;x=1">Track</a>',
    attachments: [{ filename: 'invoice.txt', content: 'total 12.00' }],
  });
  const m = await capture.inbox.waitFor({ to: 'bob@example.com' });
  assert.equal(m.envelope.mailFrom, 'shop@example.com');
  assert.deepEqual(m.envelope.rcptTos, ['bob@example.com', 'carol@example.com']);
  assert.equal(m.session.heloName, 'client.test');
  assert.equal(m.session.authUser, 'alice');
  assert.equal(m.session.tls, null);
  assert.equal(m.session.peer.address, '127.0.0.1');
  assert.equal(m.subject, 'Your order');
  assert.equal(m.from?.address, 'shop@example.com');
  assert.equal(m.from?.name, 'Shop');
  assert.deepEqual(m.cc.map((a) => a.address), ['carol@example.com']);
  assert.equal(m.parsed.attachments[0]?.filename, 'invoice.txt');
  assert.match(m.raw.toString('latin1'), /^Content-Type: multipart\/mixed/m);
  assert.equal(`<${m.messageId}>`, info.messageId);
  assert.equal(m.code(), '482913');
  assert.deepEqual(m.links(), ['https://shop.example.com/track?id=7&x=1', 'https://shop.example.com/track?id=7']);
  assert.match(m.htmlText(), /Your code is 482913\./);
  assert.equal(m.header('subject'), 'Your order');
});

test('waitFor: a message already there, one still to come, and the reply names its ID', async () => {
  const capture = new Capture();
  await using controller = await startServer(capture);
  const smtp = transport(controller.port);
  await smtp.sendMail({ from: 'a@example.com', to: 'early@example.com', subject: 'first', text: 'one', headers: { 'X-Test-Case': 'early-1' } });
  const early = await capture.inbox.waitFor({ subject: 'first' });
  assert.equal(early.envelope.rcptTos[0], 'early@example.com');
  const later = capture.inbox.waitFor({ to: /late@/, subject: /^second$/ });
  const info = await smtp.sendMail({ from: 'a@example.com', to: 'late@example.com', subject: 'second', text: 'two' });
  const m = await later;
  assert.equal(info.response, `250 2.0.0 Ok: queued as ${m.id}`);
  assert.equal(capture.inbox.find({ header: { 'X-TEST-CASE': /^early-\d$/ } })?.subject, 'first');
  assert.equal(capture.inbox.find((msg) => msg.text.includes('two'))?.id, m.id);
});

test('waitFor times out with what it waited for and what did arrive; a signal aborts it', async () => {
  const capture = new Capture();
  await using controller = await startServer(capture);
  await transport(controller.port).sendMail({ from: 'a@example.com', to: 'x@example.com', subject: 'Not it', text: 'hi' });
  await capture.inbox.waitFor();
  await assert.rejects(capture.inbox.waitFor({ to: 'y@example.com', subject: /Welcome/ }, { timeout: 50 }), (error: unknown) => {
    assert.ok(error instanceof CaptureTimeoutError);
    assert.match(error.message, /no \{ to: "y@example\.com", subject: \/Welcome\/ \} in the inbox after 50 ms/);
    assert.match(error.message, /1 message\(s\) arrived:\n {2}\S+ from <a@example\.com> to <x@example\.com> "Not it"/);
    assert.equal(error.arrived.length, 1);
    return true;
  });
  const controllerAbort = new AbortController();
  const waiting = capture.inbox.waitFor({ subject: 'never' }, { timeout: 0, signal: controllerAbort.signal });
  controllerAbort.abort(new Error('test over'));
  await assert.rejects(waiting, /test over/);
});

test('waitForCount, list, clear and async iteration', async () => {
  const capture = new Capture();
  await using controller = await startServer(capture);
  const smtp = transport(controller.port);
  const three = capture.inbox.waitForCount(3, { from: 'news@example.com' });
  for (let i = 0; i < 3; i++) await smtp.sendMail({ from: 'news@example.com', to: `r${i}@example.com`, subject: `n${i}`, text: '.' });
  assert.deepEqual((await three).map((m) => m.subject), ['n0', 'n1', 'n2']);
  assert.equal(capture.inbox.list({ subject: 'n1' }).length, 1);
  const seen: string[] = [];
  const loop = (async () => {
    for await (const m of capture.inbox) {
      seen.push(m.subject);
      if (seen.length === 4) break;
    }
  })();
  await smtp.sendMail({ from: 'news@example.com', to: 'r3@example.com', subject: 'n3', text: '.' });
  await loop;
  assert.deepEqual(seen, ['n0', 'n1', 'n2', 'n3']);
  capture.inbox.clear();
  assert.equal(capture.inbox.count, 0);
});

test('isolation: parallel tests on one server each see only their own mail, and nothing is left', async () => {
  const capture = new Capture();
  await using controller = await startServer(capture);
  const smtp = transport(controller.port);
  const [a, b] = [capture.inbox.isolate(), capture.inbox.isolate()];
  assert.notEqual(a.tag, b.tag);
  assert.equal(a.address('user@example.com'), `user+${a.tag}@example.com`);
  await Promise.all([
    smtp.sendMail({ from: 's@example.com', to: a.address(), subject: 'for a', text: 'code 1111' }),
    smtp.sendMail({ from: 's@example.com', to: b.address(), subject: 'for b', text: 'code 2222' }),
  ]);
  assert.equal((await a.waitFor()).subject, 'for a');
  assert.equal((await b.waitFor()).code(), '2222');
  assert.deepEqual(a.list().map((m) => m.subject), ['for a']);
  a.close();
  assert.equal(capture.inbox.count, 1, 'closing a removed only its own mail');
  const late = await smtp.sendMail({ from: 's@example.com', to: a.address(), subject: 'late for a', text: '.' });
  assert.match(late.response, /^250 .*discarded/);
  assert.equal(capture.inbox.count, 1, 'mail for a closed inbox is not kept');
  const bob = capture.inbox.forRecipient(b.address().toUpperCase());
  assert.equal(bob.count, 1);
  b[Symbol.dispose]();
  assert.equal(capture.inbox.count, 0);
});

test('pruning: a maximum count and total size, oldest first', async () => {
  const capture = new Capture({ maxMessages: 3, maxBytes: 0 });
  await using controller = await startServer(capture);
  const smtp = transport(controller.port);
  for (let i = 0; i < 5; i++) await smtp.sendMail({ from: 'a@example.com', to: 'b@example.com', subject: `m${i}`, text: '.' });
  assert.deepEqual(capture.inbox.list().map((m) => m.subject), ['m2', 'm3', 'm4']);
  capture.store.maxMessages = 0;
  capture.store.maxBytes = capture.inbox.latest()!.size * 2 + 1;
  capture.store.prune();
  assert.deepEqual(capture.inbox.list().map((m) => m.subject), ['m3', 'm4']);
});

test('LMTP: one reply per recipient', async () => {
  const capture = new Capture();
  await using controller = await startServer(capture, { lmtp: true });
  const client = await greeted(controller.port, 'LHLO client.example');
  assert.equal((await client.cmd('MAIL FROM:<a@example.com>')).code, 250);
  assert.equal((await client.cmd('RCPT TO:<b@example.com>')).code, 250);
  assert.equal((await client.cmd('RCPT TO:<c@example.com>')).code, 250);
  assert.equal((await client.cmd('DATA')).code, 354);
  client.send('Subject: lmtp\r\n\r\nbody\r\n.\r\n');
  const first = await client.reply();
  const second = await client.reply();
  assert.match(first.text, /^250 2\.0\.0 Ok: queued as /);
  assert.equal(second.text, first.text);
  assert.equal(capture.inbox.latest()?.session.lmtp, true);
  client.socket.destroy();
});

test('hostile input: the text helpers stay linear and never return script links', () => {
  const html = '<a href="javascript:alert(1)">x</a><a href=\'data:text/html,hi\'>y</a><script>var u="https://evil.test/s"</script><a href=https://ok.test/a>ok</a>';
  assert.deepEqual(extractLinks('', html), ['https://ok.test/a']);
  assert.equal(htmlToText('<style>p{}</style><p>a&amp;b&#x41;&#0;&bogus;</p>'), 'a&bA&#0;&bogus;');
  const deep = '<a href="'.repeat(20000) + '<p'.repeat(20000);
  assert.equal(typeof htmlToText(deep), 'string');
  assert.deepEqual(extractLinks(deep, deep), []);
  assert.equal(findCode('Order 2024-05-01 at 10:30, total 1234567890. Your code: 5521'), '5521');
  assert.equal(findCode('use 99 8812 now', { length: 4 }), '8812');
  assert.equal(findCode('PIN=A7-Z', { pattern: /PIN=(\w\d)/ }), 'A7');
  assert.equal(findCode('nothing here'), undefined);
  assert.deepEqual(extractLinks('see https://x.test/a). and (https://w.test/A_(b))', null), ['https://x.test/a', 'https://w.test/A_(b)']);
});

test('BDAT (CHUNKING): the chunks are captured as one message, byte for byte', async () => {
  const capture = new Capture();
  await using controller = await startServer(capture);
  const client = await greeted(controller.port);
  await client.cmd('MAIL FROM:<a@example.com>');
  await client.cmd('RCPT TO:<b@example.com>');
  const first = 'Subject: chunked\r\n\r\nbare\nLF and a dot\r\n.\r\n';
  client.send(`BDAT ${Buffer.byteLength(first)}\r\n${first}`);
  assert.equal((await client.reply()).code, 250);
  client.send('BDAT 7 LAST\r\nend\r\n\r\n');
  const reply = await client.reply();
  assert.match(reply.text, /^250 2\.0\.0 Ok: queued as /);
  const m = capture.inbox.latest()!;
  assert.equal(m.raw.toString('latin1'), `${first}end\r\n\r\n`);
  assert.equal(m.subject, 'chunked');
  client.socket.destroy();
});
