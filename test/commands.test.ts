/**
 * The SMTP command set over real sockets: RFC 5321 plus the rules of DESIGN.md §3 (replies,
 * sequence, paths, ESMTP parameters, enhanced status codes, limits).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostname as osHostname } from 'node:os';
import type { Handler } from '../src/handler.js';
import type { Envelope } from '../src/session.js';
import { VERSION } from '../src/version.js';
import { RawClient, Recorder, greeted, startServer, type SMTPReply } from './helpers.js';
import { ENHANCED_LINE, assertEnhanced, expect, expectCode, sendMessage } from './commands-util.js';

const EXTENSIONS = ['SIZE 33554432', '8BITMIME', 'PIPELINING', 'ENHANCEDSTATUSCODES', 'HELP'];
/** Extensions implemented after this file's brief was written (RFC 3030); allowed, not required. */
const LATER = ['CHUNKING', 'BINARYMIME'];

/** Asserts the EHLO keywords are exactly `expected` plus, optionally, the LATER ones. */
function assertKeywords(reply: SMTPReply, expected: string[]): void {
  const kw = ehloKeywords(reply);
  assert.equal(new Set(kw).size, kw.length, `duplicate EHLO keyword: ${reply.text}`);
  assert.deepEqual(kw.filter((k) => !LATER.includes(k)).sort(), [...expected].sort(), reply.text);
  // RFC 3030 §3: BINARYMIME is only usable with (and advertised with) CHUNKING.
  if (kw.includes('BINARYMIME')) assert.ok(kw.includes('CHUNKING'), reply.text);
}

/** The keyword lines of an EHLO reply (the first line, the hostname, removed). */
function ehloKeywords(reply: SMTPReply): string[] {
  return reply.lines.slice(1).map((l) => l.slice(4));
}

async function connect(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  expectCode(await c.reply(), 220, 'greeting');
  return c;
}

// ---- greeting, HELO, EHLO --------------------------------------------------------------------

test('greeting is 220 <hostname> <ident> from the options', async () => {
  await using server = await startServer({}, { serverHostname: 'mx.test', ident: 'TestMTA 9.9' });
  const c = await RawClient.connect(server.port);
  const g = await c.reply();
  assert.deepEqual(g.lines, ['220 mx.test TestMTA 9.9']);
  c.close();
});

test('default greeting is 220 <machine name> tsmtpd <version>', async () => {
  await using server = await startServer({});
  const c = await RawClient.connect(server.port);
  const g = await c.reply();
  assert.deepEqual(g.lines, [`220 ${osHostname()} tsmtpd ${VERSION}`]);
  c.close();
});

test('HELO and EHLO without an argument get 501; with one, 250 naming the server', async () => {
  await using server = await startServer({}, { serverHostname: 'mx.test' });
  const c = await connect(server.port);
  for (const cmd of ['HELO', 'EHLO', 'HELO ', 'EHLO   ']) {
    const r = await c.cmd(cmd);
    expectCode(r, 501, JSON.stringify(cmd));
    assertEnhanced(r, cmd);
  }
  // Not greeted yet: the failed HELO/EHLO did not count.
  await expect(c, 'MAIL FROM:<a@b.org>', 503);
  const helo = await expect(c, 'HELO client.example', 250);
  assert.deepEqual(helo.lines, ['250 mx.test']);
  const ehlo = await expect(c, 'EHLO client.example', 250);
  assert.equal(ehlo.lines[0], '250-mx.test');
  c.close();
});

test('EHLO lists exactly SIZE, 8BITMIME, PIPELINING, ENHANCEDSTATUSCODES, HELP without SMTPUTF8', async () => {
  await using server = await startServer({}, { serverHostname: 'mx.test', enableSMTPUTF8: false });
  const c = await connect(server.port);
  const r = await expect(c, 'EHLO client.example', 250);
  assert.equal(r.lines[0], '250-mx.test');
  assertKeywords(r, EXTENSIONS);
  // Continuation marks: '-' on every line but the last.
  r.lines.forEach((l, i) => assert.equal(l[3], i === r.lines.length - 1 ? ' ' : '-', l));
  c.close();
});

test('EHLO adds SMTPUTF8 when enableSMTPUTF8 is on', async () => {
  await using server = await startServer({}, { serverHostname: 'mx.test', enableSMTPUTF8: true });
  const c = await connect(server.port);
  const r = await expect(c, 'EHLO client.example', 250);
  assertKeywords(r, [...EXTENSIONS, 'SMTPUTF8']);
  c.close();
});

