/**
 * mailpit-api (the most used JS client of Mailpit's REST API) run unchanged against tsmtpd's
 * capture server: every method of its MailpitClient, over real HTTP and SMTP on loopback.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MailpitClient } from 'mailpit-api';
import { Capture } from '../src/capture/capture.js';
import { captureRig, smtpTransport } from './capture-util.js';
import { CliProcess, freePort } from './cli-util.js';
import { startServer } from './helpers.js';

// A 1x1 PNG: an image attachment the way test suites send a logo.
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');

type Rig = Awaited<ReturnType<typeof captureRig>>;

async function seed(rig: Rig): Promise<void> {
  await rig.send({
    from: '"Shop" <shop@example.com>',
    to: '"Ann" <ann@example.com>',
    cc: 'carl@example.com',
    replyTo: 'help@example.com',
    subject: 'Order 1',
    text: 'first order, code 123456',
    html: '<p>first <b>order</b>, code 123456 <a href="https://example.com/o/1">view</a></p>',
    headers: { 'X-Tags': 'orders', 'List-Unsubscribe': '<https://example.com/unsub>' },
    attachments: [
      { filename: 'invoice.txt', content: 'invoice body' },
      { filename: 'logo.png', content: PNG, contentType: 'image/png' },
    ],
  });
  await rig.send({ from: 'news@example.com', to: 'bob@example.com', subject: 'News', text: 'weekly news' });
}

test('mailpit-api: info, webui configuration, list, summary, headers, source, attachment, views', async () => {
  await using rig = await captureRig();
  const mailpit = new MailpitClient(rig.base);
  await seed(rig);

  const info = await mailpit.getInfo();
  assert.equal(info.Messages, 2);
  assert.equal(info.Unread, 2);
  assert.deepEqual(info.Tags, { orders: 1 });
  assert.equal(typeof info.Version, 'string');
  assert.equal(typeof info.DatabaseSize, 'number');
  assert.equal(typeof info.RuntimeStats.Uptime, 'number');

  const config = await mailpit.getConfiguration();
  assert.equal(config.SpamAssassin, false);
  assert.equal(config.ChaosEnabled, true);
  assert.equal(config.MessageRelay.SMTPServer, '');
  assert.equal(typeof config.Label, 'string');

  const list = await mailpit.listMessages();
  assert.equal(list.total, 2);
  assert.equal(list.unread, 2);
  assert.equal(list.count, 2);
  assert.equal(list.messages_count, 2);
  assert.equal(list.start, 0);
  assert.deepEqual(list.tags, ['orders']);
  assert.deepEqual(list.messages.map((m) => m.Subject), ['News', 'Order 1']);
  const item = list.messages[1]!;
  assert.deepEqual(item.From, { Name: 'Shop', Address: 'shop@example.com' });
  assert.deepEqual(item.To, [{ Name: 'Ann', Address: 'ann@example.com' }]);
  assert.deepEqual(item.Cc, [{ Name: '', Address: 'carl@example.com' }]);
  assert.deepEqual(item.ReplyTo, [{ Name: '', Address: 'help@example.com' }]);
  assert.equal(item.Attachments, 2);
  assert.equal(item.Read, false);
  assert.match(item.Snippet, /^first order, code 123456/);
  assert.ok(!Number.isNaN(Date.parse(item.Created)));
  const paged = await mailpit.listMessages(1, 1);
  assert.equal(paged.start, 1);
  assert.equal(paged.count, 1);
  assert.deepEqual(paged.messages.map((m) => m.Subject), ['Order 1']);

  const latest = await mailpit.getMessageSummary();
  assert.equal(latest.Subject, 'News');
  const m = await mailpit.getMessageSummary(item.ID);
  assert.equal(m.ID, item.ID);
  assert.equal(m.Subject, 'Order 1');
  assert.equal(m.ReturnPath, 'shop@example.com');
  assert.match(m.Text, /first order, code 123456/);
  assert.match(m.HTML, /<b>order<\/b>/);
  assert.deepEqual(m.ListUnsubscribe.Links, ['https://example.com/unsub']);
  assert.deepEqual(m.Tags, ['orders']);
  assert.deepEqual(m.Attachments.map((a) => a.FileName).sort(), ['invoice.txt', 'logo.png']);
  assert.ok(!Number.isNaN(Date.parse(m.Date)));
  assert.equal((await mailpit.listMessages()).unread, 0, 'fetching a message marks it read, as in Mailpit');

  const headers = await mailpit.getMessageHeaders(m.ID);
  assert.deepEqual(headers['Subject'], ['Order 1']);
  assert.deepEqual(headers['X-Tags'], ['orders']);
  assert.equal(headers['Message-Id']!.length, 1); // Go's canonical spelling, as Mailpit's
  const names = Object.keys(headers);
  assert.deepEqual(names, [...names].sort(), 'header names come sorted, as mailpit-api documents');

  const source = await mailpit.getMessageSource(m.ID);
  assert.match(source, /^Subject: Order 1\r$/m);
  assert.equal(source, rig.capture.store.get(m.ID)!.raw.toString('utf8'));

  const txt = m.Attachments.find((a) => a.FileName === 'invoice.txt')!;
  const blob = await mailpit.getMessageAttachment(m.ID, txt.PartID);
  assert.equal(await blob.text(), 'invoice body');
  assert.match(blob.type, /^text\/plain/);
  const png = m.Attachments.find((a) => a.FileName === 'logo.png')!;
  const image = await mailpit.getMessageAttachment(m.ID, png.PartID);
  assert.equal(image.type, 'image/png');
  assert.ok(Buffer.from(await image.arrayBuffer()).equals(PNG));
  assert.equal(png.Size, PNG.length);
  assert.match(png.Checksums.SHA256, /^[0-9a-f]{64}$/);

  // The HTML as sent (a test loads it in a page and clicks its links); embed=1 is the UI's iframe form.
  assert.equal(await mailpit.renderMessageHTML(m.ID), m.HTML);
  const embedded = await mailpit.renderMessageHTML(m.ID, 1);
  assert.match(embedded, /<b>order<\/b>/);
  assert.match(embedded, /target="_blank"/);
  await assert.rejects(mailpit.renderMessageHTML(latest.ID), /Mailpit API Error: 404 .*does not contain a HTML part/);
  assert.match(await mailpit.renderMessageText(m.ID), /first order, code 123456/);
  assert.match(await mailpit.renderMessageText(), /weekly news/);
  await assert.rejects(mailpit.getMessageSummary('no-such-id'), /Mailpit API Error: 404/);
  // Mailpit's `latest?query=`: the newest message that matches (not in mailpit-api; used by hand-written tests).
  const byQuery = await fetch(`${rig.base}/api/v1/message/latest?query=${encodeURIComponent('to:ann@example.com')}`, { signal: AbortSignal.timeout(5000) });
  assert.equal(((await byQuery.json()) as { Subject: string }).Subject, 'Order 1');
  assert.equal((await fetch(`${rig.base}/view/latest.txt?query=subject:nothing`, { signal: AbortSignal.timeout(5000) })).status, 404);
});

test('mailpit-api: search, waitForMessage(s), read status, delete by search and by ID', async () => {
  await using rig = await captureRig();
  const mailpit = new MailpitClient(rig.base);
  await seed(rig);

  const found = await mailpit.searchMessages({ query: 'subject:"Order 1"' });
  assert.equal(found.messages_count, 1);
  assert.equal(found.messages[0]!.Subject, 'Order 1');
  assert.equal(found.total, 2);
  assert.equal((await mailpit.searchMessages({ query: 'from:news@example.com', start: 0, limit: 10 })).messages_count, 1);
  assert.equal((await mailpit.searchMessages({ query: 'has:attachment' })).messages_count, 1);
  const today = new Date().toISOString().slice(0, 10);
  assert.equal((await mailpit.searchMessages({ query: `after:${today} subject:News`, tz: 'UTC' })).messages_count, 1);
  // tz: a time without an offset is read in that zone (Etc/GMT-14 is UTC+14, no DST).
  const received = rig.capture.inbox.find({ subject: 'News' })!.receivedAt.getTime();
  const wallPlus14 = (ms: number) => new Date(ms + 14 * 3600_000).toISOString().slice(0, 16);
  assert.equal((await mailpit.searchMessages({ query: `subject:News after:${wallPlus14(received - 120_000)}`, tz: 'Etc/GMT-14' })).messages_count, 1);
  assert.equal((await mailpit.searchMessages({ query: `subject:News before:${wallPlus14(received - 120_000)}`, tz: 'Etc/GMT-14' })).messages_count, 0);
  assert.equal((await mailpit.searchMessages({ query: `subject:News after:${wallPlus14(received + 120_000)}`, tz: 'Etc/GMT-14' })).messages_count, 0);
  // An unknown zone is ignored, as Mailpit ignores it.
  assert.equal((await mailpit.searchMessages({ query: `after:${today} subject:News`, tz: 'Nowhere/Zone' })).messages_count, 1);

  const waited = mailpit.waitForMessage({ query: 'subject:Welcome' }, { timeout: 5000, interval: 50 });
  await rig.send({ from: 'app@example.com', to: 'new@example.com', subject: 'Welcome', text: 'hello' });
  const welcome = await waited;
  assert.equal(welcome.Subject, 'Welcome');
  assert.deepEqual(welcome.To, [{ Name: '', Address: 'new@example.com' }]);
  assert.equal((await mailpit.waitForMessages({ count: 3 }, { timeout: 2000, interval: 50 })).messages_count, 3);
  assert.equal((await mailpit.waitForMessages({ query: 'to:ann@example.com', count: 1, exact: true }, { timeout: 2000, interval: 50 })).messages_count, 1);
  await assert.rejects(mailpit.waitForMessage({ query: 'subject:never' }, { timeout: 200, interval: 50 }), /Timeout waiting for messages matching query "subject:never"/);

  assert.equal(await mailpit.setReadStatus({ Read: true }), 'ok');
  assert.equal((await mailpit.listMessages()).unread, 0);
  assert.equal(await mailpit.setReadStatus(), 'ok'); // no body fields: every message unread
  assert.equal((await mailpit.listMessages()).unread, 3);
  assert.equal(await mailpit.setReadStatus({ IDs: [welcome.ID, 'deleted-meanwhile'], Read: true }), 'ok');
  assert.equal((await mailpit.searchMessages({ query: 'is:read' })).messages[0]!.ID, welcome.ID);
  assert.equal(await mailpit.setReadStatus({ Search: 'from:shop@example.com', Read: true }, { tz: 'UTC' }), 'ok');
  assert.equal((await mailpit.listMessages()).unread, 1);
  await assert.rejects(mailpit.setReadStatus({ IDs: [welcome.ID], Search: 'x' }), /Mailpit API Error: 400/);

  assert.equal(await mailpit.deleteMessagesBySearch({ query: 'subject:News' }), 'ok');
  assert.deepEqual((await mailpit.listMessages()).messages.map((m) => m.Subject), ['Welcome', 'Order 1']);
  assert.equal(await mailpit.deleteMessages({ IDs: [welcome.ID] }), 'ok');
  assert.deepEqual((await mailpit.listMessages()).messages.map((m) => m.Subject), ['Order 1']);
  assert.equal(await mailpit.deleteMessages(), 'ok'); // no body: every message
  assert.equal((await mailpit.waitForMessages({ count: 0 }, { timeout: 2000, interval: 50 })).total, 0);
});

test('mailpit-api: tags get, set, rename, delete', async () => {
  await using rig = await captureRig();
  const mailpit = new MailpitClient(rig.base);
  await seed(rig);
  const [news, order] = (await mailpit.listMessages()).messages;
  assert.deepEqual(await mailpit.getTags(), ['orders']);
  assert.equal(await mailpit.setTags({ IDs: [news!.ID, order!.ID], Tags: ['Tag 1', 'urgent'] }), 'ok');
  assert.deepEqual(await mailpit.getTags(), ['Tag 1', 'urgent']);
  assert.deepEqual((await mailpit.getMessageSummary(news!.ID)).Tags, ['Tag 1', 'urgent']);
  assert.equal(await mailpit.renameTag('Tag 1', 'Tag 2'), 'ok');
  assert.deepEqual(await mailpit.getTags(), ['Tag 2', 'urgent']);
  assert.equal((await mailpit.searchMessages({ query: 'tag:"Tag 2"' })).messages_count, 2);
  assert.equal(await mailpit.deleteTag('Tag 2'), 'ok');
  assert.deepEqual(await mailpit.getTags(), ['urgent']);
  assert.equal((await mailpit.listMessages()).total, 2, 'deleting a tag keeps the messages');
  assert.equal(await mailpit.setTags({ IDs: [news!.ID] }), 'ok'); // no Tags: remove them
  assert.deepEqual((await mailpit.getMessageSummary(news!.ID)).Tags, []);
  // As Mailpit's CleanTag: other characters than a-z A-Z 0-9 - _ . @ and space become blanks; case-blind repeats go.
  assert.equal(await mailpit.setTags({ IDs: [news!.ID], Tags: ['b@d<tag>!', 'B@D  TAG', ' '] }), 'ok');
  assert.deepEqual((await mailpit.getMessageSummary(news!.ID)).Tags, ['b@d tag']);
  assert.equal(await mailpit.renameTag('B@D TAG', 'Bad tag'), 'ok'); // names match ignoring case
  assert.deepEqual(await mailpit.getTags(), ['Bad tag', 'urgent']);
  await assert.rejects(mailpit.renameTag('Bad tag', 'URGENT'), /Mailpit API Error: 409 .*tag already exists/);
  await assert.rejects(mailpit.renameTag('nope', 'x'), /Mailpit API Error: 404 .*tag not found/);
  await assert.rejects(mailpit.deleteTag('nope'), /Mailpit API Error: 404 .*tag not found/);
  await assert.rejects(mailpit.renameTag('urgent', '<>'), /Mailpit API Error: 400/);
});

test('mailpit-api: send (with attachments, tags, headers) and release to a local upstream', async () => {
  const upstream = new Capture();
  await using relay = await startServer(upstream);
  await using rig = await captureRig({ http: { relay: { host: '127.0.0.1', port: relay.port, ignoreTLS: true } } });
  const mailpit = new MailpitClient(rig.base);
  assert.equal((await mailpit.getConfiguration()).MessageRelay.SMTPServer, `127.0.0.1:${relay.port}`);

  const sent = await mailpit.sendMessage({
    From: { Email: 'user@example.test', Name: 'First LastName' },
    To: [{ Email: 'rec@example.test', Name: 'Recipient Name' }, { Email: 'another@example.test' }],
    Cc: [{ Email: 'cc@example.test' }],
    Bcc: ['hidden@example.test'],
    ReplyTo: [{ Email: 'reply@example.test' }],
    Subject: 'Test Email',
    Text: 'plain body',
    HTML: '<p>html body</p>',
    Headers: { 'X-Campaign': 'spring' },
    Tags: ['sent-by-api'],
    Attachments: [{ Filename: 'a.txt', Content: Buffer.from('attached').toString('base64'), ContentType: 'text/plain' }],
  });
  assert.match(sent.ID, /\S/);
  const m = await mailpit.getMessageSummary(sent.ID);
  assert.equal(m.Subject, 'Test Email');
  assert.deepEqual(m.From, { Name: 'First LastName', Address: 'user@example.test' });
  assert.deepEqual(m.To.map((a) => a.Address), ['rec@example.test', 'another@example.test']);
  assert.deepEqual(m.Tags, ['sent-by-api']);
  assert.equal(m.Attachments[0]!.FileName, 'a.txt');
  assert.deepEqual((await mailpit.getMessageHeaders(sent.ID))['X-Campaign'], ['spring']);
  await assert.rejects(mailpit.sendMessage({ From: { Email: 'not an address' }, To: [{ Email: 'x@example.test' }] }), /Mailpit API Error: 400/);

  assert.equal(await mailpit.releaseMessage(sent.ID, { To: ['real@example.net', 'Named One <named@example.net>'] }), 'ok');
  const out = await upstream.inbox.waitFor({ to: 'real@example.net' }, { timeout: 5000 });
  assert.equal(out.subject, 'Test Email');
  assert.deepEqual(out.envelope.rcptTos, ['real@example.net', 'named@example.net']);
  await assert.rejects(mailpit.releaseMessage(sent.ID, { To: [] }), /Mailpit API Error: 400/);
});

test('mailpit-api: chaos triggers get and set', async () => {
  await using rig = await captureRig();
  const mailpit = new MailpitClient(rig.base);
  const initial = await mailpit.getChaosTriggers();
  assert.deepEqual(Object.keys(initial).sort(), ['Authentication', 'Recipient', 'Sender']);
  assert.equal(initial.Sender.Probability, 0);
  const set = await mailpit.setChaosTriggers({ Sender: { ErrorCode: 451, Probability: 100 } });
  assert.deepEqual(set.Sender, { ErrorCode: 451, Probability: 100 });
  assert.equal(set.Recipient.Probability, 0);
  assert.deepEqual((await mailpit.getChaosTriggers()).Sender, { ErrorCode: 451, Probability: 100 });
  await assert.rejects(rig.send({ from: 'a@example.com', to: 'b@example.com', subject: 's', text: 't' }), /451/);
  const reset = await mailpit.setChaosTriggers();
  assert.equal(reset.Sender.Probability, 0);
  await rig.send({ from: 'a@example.com', to: 'b@example.com', subject: 's', text: 't' });
  assert.equal((await mailpit.getInfo()).Messages, 1);
  await assert.rejects(mailpit.setChaosTriggers({ Sender: { ErrorCode: 250, Probability: 5 } }), /Mailpit API Error: 400/);
});

test('mailpit-api: checks tsmtpd does not run (HTML, link, SpamAssassin, thumbnails) fail with a clear error', async () => {
  await using rig = await captureRig();
  const mailpit = new MailpitClient(rig.base);
  await seed(rig);
  const m = await mailpit.getMessageSummary();
  const png = (await mailpit.getMessageSummary((await mailpit.searchMessages({ query: 'has:attachment' })).messages[0]!.ID)).Attachments.find((a) => a.FileName === 'logo.png')!;
  const clear = /Mailpit API Error: 501 Not Implemented at GET .*not available in tsmtpd/;
  await assert.rejects(mailpit.htmlCheck(), clear);
  await assert.rejects(mailpit.linkCheck(m.ID, true), clear);
  await assert.rejects(mailpit.spamAssassinCheck(m.ID), clear);
  await assert.rejects(mailpit.getAttachmentThumbnail(m.ID, png.PartID), clear);
});

test('mailpit-api: basic auth credentials, and a clear error without them', async () => {
  await using rig = await captureRig({ http: { authenticate: (u, p) => u === 'admin' && p === 'supersecret' } });
  await seed(rig);
  const mailpit = new MailpitClient(rig.base, { auth: { username: 'admin', password: 'supersecret' } });
  assert.equal((await mailpit.getInfo()).Messages, 2);
  await assert.rejects(new MailpitClient(rig.base).getInfo(), /Mailpit API Error: 401/);
  await assert.rejects(new MailpitClient(rig.base, { auth: { username: 'admin', password: 'wrong' } }).listMessages(), /Mailpit API Error: 401/);
});

test('mailpit-api against `tsmtpd -n -c Capture --http`: the command-line catcher, with --label and --relay', async () => {
  const upstream = new Capture();
  await using relay = await startServer(upstream);
  const [smtpPort, httpPort] = [await freePort(), await freePort()];
  const cli = new CliProcess(['-n', '-c', 'Capture', '-l', `127.0.0.1:${smtpPort}`, '--http', `127.0.0.1:${httpPort}`, '--label', 'ci inbox', '--relay', `127.0.0.1:${relay.port}`]);
  try {
    await cli.listening();
    await cli.until(() => /web UI and API on http:\/\/127\.0\.0\.1:\d+/.test(cli.stderr), 'the web UI line');
    const mailpit = new MailpitClient(`http://127.0.0.1:${httpPort}/`);
    assert.equal((await mailpit.getConfiguration()).Label, 'ci inbox');
    const transport = smtpTransport(smtpPort);
    await transport.sendMail({ from: 'app@example.com', to: 'user@example.com', subject: 'Your code', text: 'code 987654' });
    transport.close();
    const m = await mailpit.waitForMessage({ query: 'to:user@example.com subject:code' }, { timeout: 5000, interval: 50 });
    assert.match(m.Text, /code 987654/);
    assert.equal(await mailpit.releaseMessage(m.ID, { To: ['ops@example.net'] }), 'ok');
    assert.equal((await upstream.inbox.waitFor({ to: 'ops@example.net' }, { timeout: 5000 })).subject, 'Your code');
    assert.equal(await mailpit.deleteMessages(), 'ok');
    assert.equal((await mailpit.getInfo()).Messages, 0);
  } finally {
    await cli.stop();
  }
});
