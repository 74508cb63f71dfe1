/**
 * Postfix's smtp-source (Debian package postfix; no Postfix daemon runs) as a real LMTP client
 * (-L): against the CLI with Mailbox over a Unix socket and over TCP, with one and with three
 * recipients per message (three replies per message after the dot), and against a Controller
 * whose handler fails one recipient.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { Handler } from '../src/handler.js';
import { startServer } from './helpers.js';
import { CliProcess, freePort } from './cli-util.js';
import { MemoryLogger } from './commands-util.js';
import { requireTool, waitMaildir, withTempDir, type MaildirFile } from './lmtp-util.js';
import { assertRan, run, type Run } from './postfix-util.js';

const SMTP_SOURCE = '/usr/sbin/smtp-source';

/** Runs smtp-source with args, killed after `ms`; the whole -v log is kept (the checks count its replies). */
function smtpSource(args: string[], ms = 12000): Promise<Run> {
  return run(SMTP_SOURCE, args, '', ms, process.env, Infinity);
}

/**
 * The replies smtp-source -v logged after each "." (the end-of-data replies), one list per
 * message. Only for -s 1: with several sessions the log lines interleave.
 */
function endOfDataReplies(output: string): string[][] {
  const lines = output.split('\n').map((l) => l.replace(/^.*?smtp-source(?:\[\d+\])?: /, ''));
  const messages: string[][] = [];
  let current: string[] | null = null;
  for (const line of lines) {
    if (line === '.') {
      current = [];
      messages.push(current);
    } else if (/^(MAIL FROM|QUIT|LHLO|RSET)/.test(line)) {
      current = null;
    } else if (current !== null && line.startsWith('<<< ')) {
      current.push(line.slice(4));
    }
  }
  return messages;
}

async function withCli(args: string[], fn: () => Promise<void>): Promise<void> {
  const p = new CliProcess(args);
  try {
    await p.listening();
    await fn();
  } finally {
    await p.stop();
  }
}

/** One file per message (one Maildir: its recipients share it), X-RcptTo naming them all. */
function checkFiles(files: MaildirFile[], rcpts: string[], messages: number, size: number): void {
  assert.equal(files.length, messages, `files: ${files.map((f) => f.rcptTo).join(' | ')}`);
  for (const f of files) {
    assert.deepEqual(f.rcptTo.split(', ').sort(), [...rcpts].sort()); // in smtp-source's RCPT order
    assert.equal(f.mailFrom, 'from@example.com');
    assert.ok(f.body.length >= size, `${f.name}: ${f.body.length} bytes`);
    assert.match(f.body.toString('latin1'), /^From: <from@example\.com>\r\n/);
  }
}

async function cliCase(t: TestContext, where: 'unix' | 'tcp', rcptCount: number): Promise<void> {
  if (!requireTool(t, SMTP_SOURCE, 'postfix')) return;
  await withTempDir(async (dir) => {
    const maildir = join(dir, 'Maildir');
    const sock = join(dir, 'lmtp.sock');
    const port = where === 'tcp' ? await freePort() : 0;
    const listen = where === 'unix' ? ['--unix', sock] : ['-l', `127.0.0.1:${port}`];
    const target = where === 'unix' ? `unix:${sock}` : `127.0.0.1:${port}`;
    await withCli(['-n', '--lmtp', ...listen, '-c', 'Mailbox', maildir], async () => {
      const args = ['-v', '-L', '-s', '2', '-m', '10', '-t', 'rcpt@example.com', '-f', 'from@example.com', '-l', '1000'];
      if (rcptCount > 1) args.push('-r', String(rcptCount));
      const result = await smtpSource([...args, target]);
      assertRan(result, `smtp-source -L ${where}`);
      const rcpts = ['rcpt@example.com', '2rcpt@example.com', '3rcpt@example.com'].slice(0, rcptCount);
      const files = await waitMaildir(maildir, 10);
      checkFiles(files, rcpts, 10, 1000);
      // One reply per recipient after each dot, each naming its recipient. (Two sessions
      // interleave in the log, so count: 10 per recipient, and no other end-of-data reply.)
      const delivered = result.output.match(/<<< 250 2\.0\.0 <\d?rcpt@example\.com> delivered/g) ?? [];
      assert.equal(delivered.length, 10 * rcptCount, 'end-of-data replies');
      for (const rcpt of rcpts) {
        assert.equal(delivered.filter((r) => r.includes(`<${rcpt}>`)).length, 10, `replies for ${rcpt}`);
      }
      assert.doesNotMatch(result.output, /warning|fatal/);
    });
  });
}