test('Controller enables SMTPUTF8 by default (DESIGN.md §2, as aiosmtpd\'s Controller)', async () => {
  await using server = await startServer({});
  const c = await greeted(server.port);
  const r = await c.cmd('EHLO again.example');
  assert.ok(ehloKeywords(r).includes('SMTPUTF8'), `EHLO without SMTPUTF8: ${r.text}`);
  c.close();
});

test('SIZE in EHLO follows dataSizeLimit, and MAIL SIZE= is judged against it', async () => {
  {
    await using server = await startServer({}, { dataSizeLimit: 1000 });
    const c = await connect(server.port);
    const r = await expect(c, 'EHLO client.example', 250);
    const kw = ehloKeywords(r);
    assert.ok(kw.includes('SIZE 1000'), r.text);
    assert.ok(!kw.includes('SIZE 33554432'), r.text);
    await expect(c, 'MAIL FROM:<a@b.org> SIZE=1001', 552);
    await expect(c, 'MAIL FROM:<a@b.org> SIZE=1000', 250);
    c.close();
  }
  {
    await using server = await startServer({}, { dataSizeLimit: 0 });
    const c = await connect(server.port);
    const r = await expect(c, 'EHLO client.example', 250);
    assert.ok(ehloKeywords(r).includes('SIZE'), r.text);
    await expect(c, 'MAIL FROM:<a@b.org> SIZE=99999999999', 250);
    c.close();
  }
});

test('a second EHLO (or a HELO) resets the transaction', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  await expect(c, 'MAIL FROM:<a@b.org>', 250);
  await expect(c, 'RCPT TO:<c@d.org>', 250);
  await expect(c, 'EHLO again.example', 250);
  await expect(c, 'RCPT TO:<c@d.org>', 503);
  await expect(c, 'DATA', 503);
  await expect(c, 'MAIL FROM:<x@b.org>', 250); // not "nested"
  await expect(c, 'HELO third.example', 250);
  await expect(c, 'RCPT TO:<c@d.org>', 503);
  expectCode(await sendMessage(c, 'y@b.org', ['z@d.org'], 'hi\r\n'), 250);
  assert.equal(handler.messages.length, 1);
  assert.equal(handler.messages[0]!.mailFrom, 'y@b.org');
  assert.deepEqual(handler.messages[0]!.rcptTos, ['z@d.org']);
  c.close();
});

// ---- sequence --------------------------------------------------------------------------------

test('MAIL, RCPT, DATA before HELO get 503', async () => {
  await using server = await startServer({});
  const c = await connect(server.port);
  for (const cmd of ['MAIL FROM:<a@b.org>', 'RCPT TO:<a@b.org>', 'DATA']) {
    const r = await expect(c, cmd, 503);
    assertEnhanced(r, cmd);
  }
  c.close();
});

test('nested MAIL, RCPT before MAIL, DATA before MAIL or RCPT get 503; DATA with an argument 501', async () => {
  await using server = await startServer({});
  const c = await greeted(server.port);
  await expect(c, 'RCPT TO:<a@b.org>', 503);
  await expect(c, 'DATA', 503);
  await expect(c, 'MAIL FROM:<a@b.org>', 250);
  await expect(c, 'MAIL FROM:<a@b.org>', 503);
  await expect(c, 'DATA', 503);
  await expect(c, 'RCPT TO:<c@d.org>', 250);
  await expect(c, 'DATA now', 501);
  // The 501 left the transaction as it was.
  await expect(c, 'DATA', 354);
  c.send('x\r\n.\r\n');
  expectCode(await c.reply(), 250);
  c.close();
});

// ---- paths -----------------------------------------------------------------------------------

test('null sender <> is accepted by MAIL and refused by RCPT', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  await expect(c, 'MAIL FROM:<>', 250);
  const r = await expect(c, 'RCPT TO:<>', 501);
  assertEnhanced(r);
  await expect(c, 'RCPT TO:<c@d.org>', 250);
  await expect(c, 'DATA', 354);
  c.send('bounce\r\n.\r\n');
  expectCode(await c.reply(), 250);
  assert.equal(handler.messages[0]!.mailFrom, '');
  c.close();
});

