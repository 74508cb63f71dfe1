/** The capture's Mailpit API v1 over real HTTP on loopback, with mail sent over real SMTP. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Capture } from '../src/capture/capture.js';
import { decodeFrames, encodeFrame, FrameError } from '../src/capture/websocket.js';
import { compileSearch, splitQuery, sizeToBytes } from '../src/capture/search.js';
import { captureRig, get, json, jsonBody, rawHttp, WsClient } from './capture-util.js';
import { startServer } from './helpers.js';

interface Summary {
  ID: string;
  Subject: string;
  Read: boolean;
  Tags: string[];
  Attachments: number;
  Snippet: string;
  From: { Name: string; Address: string } | null;
  To: Array<{ Name: string; Address: string }>;
}
interface List {
  total: number;
  unread: number;
  messages_count: number;
  messages_unread: number;
  start: number;
  tags: string[];
  messages: Summary[];
}

async function seed(rig: Awaited<ReturnType<typeof captureRig>>): Promise<void> {
  await rig.send({ from: '"Shop" <shop@example.com>', to: 'ann@example.com', subject: 'Order 1', text: 'first order', headers: { 'X-Tags': 'orders, shop' } });
  await rig.send({
    from: 'shop@example.com',
    to: 'bob@example.com',
    subject: 'Order 2',
    html: '<p>second <b>order</b></p>',
    attachments: [{ filename: 'invoice.txt', content: 'x'.repeat(3000) }],
  });
  await rig.send({ from: 'news@example.com', to: 'ann@example.com', subject: 'News', text: 'weekly news' });
}

test('messages: list newest first with paging, summary fields, tags from X-Tags', async () => {
  await using rig = await captureRig();
  await seed(rig);
  const { status, body } = await json<List>(`${rig.base}/api/v1/messages`);
  assert.equal(status, 200);
  assert.equal(body.total, 3);
  assert.equal(body.unread, 3);
  assert.deepEqual(body.messages.map((m) => m.Subject), ['News', 'Order 2', 'Order 1']);
  assert.deepEqual(body.tags, ['orders', 'shop']);
  const order1 = body.messages[2]!;
  assert.deepEqual(order1.From, { Name: 'Shop', Address: 'shop@example.com' });
  assert.deepEqual(order1.Tags, ['orders', 'shop']);
  assert.equal(body.messages[1]!.Attachments, 1);
  assert.equal(body.messages[1]!.Snippet, 'second order');
  const paged = await json<List>(`${rig.base}/api/v1/messages?start=1&limit=1`);
  assert.equal(paged.body.start, 1);
  assert.deepEqual(paged.body.messages.map((m) => m.Subject), ['Order 2']);
  assert.equal((await json(`${rig.base}/api/v1/messages?limit=-1`)).status, 400);
});

test('message: full JSON marks it read; headers, raw, parts, latest, views', async () => {
  await using rig = await captureRig();
  await seed(rig);
  const order2 = rig.capture.inbox.find({ subject: 'Order 2' })!;
  const { body } = await json<{ ID: string; HTML: string; Attachments: Array<{ PartID: string; FileName: string; Size: number; Checksums: { SHA256: string } }>; ReturnPath: string }>(
    `${rig.base}/api/v1/message/${order2.id}`,
  );
  assert.equal(body.ID, order2.id);
  assert.match(body.HTML, /second <b>order<\/b>/);
  assert.equal(body.ReturnPath, 'shop@example.com');
  assert.equal(body.Attachments[0]!.FileName, 'invoice.txt');
  assert.equal(body.Attachments[0]!.Size, 3000);
  assert.equal(order2.read, true);
  const headers = await json<Record<string, string[]>>(`${rig.base}/api/v1/message/${order2.id}/headers`);
  assert.deepEqual(headers.body['Subject'], ['Order 2']);
  const raw = await get(`${rig.base}/api/v1/message/${order2.id}/raw?dl=1`);
  assert.equal(raw.headers.get('content-disposition'), `attachment; filename="${order2.id}.eml"`);
  assert.equal(Buffer.from(await raw.arrayBuffer()).equals(order2.raw), true);
  const part = await get(`${rig.base}/api/v1/message/${order2.id}/part/${body.Attachments[0]!.PartID}`);
  assert.equal(part.status, 200);
  assert.match(part.headers.get('content-disposition') ?? '', /^attachment; filename="invoice\.txt"/);
  assert.match(part.headers.get('content-security-policy') ?? '', /^sandbox/);
  assert.equal((await part.text()).length, 3000);
  const latest = await json<{ Subject: string }>(`${rig.base}/api/v1/message/latest`);
  assert.equal(latest.body.Subject, 'News');
  const html = await get(`${rig.base}/view/${order2.id}.html`);
  assert.match(html.headers.get('content-security-policy') ?? '', /^sandbox allow-popups/);
  assert.match(await html.text(), /second <b>order/);
  const txt = await get(`${rig.base}/view/latest.txt`);
  assert.equal((await txt.text()).trim(), 'weekly news');
  const missing = await json<{ Error: string }>(`${rig.base}/api/v1/message/nope`);
  assert.equal(missing.status, 404);
  assert.match(missing.body.Error, /not found/);
  assert.equal((await json(`${rig.base}/api/v1/message/${order2.id}/part/99`)).status, 404);
});

test('search with Mailpit syntax, read status, delete by search, delete by ID and all', async () => {
  await using rig = await captureRig();
  await seed(rig);
  const q = async (query: string) => (await json<List>(`${rig.base}/api/v1/search?query=${encodeURIComponent(query)}`)).body.messages.map((m) => m.Subject);
  assert.deepEqual(await q('subject:"Order 2"'), ['Order 2']);
  assert.deepEqual(await q('from:shop -subject:1'), ['Order 2']);
  assert.deepEqual(await q('to:ann@example.com'), ['News', 'Order 1']);
  assert.deepEqual(await q('has:attachment'), ['Order 2']);
  assert.deepEqual(await q('tag:orders'), ['Order 1']);
  assert.deepEqual(await q('!tag:orders is:unread'), ['News', 'Order 2']);
  assert.deepEqual(await q('larger:3kb'), ['Order 2']);
  assert.deepEqual(await q('weekly'), ['News']);
  assert.deepEqual(await q(`after:${new Date(Date.now() - 60_000).toISOString()}`), ['News', 'Order 2', 'Order 1']);
  assert.equal((await json(`${rig.base}/api/v1/search`)).status, 400);

  assert.equal((await get(`${rig.base}/api/v1/messages`, jsonBody('PUT', { Search: 'from:news', Read: true }))).status, 200);
  assert.deepEqual(await q('is:read'), ['News']);
  assert.equal((await json(`${rig.base}/api/v1/messages`, jsonBody('PUT', { IDs: ['x'], Search: 'y' }))).status, 400);
  await get(`${rig.base}/api/v1/messages`, jsonBody('PUT', { Read: true }));
  assert.equal((await json<List>(`${rig.base}/api/v1/messages`)).body.unread, 0);

  assert.equal((await get(`${rig.base}/api/v1/search?query=subject:Order`, { method: 'DELETE' })).status, 200);
  assert.deepEqual(rig.capture.inbox.list().map((m) => m.subject), ['News']);
  await get(`${rig.base}/api/v1/messages`, jsonBody('DELETE', { IDs: [rig.capture.inbox.list()[0]!.id] }));
  assert.equal(rig.capture.inbox.count, 0);
  await seed(rig);
  await get(`${rig.base}/api/v1/messages`, { method: 'DELETE' });
  assert.equal(rig.capture.inbox.count, 0);
});

test('tags: set, list, rename, delete', async () => {
  await using rig = await captureRig();
  await seed(rig);
  const ids = rig.capture.inbox.list({ from: 'shop@example.com' }).map((m) => m.id);
  assert.equal((await get(`${rig.base}/api/v1/tags`, jsonBody('PUT', { IDs: ids, Tags: ['vip', ' vip ', 'b'] }))).status, 200);
  assert.deepEqual((await json(`${rig.base}/api/v1/tags`)).body, ['b', 'vip']);
  await get(`${rig.base}/api/v1/tags/vip`, jsonBody('PUT', { Name: 'gold' }));
  assert.deepEqual((await json(`${rig.base}/api/v1/tags`)).body, ['b', 'gold']);
  await get(`${rig.base}/api/v1/tags/b`, { method: 'DELETE' });
  assert.deepEqual(rig.capture.inbox.find({ subject: 'Order 2' })!.tags, ['gold']);
  assert.equal((await json(`${rig.base}/api/v1/tags/x`, jsonBody('PUT', {}))).status, 400);
});

test('send: a message from JSON, with attachments; bad requests get JSON errors', async () => {
  await using rig = await captureRig();
  const sent = await json<{ ID: string }>(
    `${rig.base}/api/v1/send`,
    jsonBody('POST', {
      From: { Email: 'app@example.com', Name: 'Äpp' },
      To: [{ Email: 'to@example.com', Name: 'To "Person"' }],
      Bcc: ['hidden@example.com'],
      Subject: 'Grüße',
      Text: 'plain',
      HTML: '<p>rich</p>',
      Headers: { 'X-Custom': 'yes' },
      Tags: ['api'],
      Attachments: [{ Content: Buffer.from('hello').toString('base64'), Filename: 'h.txt' }],
    }),
  );
  assert.equal(sent.status, 200);
  const m = rig.capture.inbox.get(sent.body.ID)!;
  assert.equal(m.subject, 'Grüße');
  assert.equal(m.from?.name, 'Äpp');
  assert.equal(m.to[0]?.name, 'To "Person"');
  assert.deepEqual(m.envelope.rcptTos, ['to@example.com', 'hidden@example.com']);
  assert.equal(m.text.trim(), 'plain');
  assert.equal(m.html, '<p>rich</p>');
  assert.equal(m.header('x-custom'), 'yes');
  assert.deepEqual(m.tags, ['api']);
  assert.equal(m.parsed.attachments[0]?.content.toString(), 'hello');
  const bad = async (value: unknown) => json<{ Error: string }>(`${rig.base}/api/v1/send`, jsonBody('POST', value));
  assert.equal((await bad({ To: [{ Email: 'a@b.c' }] })).status, 400);
  assert.match((await bad({ From: { Email: 'a@b.c' }, To: [{ Email: 'x@y.z' }], Subject: 'hi\r\nBcc: evil@x.y' })).body.Error, /line breaks/);
  assert.equal((await bad({ From: { Email: 'a@b.c' }, To: [{ Email: 'x@y.z' }], Headers: { 'Bad Name': 'v' } })).status, 400);
  assert.equal((await bad({ From: { Email: 'a@b.c>' }, To: [{ Email: 'x@y.z' }] })).status, 400);
  const notJson = await json<{ Error: string }>(`${rig.base}/api/v1/send`, { method: 'POST', body: '{nope' });
  assert.equal(notJson.status, 400);
  assert.match(notJson.body.Error, /not JSON/);
  assert.equal(rig.capture.inbox.count, 1);
});

test('release relays a stored message with the Proxy handler\'s client; off without --relay', async () => {
  const upstream = new Capture();
  await using relay = await startServer(upstream);
  await using rig = await captureRig({ http: { relay: { host: '127.0.0.1', port: relay.port, ignoreTLS: true } } });
  await rig.send({ from: 'a@example.com', to: 'b@example.com', subject: 'to release', text: 'line\n.dot line' });
  const m = rig.capture.inbox.latest()!;
  const r = await get(`${rig.base}/api/v1/message/${m.id}/release`, jsonBody('POST', { To: ['real@example.net'] }));
  assert.equal(r.status, 200);
  const out = await upstream.inbox.waitFor({ to: 'real@example.net' });
  assert.equal(out.subject, 'to release');
  assert.equal(out.envelope.mailFrom, 'a@example.com');
  assert.match(out.text, /\.dot line/);
  const bad = await json<{ Error: string }>(`${rig.base}/api/v1/message/${m.id}/release`, jsonBody('POST', { To: ['x@y>z'] }));
  assert.equal(bad.status, 400);
  await using plain = await captureRig();
  await plain.send({ from: 'a@example.com', to: 'b@example.com', subject: 's', text: 't' });
  const off = await json<{ Error: string }>(`${plain.base}/api/v1/message/latest/release`, jsonBody('POST', { To: ['x@example.com'] }));
  assert.equal(off.status, 400);
  assert.match(off.body.Error, /--relay/);
});

test('info, webui, unavailable checks, unknown paths and methods: JSON answers', async () => {
  await using rig = await captureRig({ http: { label: 'dev' } });
  await seed(rig);
  const info = await json<{ Messages: number; Unread: number; Tags: Record<string, number>; RuntimeStats: { SMTPAccepted: number } }>(`${rig.base}/api/v1/info`);
  assert.equal(info.body.Messages, 3);
  assert.deepEqual(info.body.Tags, { orders: 1, shop: 1 });
  assert.equal(info.body.RuntimeStats.SMTPAccepted, 3);
  const webui = await json<{ Label: string; MessageRelay: { Enabled: boolean } }>(`${rig.base}/api/v1/webui`);
  assert.equal(webui.body.Label, 'dev');
  assert.equal(webui.body.MessageRelay.Enabled, false);
  for (const check of ['link-check', 'sa-check', 'html-check']) {
    const r = await json<{ Error: string }>(`${rig.base}/api/v1/message/latest/${check}`);
    assert.equal(r.status, 501);
    assert.match(r.body.Error, /not available in tsmtpd/);
  }
  const unknown = await json<{ Error: string }>(`${rig.base}/api/v1/nothing`);
  assert.equal(unknown.status, 404);
  const wrong = await json<{ Error: string }>(`${rig.base}/api/v1/info`, { method: 'POST' });
  assert.equal(wrong.status, 405);
  assert.equal(wrong.headers.get('allow'), 'GET');
  assert.equal((await json(`${rig.base}/api/v1/message/%E0%A4%A`)).status, 400);
});

test('attack: oversized bodies, cross-site requests, DNS rebinding, garbage HTTP', async () => {
  await using rig = await captureRig({ http: { maxBody: 1000 } });
  const big = await json<{ Error: string }>(`${rig.base}/api/v1/send`, { method: 'POST', body: 'x'.repeat(5000) });
  assert.equal(big.status, 413);
  const cross = await json<{ Error: string }>(`${rig.base}/api/v1/messages`, { method: 'DELETE', headers: { Origin: 'https://evil.example' } });
  assert.equal(cross.status, 403);
  const rebind = await rawHttp(rig.http.port, `GET /api/v1/messages HTTP/1.1\r\nHost: evil.example:${rig.http.port}\r\nConnection: close\r\n\r\n`);
  assert.match(rebind, /^HTTP\/1\.1 403/);
  const same = await json(`${rig.base}/api/v1/messages`, { headers: { Origin: rig.base } });
  assert.equal(same.status, 200);
  const reply = await rawHttp(rig.http.port, 'GARBAGE \x00\x01 HTTP/9\r\n\r\n');
  assert.match(reply, /^HTTP\/1\.1 400/);
  assert.equal((await json(`${rig.base}/api/v1/info`)).status, 200, 'still serving');
});

test('basic authentication: required when configured, for the API and the WebSocket', async () => {
  await using rig = await captureRig({ http: { authenticate: (u, p) => u === 'dev' && p === 'pw' } });
  const none = await json(`${rig.base}/api/v1/info`);
  assert.equal(none.status, 401);
  assert.match(none.headers.get('www-authenticate') ?? '', /^Basic/);
  const auth = { Authorization: `Basic ${Buffer.from('dev:pw').toString('base64')}` };
  assert.equal((await json(`${rig.base}/api/v1/info`, { headers: auth })).status, 200);
  assert.equal((await json(`${rig.base}/api/v1/info`, { headers: { Authorization: `Basic ${Buffer.from('dev:no').toString('base64')}` } })).status, 401);
  assert.equal((await WsClient.connect(rig.http.port)).status, 401);
  const ok = await WsClient.connect(rig.http.port, '/api/events', auth);
  assert.equal(ok.status, 101);
  ok.client!.close();
});

test('WebSocket /api/events: new, update, delete and stats events as Mailpit sends them', async () => {
  await using rig = await captureRig();
  const { client } = await WsClient.connect(rig.http.port);
  assert.ok(client !== null);
  await rig.send({ from: 'a@example.com', to: 'b@example.com', subject: 'live', text: 'now' });
  const created = (await client.next((e) => typeof e !== 'string' && e.Type === 'new')) as { Data: Summary };
  assert.equal(created.Data.Subject, 'live');
  const stats = (await client.next((e) => typeof e !== 'string' && e.Type === 'stats')) as { Data: { Total: number; Unread: number } };
  assert.equal(stats.Data.Total, 1);
  await get(`${rig.base}/api/v1/message/${created.Data.ID}`);
  const update = (await client.next((e) => typeof e !== 'string' && e.Type === 'update')) as { Data: { ID: string; Read: boolean } };
  assert.deepEqual([update.Data.ID, update.Data.Read], [created.Data.ID, true]);
  await get(`${rig.base}/api/v1/messages`, jsonBody('DELETE', { IDs: [created.Data.ID] }));
  const deleted = (await client.next((e) => typeof e !== 'string' && e.Type === 'delete')) as { Data: { ID: string } };
  assert.equal(deleted.Data.ID, created.Data.ID);
  client.sendFrame(0x9, Buffer.from('hi')); // ping: answered with a pong, the feed goes on
  client.sendFrame(0x8, Buffer.from([0x03, 0xe8]));
  assert.equal(await client.next((e) => e === 'close:1000'), 'close:1000');
  client.close();
});

test('WebSocket attacks: bad handshakes, unmasked and oversized frames, cross-site origin', async () => {
  await using rig = await captureRig();
  const bad = await WsClient.connect(rig.http.port, '/api/events', { 'Sec-WebSocket-Version': '8' });
  assert.equal(bad.status, 400);
  assert.equal((await WsClient.connect(rig.http.port, '/elsewhere')).status, 404);
  assert.equal((await WsClient.connect(rig.http.port, '/api/events', { Origin: 'https://evil.example' })).status, 403);
  const { client } = await WsClient.connect(rig.http.port);
  client!.sendFrame(0x1, Buffer.from('x'), false);
  assert.equal(await client!.next((e) => e === 'close:1002'), 'close:1002');
  client!.close();
  assert.throws(() => decodeFrames(Buffer.from([0x81, 0xff, 0, 0, 0, 0, 0xff, 0, 0, 0])), (e: unknown) => e instanceof FrameError && e.closeCode === 1009);
  assert.throws(() => decodeFrames(Buffer.from([0x89, 0xfe, 0, 200])), FrameError);
  const frame = encodeFrame(1, Buffer.alloc(70000));
  assert.equal(frame[1], 127);
  assert.equal(frame.length, 70010);
  assert.equal(decodeFrames(Buffer.from([0x81, 0x85, 1, 2])).rest.length, 4, 'an incomplete frame waits for more');
});

test('search parsing: quotes, negation, sizes', () => {
  assert.deepEqual(splitQuery('subject:"a b" -to:x  "c d"'), ['subject:a b', '-to:x', 'c d']);
  assert.equal(sizeToBytes('2kb'), 2048);
  assert.equal(sizeToBytes('1.5M'), 1572864);
  assert.equal(sizeToBytes('3gb'), 0);
  assert.equal(typeof compileSearch(''), 'function');
});