test('smtp-source -L over a Unix socket to tsmtpd --lmtp --unix PATH -c Mailbox: 10 messages', (t) => cliCase(t, 'unix', 1));

test('smtp-source -L over TCP to tsmtpd --lmtp -l 127.0.0.1:PORT -c Mailbox: 10 messages', (t) => cliCase(t, 'tcp', 1));

test('smtp-source -L -r 3 over a Unix socket: 3 replies per message, 10 files', (t) => cliCase(t, 'unix', 3));

test('smtp-source -L -r 3 over TCP: 3 replies per message, 10 files', (t) => cliCase(t, 'tcp', 3));

test('smtp-source -L -A -d against a Controller failing one recipient: replies stay in step', async (t) => {
  if (!requireTool(t, SMTP_SOURCE, 'postfix')) return;
  const delivered: string[] = [];
  let messages = 0;
  const handler: Handler = {
    handleDeliver(_s, _ss, envelope, recipient) {
      if (recipient === envelope.rcptTos[0]) messages++;
      if (recipient === '2rcpt@example.com') return '452 4.2.2 mailbox full';
      delivered.push(recipient);
      return '250 2.0.0 delivered';
    },
  };
  await using server = await startServer(handler, { lmtp: true, logger: new MemoryLogger() });
  // -d: every message of a session over the same connection, so a missing or extra reply would
  // desynchronize the next transaction.
  const result = await smtpSource([
    '-v', '-A', '-d', '-L', '-s', '1', '-m', '10', '-r', '3',
    '-t', 'rcpt@example.com', '-f', 'from@example.com', '-l', '500', `127.0.0.1:${server.port}`,
  ]);
  assertRan(result, 'smtp-source -A -d -L');
  assert.equal(messages, 10);
  assert.equal(delivered.length, 20);
  const after = endOfDataReplies(result.output);
  assert.equal(after.length, 10);
  for (const replies of after) {
    assert.deepEqual(
      replies.map((r) => r.slice(0, 3)).sort(),
      ['250', '250', '452'],
      JSON.stringify(replies),
    );
  }
});

test('smtp-source -L -A: a message over the size limit gets one reply per recipient (no hang)', async (t) => {
  if (!requireTool(t, SMTP_SOURCE, 'postfix')) return;
  let delivered = 0;
  const handler: Handler = {
    handleDeliver() {
      delivered++;
      return '250 2.0.0 delivered';
    },
  };
  await using server = await startServer(handler, { lmtp: true, dataSizeLimit: 1000, logger: new MemoryLogger() });
  // smtp-source sends no SIZE= parameter: the limit is found at the end of the body.
  const result = await smtpSource(
    ['-v', '-A', '-L', '-s', '1', '-m', '2', '-r', '2', '-t', 'rcpt@example.com', '-f', 'from@example.com', '-l', '3000', `127.0.0.1:${server.port}`],
    5000,
  );
  assertRan(result, 'smtp-source -A -L with an oversized message');
  assert.equal(delivered, 0);
  const after = endOfDataReplies(result.output);
  assert.equal(after.length, 2);
  for (const replies of after) assert.deepEqual(replies.map((r) => r.slice(0, 3)), ['552', '552'], JSON.stringify(replies));
});