test('a source route is accepted and dropped', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  await expect(c, 'MAIL FROM:<@a.org,@b.org:u@d.org>', 250);
  await expect(c, 'RCPT TO:<@relay.example:v@e.org>', 250);
  await expect(c, 'DATA', 354);
  c.send('x\r\n.\r\n');
  expectCode(await c.reply(), 250);
  assert.equal(handler.messages[0]!.mailFrom, 'u@d.org');
  assert.deepEqual(handler.messages[0]!.rcptTos, ['v@e.org']);
  c.close();
});

test('unbracketed and space-after-colon paths are accepted; unbalanced brackets get 501', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  await expect(c, 'MAIL FROM:a@b.org', 250);
  await expect(c, 'RSET', 250);
  await expect(c, 'MAIL FROM: <a@b.org>', 250);
  await expect(c, 'RSET', 250);
  for (const bad of ['<a@b.org', 'a@b.org>', '<<a@b.org>>', '<a@b.org>>', '']) {
    const r = await expect(c, `MAIL FROM:${bad}`, 501);
    assertEnhanced(r, bad);
  }
  await expect(c, 'MAIL FROM:a@b.org', 250);
  await expect(c, 'RCPT TO:c@d.org', 250);
  await expect(c, 'RCPT TO: <e@d.org>', 250);
  await expect(c, 'RCPT TO:<f@d.org', 501);
  await expect(c, 'RCPT TO:f@d.org>', 501);
  await expect(c, 'DATA', 354);
  c.send('x\r\n.\r\n');
  expectCode(await c.reply(), 250);
  assert.equal(handler.messages[0]!.mailFrom, 'a@b.org');
  assert.deepEqual(handler.messages[0]!.rcptTos, ['c@d.org', 'e@d.org']);
  c.close();
});

test('<Postmaster> is a valid RCPT, not a valid MAIL', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  await expect(c, 'MAIL FROM:<Postmaster>', 501);
  await expect(c, 'MAIL FROM:<a@b.org>', 250);
  await expect(c, 'RCPT TO:<Postmaster>', 250);
  await expect(c, 'RCPT TO:<postmaster>', 250);
  await expect(c, 'RCPT TO:<webmaster>', 501);
  await expect(c, 'DATA', 354);
  c.send('x\r\n.\r\n');
  expectCode(await c.reply(), 250);
  assert.deepEqual(handler.messages[0]!.rcptTos, ['Postmaster', 'postmaster']);
  c.close();
});

test('more path forms: quoted local part, address literals; comments, a space before the colon, too long 501', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  await expect(c, 'MAIL FROM :<a@b.org>', 501);
  await expect(c, 'MAIL FROM:<a@b.org (comment)>', 501);
  await expect(c, 'MAIL FROM:<a b@b.org>', 501);
  await expect(c, 'MAIL FROM:<a@b.org>\tSIZE=10', 501);
  await expect(c, `MAIL FROM:<${'x'.repeat(65)}@b.org>`, 501);
  await expect(c, 'MAIL FROM:<"john doe"@b.org>', 250);
  await expect(c, 'RCPT TO:<u@[127.0.0.1]>', 250);
  await expect(c, 'RCPT TO:<v@[IPv6:::1]>', 250);
  await expect(c, 'RCPT TO:<w@[300.0.0.1]>', 501);
  await expect(c, 'RCPT TO:<u@-bad.org>', 501);
  await expect(c, 'DATA', 354);
  c.send('.\r\n'); // an empty message
  expectCode(await c.reply(), 250);
  assert.equal(handler.messages[0]!.mailFrom, '"john doe"@b.org');
  assert.deepEqual(handler.messages[0]!.rcptTos, ['u@[127.0.0.1]', 'v@[IPv6:::1]']);
  assert.equal(handler.messages[0]!.content.length, 0);
  c.close();
});

// ---- ESMTP parameters ------------------------------------------------------------------------

