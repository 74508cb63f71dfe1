/**
 * The command table over real sockets: the `commands` option adds, replaces and removes verbs;
 * a custom verb gets HELP, EHLO and the STARTTLS/AUTH gates like a built-in one; a command may
 * read a continuation line; SMTPError from a hook is the reply; HELP answers 214 or 504 for
 * every command; VRFY of a non-address is 501; dataLineLimit as aiosmtpd's line_length_limit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Command } from '../src/context.js';
import { Controller } from '../src/controller.js';
import { SMTP } from '../src/smtp.js';
import type { Handler } from '../src/handler.js';
import { SMTPError } from '../src/hooks.js';
import { Recorder, greeted, startServer } from './helpers.js';
import { expect, expectCode, sendMessage } from './commands-util.js';
import { CliProcess, freePort, runCli } from './cli-util.js';

const xping: Command = {
  syntax: 'XPING [text]',
  ehlo: () => 'XPING',
  run(ctx, arg) {
    ctx.reply(arg === '' ? '250 2.0.0 PONG' : `250 2.0.0 PONG ${arg}`);
  },
};

test('a custom verb runs, is in HELP and EHLO; a replaced built-in runs instead; a removed one is unrecognized', async () => {
  const noop: Command = { syntax: 'NOOP', run: (ctx) => ctx.reply('250 2.0.0 my noop') };
  await using server = await startServer({}, { commands: { XPING: xping, noop, VRFY: null } });
  const c = await greeted(server.port);
  const ehlo = await c.cmd('EHLO again.example');
  const keywords = ehlo.lines.slice(1).map((l) => l.slice(4));
  assert.ok(keywords.includes('XPING'), ehlo.text);
  assert.equal(keywords.at(-1), 'HELP', 'HELP stays the last keyword');
  assert.deepEqual((await expect(c, 'XPING', 250)).lines, ['250 2.0.0 PONG']);
  assert.deepEqual((await expect(c, 'xping hi', 250)).lines, ['250 2.0.0 PONG hi']);
  assert.deepEqual((await expect(c, 'NOOP', 250)).lines, ['250 2.0.0 my noop']);
  assert.match((await expect(c, 'VRFY someone', 500)).text, /not recognized/);
  const help = await expect(c, 'HELP', 214);
  assert.match(help.text, /\bXPING\b/);
  assert.doesNotMatch(help.text, /\bVRFY\b/);
  assert.deepEqual((await expect(c, 'HELP XPING', 214)).lines, ['214 2.0.0 Syntax: XPING [text]']);
  await expect(c, 'HELP VRFY', 504);
  c.close();
});

test('a custom verb is refused before STARTTLS and AUTH unless it says it is allowed', async () => {
  const early: Command = { ...xping, allowedBeforeStartTLS: true, allowedBeforeAuth: true };
  await using server = await startServer({}, { requireStartTLS: true, commands: { XPING: xping, XEARLY: early } });
  const c = await greeted(server.port);
  await expect(c, 'XPING', 530);
  await expect(c, 'XEARLY', 250);
  c.close();
  await using auth = await startServer({}, { authRequired: true, commands: { XPING: xping, XEARLY: early } });
  const d = await greeted(auth.port);
  await expect(d, 'XPING', 530);
  await expect(d, 'XEARLY', 250);
  d.close();
});

test('a command may read a continuation line, pipelined or sent later', async () => {
  const notes: string[] = [];
  const xnote: Command = {
    syntax: 'XNOTE',
    async run(ctx) {
      ctx.reply('354 one line please');
      const line = await ctx.readLine();
      if (line === null) return;
      notes.push(line.toString('latin1'));
      ctx.reply('250 2.0.0 noted');
    },
  };
  await using server = await startServer({}, { commands: { XNOTE: xnote } });
  const c = await greeted(server.port);
  c.send('XNOTE\r\nfirst note\r\nNOOP\r\n');
  expectCode(await c.reply(), 354);
  expectCode(await c.reply(), 250);
  expectCode(await c.reply(), 250);
  expectCode(await c.cmd('XNOTE'), 354);
  expectCode(await c.cmd('second note'), 250);
  assert.deepEqual(notes, ['first note', 'second note']);
  c.close();
});

test('a command throwing a bug drops the connection; the server serves on', async () => {
  const broken: Command = { syntax: 'XBUG', run: () => { throw new Error('bug'); } };
  const logger = { debugEnabled: false, debug() {}, info() {}, warn() {}, error() {} };
  await using server = await startServer({}, { commands: { XBUG: broken }, logger });
  const c = await greeted(server.port);
  c.line('XBUG');
  await c.waitClosed();
  const d = await greeted(server.port);
  await expect(d, 'NOOP', 250);
  d.close();
});

test('bad command tables are refused at construction', () => {
  assert.throws(() => new Controller({}, { commands: { 'X PING': xping } }), TypeError);
  assert.throws(() => new Controller({}, { commands: { XPING: { syntax: 'XPING' } as unknown as Command } }), TypeError);
  assert.throws(() => new SMTP({}, { commands: { 'X:': xping } }), TypeError);
});

test('a hook that throws SMTPError gets exactly that reply; other throws stay 451', async () => {
  const handler: Handler = {
    handleRCPT(_s, _session, envelope, address) {
      if (address.startsWith('no@')) throw new SMTPError(550, 'No such user here', '5.1.1');
      if (address.startsWith('bare@')) throw new SMTPError(450, 'Try later');
      if (address.startsWith('bug@')) throw new Error('internal detail');
      envelope.rcptTos.push(address);
      return '250 OK';
    },
    async handleDATA() {
      throw new SMTPError(554, 'Content rejected', '5.7.1');
    },
  };
  const logger = { debugEnabled: false, debug() {}, info() {}, warn() {}, error() {} };
  await using server = await startServer(handler, { logger });
  const c = await greeted(server.port);
  await expect(c, 'MAIL FROM:<a@b.org>', 250);
  assert.deepEqual((await expect(c, 'RCPT TO:<no@x.org>', 550)).lines, ['550 5.1.1 No such user here']);
  assert.deepEqual((await expect(c, 'RCPT TO:<bare@x.org>', 450)).lines, ['450 4.0.0 Try later']);
  const bug = await expect(c, 'RCPT TO:<bug@x.org>', 451);
  assert.doesNotMatch(bug.text, /internal detail/);
  await expect(c, 'RCPT TO:<ok@x.org>', 250);
  await expect(c, 'DATA', 354);
  c.send('x\r\n.\r\n');
  assert.deepEqual((await c.reply()).lines, ['554 5.7.1 Content rejected']);
  c.close();
});

test('HELP answers 214 for every command the server implements (AUTH, STARTTLS, BDAT, XCLIENT), 504 otherwise', async () => {
  await using server = await startServer({}, { xclientAllow: ['127.0.0.1', '::1'] });
  const c = await greeted(server.port);
  for (const verb of ['AUTH', 'STARTTLS', 'BDAT', 'XCLIENT', 'EHLO', 'vrfy']) {
    const r = await expect(c, `HELP ${verb}`, 214);
    assert.match(r.text, new RegExp(`Syntax: ${verb.toUpperCase()}\\b`));
  }
  await expect(c, 'HELP LHLO', 504);
  await expect(c, 'HELP NOSUCH', 504);
  c.close();
});

test('VRFY of something that is no user name or mailbox is 501', async () => {
  await using server = await startServer({});
  const c = await greeted(server.port);
  await expect(c, 'VRFY @@', 501);
  await expect(c, 'VRFY <a@@b>', 501);
  await expect(c, 'VRFY someone', 252);
  await expect(c, 'VRFY <someone@example.org>', 252);
  c.close();
});

test('DATA lines over dataLineLimit: the body is read, then 500 5.5.2; BDAT is exempt; 0 means none', async () => {
  const rec = new Recorder();
  await using server = await startServer(rec, { dataLineLimit: 1001 });
  const c = await greeted(server.port);
  const fits = 'a'.repeat(999) + '\r\n';
  expectCode(await sendMessage(c, 'a@b.org', ['c@d.org'], fits), 250);
  const long = 'b'.repeat(1000) + '\r\n';
  const r = await sendMessage(c, 'a@b.org', ['c@d.org'], `ok\r\n${long}after\r\n`);
  assert.deepEqual(r.lines, ['500 5.5.2 Line too long']);
  assert.equal(rec.messages.length, 1);
  // The transaction is over and the connection goes on.
  await expect(c, 'RCPT TO:<c@d.org>', 503);
  await expect(c, 'MAIL FROM:<a@b.org>', 250);
  await expect(c, 'RCPT TO:<c@d.org>', 250);
  const chunk = Buffer.from(long);
  c.send(Buffer.concat([Buffer.from(`BDAT ${chunk.length} LAST\r\n`), chunk]));
  expectCode(await c.reply(), 250);
  assert.equal(rec.messages.length, 2);
  c.close();
  await using free = await startServer(rec, { dataLineLimit: 0 });
  const d = await greeted(free.port);
  expectCode(await sendMessage(d, 'a@b.org', ['c@d.org'], 'c'.repeat(5000) + '\r\n'), 250);
  d.close();
});

test('a body both too big and with a too-long line: the limit crossed first decides', async () => {
  await using server = await startServer({}, { dataSizeLimit: 2000 });
  const c = await greeted(server.port);
  const r1 = await sendMessage(c, 'a@b.org', ['c@d.org'], 'x'.repeat(1500) + '\r\n' + 'y\r\n'.repeat(1000));
  assert.equal(r1.code, 500, r1.text);
  const r2 = await sendMessage(c, 'a@b.org', ['c@d.org'], 'y\r\n'.repeat(1000) + 'x'.repeat(1500) + '\r\n');
  assert.equal(r2.code, 552, r2.text);
  c.close();
});

test('the CLI takes --data-line-limit (0: none) and refuses a bad value', async () => {
  const port = await freePort();
  const p = new CliProcess(['-n', '-c', 'Sink', '-l', `127.0.0.1:${port}`, '--data-line-limit', '0']);
  try {
    await p.listening();
    const c = await greeted(port);
    expectCode(await sendMessage(c, 'a@b.org', ['c@d.org'], 'l'.repeat(3000) + '\r\n'), 250);
    c.close();
  } finally {
    await p.stop();
  }
  const bad = await runCli(['-n', '--data-line-limit', 'many']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--data-line-limit: invalid int value: 'many'/);
});
