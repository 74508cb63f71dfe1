/** Fault injection: rules by stage and match over real SMTP, Mailpit's chaos API, the rule syntax. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Capture } from '../src/capture/capture.js';
import { FaultSyntaxError, parseFaultSpec, ruleToJSON } from '../src/capture/faults.js';
import { captureRig, json, jsonBody } from './capture-util.js';
import { greeted, startServer } from './helpers.js';
import { runCli } from './cli-util.js';

test('RCPT by address pattern, MAIL on the Nth message, a delay that still delivers', async () => {
  const capture = new Capture();
  capture.faults.add(parseFaultSpec('RCPT/*@bad.example 550 5.1.1 No such user'));
  capture.faults.add(parseFaultSpec('MAIL#2 451 4.3.0 Try again later'));
  capture.faults.add(parseFaultSpec('RCPT/slow@example.com delay=20'));
  await using server = await startServer(capture);
  const c = await greeted(server.port);
  assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<x@bad.example>')).text, '550 5.1.1 No such user');
  assert.equal((await c.cmd('RCPT TO:<x@BAD.example>')).code, 550, 'globs ignore case');
  assert.equal((await c.cmd('RCPT TO:<x@bad.example.org>')).code, 250, 'globs match whole');
  assert.equal((await c.cmd('RCPT TO:<slow@example.com>')).code, 250);
  assert.equal((await c.cmd('RSET')).code, 250);
  assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).text, '451 4.3.0 Try again later');
  assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250, 'only the 2nd');
  assert.equal((await c.cmd('RCPT TO:<ok@example.com>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send('Subject: through\r\n\r\nbody\r\n.\r\n');
  assert.equal((await c.reply()).code, 250);
  assert.deepEqual(capture.inbox.latest()?.envelope.rcptTos, ['ok@example.com']);
  assert.equal(capture.stats.rejected, 3);
  c.close();
});

test('DATA drop cuts the connection mid-body: no reply, nothing stored', async () => {
  const capture = new Capture();
  capture.faults.add(parseFaultSpec('DATA/victim@example.com drop'));
  await using server = await startServer(capture);
  const c = await greeted(server.port);
  await c.cmd('MAIL FROM:<a@example.com>');
  await c.cmd('RCPT TO:<victim@example.com>');
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send('Subject: half\r\n\r\nthe first half of the body\r\n');
  await c.waitClosed();
  assert.doesNotMatch(c.unread, /^250/m);
  assert.equal(capture.inbox.count, 0);
  const d = await greeted(server.port);
  await d.cmd('MAIL FROM:<a@example.com>');
  await d.cmd('RCPT TO:<other@example.com>');
  await d.cmd('DATA');
  d.send('Subject: whole\r\n\r\nbody\r\n.\r\n');
  assert.equal((await d.reply()).code, 250, 'other recipients are not affected');
  d.close();
});

test('AUTH rules through capture.authenticator(), in front of the real authenticator', async () => {
  const capture = new Capture();
  capture.faults.add(parseFaultSpec('AUTH/locked* 535 5.7.8 Account locked'));
  await using server = await startServer(capture, { authRequireTLS: false, authenticator: capture.authenticator() });
  const c = await greeted(server.port);
  const plain = (user: string) => Buffer.from(`\0${user}\0pw`).toString('base64');
  assert.equal((await c.cmd(`AUTH PLAIN ${plain('locked-out')}`)).text, '535 5.7.8 Account locked');
  assert.equal((await c.cmd(`AUTH PLAIN ${plain('alice')}`)).code, 235);
  c.close();
});

test("Mailpit's chaos API applies at MAIL, RCPT and AUTH; our rules API too; bad input is a 400", async () => {
  await using rig = await captureRig({ smtp: { authRequireTLS: false } });
  const chaos = await json<Record<string, { ErrorCode: number; Probability: number }>>(`${rig.base}/api/v1/chaos`);
  assert.deepEqual(chaos.body, { Sender: { ErrorCode: 451, Probability: 0 }, Recipient: { ErrorCode: 451, Probability: 0 }, Authentication: { ErrorCode: 535, Probability: 0 } });
  const set = await json<Record<string, { ErrorCode: number }>>(`${rig.base}/api/v1/chaos`, jsonBody('PUT', { Recipient: { ErrorCode: 552, Probability: 100 } }));
  assert.equal(set.body['Recipient']!.ErrorCode, 552);
  const c = await greeted(rig.smtp.port);
  await c.cmd('MAIL FROM:<a@example.com>');
  assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 552);
  assert.equal((await json(`${rig.base}/api/v1/chaos`, jsonBody('PUT', { Sender: { ErrorCode: 200, Probability: 5 } }))).status, 400);
  assert.equal((await json(`${rig.base}/api/v1/chaos`, jsonBody('PUT', { Sender: { ErrorCode: 451, Probability: 101 } }))).status, 400);
  await json(`${rig.base}/api/v1/chaos`, jsonBody('PUT', {}));
  assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250, 'an empty body resets the triggers');

  const rules = await json<unknown[]>(`${rig.base}/api/v1/faults`, jsonBody('PUT', [{ stage: 'rcpt', match: '/^full@/', reply: '452 4.2.2 Mailbox full' }]));
  assert.deepEqual(rules.body, [{ stage: 'RCPT', match: '/^full@/', reply: '452 4.2.2 Mailbox full' }]);
  assert.equal((await c.cmd('RCPT TO:<full@example.com>')).text, '452 4.2.2 Mailbox full');
  for (const bad of [[{ stage: 'HELO', drop: true }], [{ stage: 'RCPT', reply: '250 fine' }], [{ stage: 'RCPT', reply: '550 x', drop: true }], [{ stage: 'RCPT', match: '/(/', drop: true }], { stage: 'RCPT' }]) {
    const r = await json<{ Error: string }>(`${rig.base}/api/v1/faults`, jsonBody('PUT', bad));
    assert.equal(r.status, 400, JSON.stringify(bad));
  }
  assert.equal(rig.capture.faults.rules.length, 1, 'a bad PUT leaves the rules as they were');
  await json(`${rig.base}/api/v1/faults`, { method: 'DELETE' });
  assert.equal((await c.cmd('RCPT TO:<full@example.com>')).code, 250);
  c.close();
});

test('the rule syntax, and its errors', async () => {
  assert.deepEqual(ruleToJSON(parseFaultSpec('AUTH%50 535 5.7.8 Try again')), { stage: 'AUTH', match: undefined, nth: undefined, probability: 50, reply: '535 5.7.8 Try again' });
  assert.deepEqual(ruleToJSON(parseFaultSpec('data#3 drop')), { stage: 'DATA', match: undefined, nth: 3, probability: undefined, drop: true });
  assert.deepEqual(ruleToJSON(parseFaultSpec('MAIL/*@x.test delay=2000')).delay, 2000);
  for (const bad of ['RCPT', 'RCPT 250 ok', 'XXXX drop', 'MAIL delay=999999999', 'RCPT 550 a\r\nb', 'RCPT#0 drop']) {
    assert.throws(() => parseFaultSpec(bad), FaultSyntaxError, bad);
  }
  const cli = await runCli(['-n', '-c', 'Capture', '--fault', 'RCPT 250 fine']);
  assert.equal(cli.code, 2);
  assert.match(cli.stderr, /argument --fault: a fault reply must be a 4xx or 5xx/);
});