test('SIZE over dataSizeLimit 552, SIZE=abc 501, BODY=8BITMIME/7BIT ok, BODY=BINARYMIME 501 unless advertised', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler, { enableSMTPUTF8: false });
  const c = await connect(server.port);
  const binarymime = ehloKeywords(await expect(c, 'EHLO client.example', 250)).includes('BINARYMIME');
  let r = await expect(c, 'MAIL FROM:<a@b.org> SIZE=33554433', 552);
  assertEnhanced(r);
  r = await expect(c, 'MAIL FROM:<a@b.org> SIZE=abc', 501);
  assertEnhanced(r);
  await expect(c, 'MAIL FROM:<a@b.org> SIZE=', 501);
  await expect(c, 'MAIL FROM:<a@b.org> BODY=FOO', 501);
  if (binarymime) {
    // RFC 3030 §3: BINARYMIME is accepted at MAIL, and then DATA is refused (BDAT only).
    await expect(c, 'MAIL FROM:<a@b.org> BODY=BINARYMIME', 250);
    await expect(c, 'RCPT TO:<c@d.org>', 250);
    await expect(c, 'DATA', 503);
    await expect(c, 'RSET', 250);
  } else {
    await expect(c, 'MAIL FROM:<a@b.org> BODY=BINARYMIME', 501);
  }
  await expect(c, 'MAIL FROM:<a@b.org> BODY=7BIT', 250);
  await expect(c, 'RSET', 250);
  await expect(c, 'MAIL FROM:<a@b.org> SIZE=33554432 BODY=8BITMIME', 250);
  await expect(c, 'RCPT TO:<c@d.org>', 250);
  await expect(c, 'DATA', 354);
  c.send('x\r\n.\r\n');
  expectCode(await c.reply(), 250);
  assert.deepEqual(handler.messages[0]!.mailParams, ['SIZE=33554432', 'BODY=8BITMIME']);
  c.close();
});

test('SIZE: 20 digits over the limit 552, 21 digits or a duplicate 501', async () => {
  await using server = await startServer({});
  const c = await greeted(server.port);
  await expect(c, 'MAIL FROM:<a@b.org> SIZE=99999999999999999999', 552);
  await expect(c, 'MAIL FROM:<a@b.org> SIZE=999999999999999999999', 501);
  await expect(c, 'MAIL FROM:<a@b.org> SIZE=10 SIZE=20', 501);
  await expect(c, 'MAIL FROM:<a@b.org> SIZE=-1', 501);
  await expect(c, 'MAIL FROM:<a@b.org>  SIZE=10   BODY=7BIT ', 250);
  c.close();
});

test('SMTPUTF8 parameter: 555 when not enabled', async () => {
  await using server = await startServer({}, { enableSMTPUTF8: false });
  const c = await greeted(server.port);
  const r = await expect(c, 'MAIL FROM:<a@b.org> SMTPUTF8', 555);
  assertEnhanced(r);
  await expect(c, 'MAIL FROM:<a@b.org>', 250);
  c.close();
});

test('SMTPUTF8 enabled: the parameter is accepted, a non-ASCII address needs it (553)', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler, { enableSMTPUTF8: true });
  const c = await greeted(server.port);
  let r = await expect(c, 'MAIL FROM:<üser@bücher.example>', 553);
  assertEnhanced(r);
  await expect(c, 'MAIL FROM:<a@b.org>', 250);
  r = await expect(c, 'RCPT TO:<jösé@example.org>', 553); // the transaction is not SMTPUTF8
  assertEnhanced(r);
  await expect(c, 'RSET', 250);
  await expect(c, 'MAIL FROM:<üser@bücher.example> SMTPUTF8', 250);
  await expect(c, 'RCPT TO:<jösé@example.org>', 250);
  await expect(c, 'DATA', 354);
  c.send('x\r\n.\r\n');
  expectCode(await c.reply(), 250);
  assert.equal(handler.messages[0]!.mailFrom, 'üser@bücher.example');
  assert.deepEqual(handler.messages[0]!.rcptTos, ['jösé@example.org']);
  c.close();
});

test('a non-ASCII command line without SMTPUTF8 enabled gets 500 and the session goes on', async () => {
  await using server = await startServer({}, { enableSMTPUTF8: false });
  const c = await greeted(server.port);
  let r = await expect(c, 'MAIL FROM:<üser@b.org>', 500);
  assertEnhanced(r);
  r = await expect(c, 'MAIL FROM:<user@b.org> SMTPUTF8', 555);
  await expect(c, 'MAIL FROM:<user@b.org>', 250);
  c.close();
});

test('an unknown parameter gets 555; with acceptUnknownParameters it reaches envelope.mailOptions', async () => {
  {
    await using server = await startServer({});
    const c = await greeted(server.port);
    const r = await expect(c, 'MAIL FROM:<a@b.org> FOO=bar', 555);
    assertEnhanced(r);
    await expect(c, 'MAIL FROM:<a@b.org>', 250);
    await expect(c, 'RCPT TO:<c@d.org> FOO=bar', 555);
    c.close();
  }
  {
    const seen: Envelope[] = [];
    const handler: Handler = {
      handleDATA(_s, _session, envelope) {
        seen.push(envelope);
        return '250 OK';
      },
    };
    await using server = await startServer(handler, { acceptUnknownParameters: true });
    const c = await greeted(server.port);
    await expect(c, 'MAIL FROM:<a@b.org> FOO=bar XYZZY', 250);
    await expect(c, 'RCPT TO:<c@d.org> NOTIFY=NEVER', 250);
    await expect(c, 'DATA', 354);
    c.send('x\r\n.\r\n');
    expectCode(await c.reply(), 250);
    assert.equal(seen[0]!.mailOptions.unknown?.FOO, 'bar');
    assert.equal(seen[0]!.mailOptions.unknown?.XYZZY, true);
    assert.deepEqual(seen[0]!.mailParams, ['FOO=bar', 'XYZZY']);
    assert.deepEqual(seen[0]!.rcptOptions, [{ unknown: { NOTIFY: 'NEVER' } }]);
    c.close();
  }
});

test('parameters after HELO (not EHLO) get 501', async () => {
  await using server = await startServer({});
  const c = await connect(server.port);
  await expect(c, 'HELO client.example', 250);
  await expect(c, 'MAIL FROM:<a@b.org> SIZE=10', 501);
  await expect(c, 'MAIL FROM:<a@b.org> BODY=8BITMIME', 501);
  await expect(c, 'MAIL FROM:<a@b.org>', 250);
  await expect(c, 'RCPT TO:<c@d.org> FOO=bar', 501);
  await expect(c, 'RCPT TO:<c@d.org>', 250);
  c.close();
});

// ---- enhanced status codes -------------------------------------------------------------------

test('after EHLO every reply carries an enhanced status code', async () => {
  await using server = await startServer(
    {},
    { maxRecipients: 1, maxErrors: 100, maxUnrecognizedCommands: 100, dataSizeLimit: 100, enableSMTPUTF8: false },
  );
  const c = await greeted(server.port);
  const commands = [
    'NOOP',
    'NOOP hello',
    'VRFY someone',
    'VRFY',
    'EXPN list',
    'HELP',
    'HELP MAIL',
    'HELP BOGUS',
    'BOGUS',
    '',
    'RSET',
    'RSET now',
    'RCPT TO:<a@b.org>',
    'DATA',
    'MAIL FROM:<a@b.org> SIZE=101',
    'MAIL FROM:<a@b.org> SIZE=x',
    'MAIL FROM:<a@b.org> BODY=FOO',
    'MAIL FROM:<a@b.org> FOO=bar',
    'MAIL FROM:<a@b.org> SMTPUTF8',
    'MAIL FROM:<a@b.org',
    'MAIL FROM:<üser@b.org>',
    'MAIL TO:<a@b.org>',
    'MAIL FROM:<a@b.org>',
    'MAIL FROM:<a@b.org>',
    'DATA',
    'RCPT TO:<>',
    'RCPT FROM:<a@b.org>',
    'RCPT TO:<c@d.org>',
    'RCPT TO:<e@d.org>', // over maxRecipients
    'DATA x',
    'X'.repeat(600),
  ];
  for (const cmd of commands) {
    const r = await c.cmd(cmd);
    assertEnhanced(r, cmd.slice(0, 40));
  }
  // The body over dataSizeLimit and the end of data.
  await expect(c, 'DATA', 354);
  c.send('y'.repeat(200) + '\r\n.\r\n');
  let r = await c.reply();
  expectCode(r, 552, 'oversized body');
  assertEnhanced(r, 'oversized body');
  expectCode(await sendMessage(c, 'a@b.org', ['c@d.org'], 'ok\r\n'), 250);
  // A bare LF line.
  c.send('NOOP\n');
  c.send('\r\n'); // ends the junk line: whatever the engine answers, it must carry a code
  r = await c.reply();
  assertEnhanced(r, 'bare LF');
  r = await c.reply();
  assertEnhanced(r, 'after bare LF');
  r = await expect(c, 'QUIT', 221);
  assertEnhanced(r, 'QUIT');
  await c.waitClosed();
});

// ---- RSET, NOOP, QUIT, VRFY, EXPN, HELP ------------------------------------------------------

test('RSET resets the transaction; RSET with an argument gets 501', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  await expect(c, 'MAIL FROM:<a@b.org>', 250);
  await expect(c, 'RCPT TO:<c@d.org>', 250);
  await expect(c, 'RSET', 250);
  await expect(c, 'RCPT TO:<c@d.org>', 503);
  await expect(c, 'DATA', 503);
  await expect(c, 'MAIL FROM:<x@b.org>', 250);
  await expect(c, 'RSET please', 501);
  await expect(c, 'MAIL FROM:<x@b.org>', 503); // the 501 reset nothing
  await expect(c, 'RCPT TO:<y@d.org>', 250);
  await expect(c, 'DATA', 354);
  c.send('x\r\n.\r\n');
  expectCode(await c.reply(), 250);
  assert.equal(handler.messages[0]!.mailFrom, 'x@b.org');
  assert.deepEqual(handler.messages[0]!.rcptTos, ['y@d.org']);
  // RSET before any greeting is fine too.
  const d = await connect(server.port);
  await expect(d, 'RSET', 250);
  d.close();
  c.close();
});

test('NOOP with and without an argument gets 250, also before HELO', async () => {
  await using server = await startServer({});
  const c = await connect(server.port);
  await expect(c, 'NOOP', 250);
  await expect(c, 'EHLO client.example', 250);
  await expect(c, 'NOOP', 250);
  await expect(c, 'NOOP anything at all', 250);
  c.close();
});

test('QUIT gets 221 and the server closes; nothing pipelined after QUIT runs', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  c.send('QUIT\r\nMAIL FROM:<a@b.org>\r\nNOOP\r\n');
  const r = await c.reply();
  expectCode(r, 221);
  assertEnhanced(r);
  await c.waitClosed();
  assert.ok(await c.noReplyWithin(50), 'no reply after 221');
  // QUIT with an argument is a syntax error; the session goes on.
  const d = await greeted(server.port);
  await expect(d, 'QUIT now', 501);
  await expect(d, 'NOOP', 250);
  await expect(d, 'QUIT', 221);
  await d.waitClosed();
});

test('VRFY with an argument 252, without 501; EXPN 502', async () => {
  await using server = await startServer({});
  const c = await greeted(server.port);
  await expect(c, 'VRFY someone', 252);
  await expect(c, 'VRFY <someone@b.org>', 252);
  await expect(c, 'VRFY', 501);
  await expect(c, 'EXPN staff', 502);
  await expect(c, 'EXPN', 502);
  await expect(c, 'NOOP', 250);
  c.close();
});

test('HELP lists the commands (214), HELP MAIL gives the syntax, HELP BOGUS 504 (RFC 5321 §4.1.1.8)', async () => {
  await using server = await startServer({});
  const c = await greeted(server.port);
  let r = await expect(c, 'HELP', 214);
  for (const verb of ['HELO', 'EHLO', 'MAIL', 'RCPT', 'DATA', 'RSET', 'NOOP', 'QUIT', 'VRFY', 'HELP']) {
    assert.match(r.text, new RegExp(`\\b${verb}\\b`), `HELP lists ${verb}: ${r.text}`);
  }
  r = await expect(c, 'HELP MAIL', 214);
  assert.match(r.text, /MAIL FROM:<address>/);
  r = await expect(c, 'help rcpt', 214);
  assert.match(r.text, /RCPT TO:<address>/);
  await expect(c, 'HELP BOGUS', 504);
  await expect(c, 'NOOP', 250);
  c.close();
});

// ---- garbage and case ------------------------------------------------------------------------

test('an unknown command gets 500 and the session goes on; so does an empty line', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  let r = await expect(c, 'XYZZY plugh', 500);
  assertEnhanced(r);
  r = await expect(c, '', 500);
  assertEnhanced(r);
  await expect(c, 'MAIL FROM:<a@b.org>', 250);
  await expect(c, 'FROB', 500);
  await expect(c, '   ', 500);
  await expect(c, 'RCPT TO:<c@d.org>', 250);
  await expect(c, 'DATA', 354);
  c.send('x\r\n.\r\n');
  expectCode(await c.reply(), 250);
  assert.equal(handler.messages.length, 1);
  c.close();
});

test('verbs and the FROM:/TO: keywords are case-insensitive', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler);
  const c = await connect(server.port);
  await expect(c, 'ehlo client.example', 250);
  await expect(c, 'mail from:<a@b.org> size=10 body=8bitmime', 250);
  await expect(c, 'RcPt To:<c@d.org>', 250);
  await expect(c, 'noop', 250);
  await expect(c, 'Vrfy x', 252);
  await expect(c, 'data', 354);
  c.send('x\r\n.\r\n');
  expectCode(await c.reply(), 250);
  await expect(c, 'rset', 250);
  await expect(c, 'Help', 214);
  await expect(c, 'qUiT', 221);
  await c.waitClosed();
  assert.equal(handler.messages[0]!.mailFrom, 'a@b.org');
  assert.deepEqual(handler.messages[0]!.rcptTos, ['c@d.org']);
});

// ---- many messages, limits -------------------------------------------------------------------

test('many messages in one session', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  const N = 25;
  for (let i = 0; i < N; i++) {
    const r = await sendMessage(c, `s${i}@b.org`, [`r${i}@d.org`, `q${i}@d.org`], `Subject: ${i}\r\n\r\nbody ${i}\r\n`);
    expectCode(r, 250, `message ${i}`);
  }
  await expect(c, 'QUIT', 221);
  await c.waitClosed();
  assert.equal(handler.messages.length, N);
  handler.messages.forEach((m, i) => {
    assert.equal(m.mailFrom, `s${i}@b.org`);
    assert.deepEqual(m.rcptTos, [`r${i}@d.org`, `q${i}@d.org`]);
    assert.equal(m.content.toString(), `Subject: ${i}\r\n\r\nbody ${i}\r\n`);
  });
});

test('whole transactions pipelined in one write are answered in order, once each', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler);
  const c = await greeted(server.port);
  let batch = '';
  for (let i = 0; i < 3; i++) batch += `MAIL FROM:<s${i}@b.org>\r\nRCPT TO:<r${i}@d.org>\r\nDATA\r\nbody ${i}\r\n.\r\n`;
  batch += 'NOOP\r\n';
  c.send(batch);
  const codes: number[] = [];
  for (let i = 0; i < 13; i++) codes.push((await c.reply()).code);
  assert.deepEqual(codes, [250, 250, 354, 250, 250, 250, 354, 250, 250, 250, 354, 250, 250]);
  assert.ok(await c.noReplyWithin(50), 'no extra reply');
  assert.deepEqual(
    handler.messages.map((m) => [m.mailFrom, m.rcptTos, m.content.toString()]),
    [0, 1, 2].map((i) => [`s${i}@b.org`, [`r${i}@d.org`], `body ${i}\r\n`]),
  );
  c.close();
});

test('maxRecipients: the 4th RCPT of 3 allowed gets 452, the message goes to the first 3', async () => {
  const handler = new Recorder();
  await using server = await startServer(handler, { maxRecipients: 3 });
  const c = await greeted(server.port);
  await expect(c, 'MAIL FROM:<a@b.org>', 250);
  for (const r of ['1@d.org', '2@d.org', '3@d.org']) await expect(c, `RCPT TO:<${r}>`, 250);
  const r = await expect(c, 'RCPT TO:<4@d.org>', 452);
  assertEnhanced(r);
  await expect(c, 'DATA', 354);
  c.send('x\r\n.\r\n');
  expectCode(await c.reply(), 250);
  assert.deepEqual(handler.messages[0]!.rcptTos, ['1@d.org', '2@d.org', '3@d.org']);
  // A new transaction starts counting again.
  await expect(c, 'MAIL FROM:<a@b.org>', 250);
  for (const r of ['5@d.org', '6@d.org', '7@d.org']) await expect(c, `RCPT TO:<${r}>`, 250);
  await expect(c, 'RCPT TO:<8@d.org>', 452);
  c.close();
});

test('the ENHANCED_LINE regex the other tests rely on', () => {
  assert.match('250 2.1.0 OK', ENHANCED_LINE);
  assert.match('250-2.0.0 a', ENHANCED_LINE);
  assert.doesNotMatch('250 OK', ENHANCED_LINE);
  assert.doesNotMatch('220 mx.test tsmtpd', ENHANCED_LINE);
});
