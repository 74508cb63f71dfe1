/**
 * LMTP (RFC 2033) over a raw client: LHLO only, one reply per accepted recipient in RCPT order,
 * per-recipient handler replies and failures, Mailbox delivering per recipient, pipelining,
 * the Unix-socket listener (the usual deployment), HELP, and the CLI's --lmtp/--unix/--unix-mode.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { UnixSocketController } from '../src/controller.js';
import type { Handler, SMTPServer } from '../src/handler.js';
import { Mailbox } from '../src/handlers/mailbox.js';
import type { Envelope, RcptOptions, Session } from '../src/session.js';
import { RawClient, startServer, type SMTPReply } from './helpers.js';
import { CliProcess, freePort } from './cli-util.js';
import { MemoryLogger } from './commands-util.js';
import {
  MARKER,
  codes,
  connect,
  expectCmd,
  greet,
  readMaildir,
  repliesUntilClose,
  repliesUntilMarker,
  sleep,
  snapshot,
  waitMaildir,
  withTempDir,
  type Seen,
} from './lmtp-util.js';

/** A handler whose handleDATA answers with `answer(envelope)`, and that refuses `refused@`. */
class Scripted implements Handler {
  seen: Seen[] = [];
  constructor(private readonly answer: (envelope: Envelope) => string | string[] | Promise<string | string[]>) {}
  handleRCPT(_s: SMTPServer, _ss: Session, envelope: Envelope, address: string, _o: RcptOptions): string {
    if (address.startsWith('refused@')) return '550 5.1.1 no such user';
    envelope.rcptTos.push(address);
    return '250 2.1.5 OK';
  }
  handleDATA(_s: SMTPServer, _ss: Session, envelope: Envelope): string | string[] | Promise<string | string[]> {
    this.seen.push(snapshot(envelope));
    return this.answer(envelope);
  }
}

const lmtp = (handler: Handler, options = {}) => startServer(handler, { lmtp: true, logger: new MemoryLogger(), ...options });

/** A reply's code and enhanced code (of its last line), e.g. '250 2.1.5', or just '354'. */
function sig(r: SMTPReply): string {
  const m = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})(?: |$)/.exec(r.lines.at(-1)!);
  return m === null ? String(r.code) : `${r.code} ${m[1]}`;
}

/** MAIL, the RCPTs (each expecting `rcptCodes[i]`, default 250), DATA; then the body with its end. */
function transaction(from: string, rcpts: string[], body: string): string {
  return `MAIL FROM:<${from}>\r\n` + rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join('') + 'DATA\r\n' + body + '.\r\n';
}

/** Sends one transaction pipelined, with the marker after it; returns the replies after 354. */
async function deliver(c: RawClient, from: string, rcpts: string[], body: string, rcptCodes?: number[]) {
  c.send(transaction(from, rcpts, body) + MARKER);
  const got = await repliesUntilMarker(c);
  const expected = [250, ...(rcptCodes ?? rcpts.map(() => 250)), 354];
  assert.deepEqual(codes(got.slice(0, expected.length)), expected, JSON.stringify(got.map((r) => r.text)));
  return got.slice(expected.length);
}

test('LHLO answers 250 and lists PIPELINING, ENHANCEDSTATUSCODES and CHUNKING (RFC 2033 §4.1)', async () => {
  await using server = await lmtp(new Scripted(() => '250 OK'));
  const { c, hello } = await greet(server.port);
  try {
    const keywords = hello.lines.slice(1).map((l) => l.slice(4).split(' ')[0]);
    for (const k of ['PIPELINING', 'ENHANCEDSTATUSCODES', 'CHUNKING', '8BITMIME', 'SIZE']) {
      assert.ok(keywords.includes(k), `LHLO lacks ${k}: ${hello.text}`);
    }
    assert.match(hello.lines[0]!, /^250-/);
    assert.match(hello.lines.at(-1)!, /^250 /);
  } finally {
    c.close();
  }
});

test('HELO and EHLO get 500 in LMTP and greet nothing; LHLO then works', async () => {
  await using server = await lmtp(new Scripted(() => '250 OK'));
  const c = await connect(server.port);
  try {
    const helo = await c.cmd('HELO client.example');
    assert.equal(helo.code, 500, helo.text);
    const ehlo = await c.cmd('EHLO client.example');
    assert.equal(ehlo.code, 500, ehlo.text);
    // Neither greeted: a transaction still needs LHLO.
    assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 503);
    await expectCmd(c, 'LHLO client.example', 250);
    await expectCmd(c, 'MAIL FROM:<a@example.com>', 250);
    // And after LHLO, EHLO is still not LMTP.
    assert.equal((await c.cmd('EHLO client.example')).code, 500);
  } finally {
    c.close();
  }
});

test('after DATA: one reply per accepted recipient, in RCPT order; a refused recipient gets none', async () => {
  const handler = new Scripted((env) => env.rcptTos.map((r) => `250 2.0.0 <${r}> stored`));
  await using server = await lmtp(handler);
  const { c } = await greet(server.port);
  try {
    const rcpts = ['one@example.com', 'refused@example.com', 'two@example.com', 'refused@example.org', 'three@example.com'];
    const after = await deliver(c, 'from@example.com', rcpts, 'Subject: t\r\n\r\nhi\r\n', [250, 550, 250, 550, 250]);
    assert.deepEqual(
      after.map((r) => r.text),
      ['250 2.0.0 <one@example.com> stored', '250 2.0.0 <two@example.com> stored', '250 2.0.0 <three@example.com> stored'],
    );
    assert.equal(handler.seen.length, 1);
    assert.deepEqual(handler.seen[0]!.rcptTos, ['one@example.com', 'two@example.com', 'three@example.com']);
    // The same forward-path twice is two recipients and two replies (RFC 2033 §4.2).
    const twice = await deliver(c, 'from@example.com', ['dup@example.com', 'dup@example.com'], 'x\r\n');
    assert.deepEqual(codes(twice), [250, 250]);
  } finally {
    c.close();
  }
});

test('DATA with no accepted recipient is 503 (RFC 2033 §4.2)', async () => {
  const handler = new Scripted(() => '250 OK');
  await using server = await lmtp(handler);
  const { c } = await greet(server.port);
  try {
    await expectCmd(c, 'MAIL FROM:<a@example.com>', 250);
    await expectCmd(c, 'RCPT TO:<refused@example.com>', 550);
    await expectCmd(c, 'DATA', 503);
    assert.equal(handler.seen.length, 0);
  } finally {
    c.close();
  }
});

test('handleDATA returning one string: that reply for every recipient', async () => {
  await using server = await lmtp(new Scripted(async () => {
    await sleep(5);
    return '250 2.0.0 stored for all';
  }));
  const { c } = await greet(server.port);
  try {
    const after = await deliver(c, 'a@example.com', ['x@example.com', 'y@example.com', 'z@example.com'], 'body\r\n');
    assert.deepEqual(after.map((r) => r.text), Array(3).fill('250 2.0.0 stored for all'));
  } finally {
    c.close();
  }
});

test('handleDATA returning a list: each recipient its own reply (enhanced codes filled in)', async () => {
  await using server = await lmtp(new Scripted(() => ['250 2.0.0 ok x', '452 4.2.2 mailbox full', '550 no such mailbox']));
  const { c } = await greet(server.port);
  try {
    const after = await deliver(c, 'a@example.com', ['x@example.com', 'y@example.com', 'z@example.com'], 'body\r\n');
    assert.deepEqual(after.map((r) => r.text), ['250 2.0.0 ok x', '452 4.2.2 mailbox full', '550 5.0.0 no such mailbox']);
    // The session goes on.
    await expectCmd(c, 'NOOP', 250);
  } finally {
    c.close();
  }
});

test('handleDATA returning a list of the wrong length: every recipient gets the same 4xx', async () => {
  for (const list of [['250 OK'], ['250 OK', '250 OK', '250 OK', '250 OK'], []]) {
    const handler = new Scripted(() => list);
    await using server = await lmtp(handler);
    const { c } = await greet(server.port);
    try {
      const after = await deliver(c, 'a@example.com', ['x@example.com', 'y@example.com', 'z@example.com'], 'body\r\n');
      assert.equal(after.length, 3, `list of ${list.length}: ${JSON.stringify(after.map((r) => r.text))}`);
      for (const r of after) {
        assert.equal(Math.floor(r.code / 100), 4, `list of ${list.length}: ${r.text}`);
        assert.equal(r.text, after[0]!.text);
      }
      await expectCmd(c, 'NOOP', 250);
    } finally {
      c.close();
    }
  }
});

test('handleDATA throwing: every recipient gets the same 451, the session goes on', async () => {
  await using server = await lmtp(new Scripted(() => Promise.reject(new Error('disk on fire'))));
  const { c } = await greet(server.port);
  try {
    const after = await deliver(c, 'a@example.com', ['x@example.com', 'y@example.com'], 'body\r\n');
    assert.deepEqual(codes(after), [451, 451]);
    assert.ok(!after.some((r) => r.text.includes('disk on fire')), 'the error text must not leak');
    await expectCmd(c, 'NOOP', 250);
  } finally {
    c.close();
  }
});

test('handleDATA list with one invalid entry: only that recipient gets 451', async () => {
  await using server = await lmtp(new Scripted(() => ['250 2.0.0 fine', 'not a reply', '354 go ahead']));
  const { c } = await greet(server.port);
  try {
    const after = await deliver(c, 'a@example.com', ['x@example.com', 'y@example.com', 'z@example.com'], 'body\r\n');
    assert.deepEqual(codes(after), [250, 451, 451]);
  } finally {
    c.close();
  }
});

test('handleDeliver: called once per recipient in order; a throw fails only that recipient', async () => {
  const calls: Array<{ rcpt: string; content: string }> = [];
  const handler: Handler = {
    async handleDeliver(_s, _ss, envelope, recipient) {
      calls.push({ rcpt: recipient, content: envelope.originalContent!.toString('latin1') });
      await sleep(2);
      if (recipient === 'broken@example.com') throw new Error('quota database down');
      return `250 2.0.0 <${recipient}> delivered`;
    },
  };
  await using server = await lmtp(handler);
  const { c } = await greet(server.port);
  try {
    const rcpts = ['a@example.com', 'broken@example.com', 'c@example.com'];
    const after = await deliver(c, 's@example.com', rcpts, 'Subject: d\r\n\r\n..dot\r\n');
    assert.deepEqual(codes(after), [250, 451, 250]);
    assert.equal(after[0]!.text, '250 2.0.0 <a@example.com> delivered');
    assert.equal(after[2]!.text, '250 2.0.0 <c@example.com> delivered');
    assert.deepEqual(calls.map((x) => x.rcpt), rcpts);
    for (const x of calls) assert.equal(x.content, 'Subject: d\r\n\r\n.dot\r\n');
  } finally {
    c.close();
  }
});

test('Mailbox in LMTP mode: one file for all recipients, one reply each, body byte-exact', async () => {
  await withTempDir(async (dir) => {
    const maildir = join(dir, 'Maildir');
    await using server = await lmtp(new Mailbox(maildir));
    const { c } = await greet(server.port);
    try {
      // Dot-stuffed line, a bare LF, a bare CR, 8-bit bytes, trailing spaces: kept as received.
      const wire = 'From: a@example.com\r\nSubject: per rcpt\r\n\r\n..leading dot\r\nbare\nlf and bare\rcr\r\n\xe9t\xe9  \r\n';
      const expected = Buffer.from('From: a@example.com\r\nSubject: per rcpt\r\n\r\n.leading dot\r\nbare\nlf and bare\rcr\r\n\xe9t\xe9  \r\n', 'latin1');
      c.send(Buffer.from(transaction('sender@example.com', ['u1@example.com', 'u2@example.com', 'u3@example.com'], wire) + MARKER, 'latin1'));
      const got = await repliesUntilMarker(c);
      assert.deepEqual(codes(got), [250, 250, 250, 250, 354, 250, 250, 250], JSON.stringify(got.map((r) => r.text)));
      assert.match(got[5]!.text, /u1@example\.com/);
      assert.match(got[6]!.text, /u2@example\.com/);
      assert.match(got[7]!.text, /u3@example\.com/);
      const files = await readMaildir(maildir);
      assert.equal(files.length, 1, 'one Maildir, one file');
      assert.deepEqual(files.map((f) => f.rcptTo), ['u1@example.com, u2@example.com, u3@example.com']);
      for (const f of files) {
        assert.equal(f.mailFrom, 'sender@example.com');
        assert.match(f.peer, /^127\.0\.0\.1:\d+$/);
        assert.ok(f.body.equals(expected), `${f.name}: ${JSON.stringify(f.body.toString('latin1'))}`);
      }
    } finally {
      c.close();
    }
  });
});

test('pipelined LMTP transactions are answered in order, exactly once', async () => {
  const handler = new Scripted(async (env) => {
    await sleep(3);
    return env.rcptTos.map((r) => `250 2.0.0 <${r}> ok`);
  });
  await using server = await lmtp(handler);
  const c = await connect(server.port);
  try {
    c.send(
      'LHLO client.example\r\n' +
        transaction('s1@example.com', ['a1@example.com', 'refused@example.com', 'b1@example.com'], 'Subject: 1\r\n\r\none\r\n') +
        'NOOP\r\n' +
        transaction('s2@example.com', ['a2@example.com', 'b2@example.com', 'c2@example.com'], 'Subject: 2\r\n\r\n..two\r\n') +
        'RSET\r\n' +
        transaction('s3@example.com', ['a3@example.com'], 'Subject: 3\r\n\r\nthree\r\n') +
        'QUIT\r\n',
    );
    const got = await repliesUntilClose(c);
    assert.deepEqual(
      got.map(sig),
      [
        '250', // LHLO (multi-line, its lines carry no enhanced code)
        '250 2.1.0', '250 2.1.5', '550 5.1.1', '250 2.1.5', '354', '250 2.0.0', '250 2.0.0', // tx 1
        '250 2.0.0', // NOOP
        '250 2.1.0', '250 2.1.5', '250 2.1.5', '250 2.1.5', '354', '250 2.0.0', '250 2.0.0', '250 2.0.0', // tx 2
        '250 2.0.0', // RSET
        '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', // tx 3
        '221 2.0.0', // QUIT
      ],
    );
    // The per-recipient replies name their recipients, in RCPT order.
    assert.match(got[6]!.text, /<a1@/);
    assert.match(got[7]!.text, /<b1@/);
    assert.match(got[14]!.text, /<a2@/);
    assert.match(got[15]!.text, /<b2@/);
    assert.match(got[16]!.text, /<c2@/);
    assert.deepEqual(
      handler.seen.map((m) => [m.mailFrom, m.rcptTos, m.content.toString('latin1')]),
      [
        ['s1@example.com', ['a1@example.com', 'b1@example.com'], 'Subject: 1\r\n\r\none\r\n'],
        ['s2@example.com', ['a2@example.com', 'b2@example.com', 'c2@example.com'], 'Subject: 2\r\n\r\n.two\r\n'],
        ['s3@example.com', ['a3@example.com'], 'Subject: 3\r\n\r\nthree\r\n'],
      ],
    );
  } finally {
    c.close();
  }
});

test('a message over the size limit: one 552 per accepted recipient (RFC 2033 §4.2)', async () => {
  const handler = new Scripted(() => '250 OK');
  await using server = await lmtp(handler, { dataSizeLimit: 100 });
  const { c } = await greet(server.port);
  try {
    const after = await deliver(c, 'a@example.com', ['x@example.com', 'y@example.com'], 'Subject: big\r\n\r\n' + 'z'.repeat(300) + '\r\n');
    assert.deepEqual(
      codes(after),
      [552, 552],
      `an LMTP client reads one reply per recipient after the body; got ${JSON.stringify(after.map((r) => r.text))}`,
    );
    assert.equal(handler.seen.length, 0);
  } finally {
    c.close();
  }
});

test('many failing recipients: every one gets its reply, not a 421 for too many errors', async () => {
  // 25 recipients accepted at RCPT, each refused after the body (e.g. over quota): one DATA,
  // 25 replies (RFC 2033 §4.2). Per-recipient replies are not 25 client errors.
  const n = 25;
  await using server = await lmtp(new Scripted((env) => env.rcptTos.map(() => '452 4.2.2 mailbox full')));
  const { c } = await greet(server.port);
  try {
    const rcpts = Array.from({ length: n }, (_, i) => `user${i}@example.com`);
    const after = await deliver(c, 'a@example.com', rcpts, 'x\r\n');
    assert.deepEqual(codes(after), Array(n).fill(452), JSON.stringify(after.map((r) => r.text)));
    await expectCmd(c, 'NOOP', 250);
  } finally {
    c.close();
  }
});

test('HELP lists LHLO, not HELO or EHLO; HELP LHLO gives its syntax', async () => {
  await using server = await lmtp(new Scripted(() => '250 OK'));
  const c = await connect(server.port);
  try {
    const help = await c.cmd('HELP');
    assert.equal(help.code, 214, help.text);
    assert.match(help.text, /\bLHLO\b/);
    assert.doesNotMatch(help.text, /\bHELO\b/);
    assert.doesNotMatch(help.text, /\bEHLO\b/);
    const lhlo = await c.cmd('HELP LHLO');
    assert.equal(lhlo.code, 214);
    assert.match(lhlo.text, /LHLO hostname/);
    assert.equal((await c.cmd('HELP EHLO')).code, 501);
    assert.equal((await c.cmd('HELP HELO')).code, 501);
  } finally {
    c.close();
  }
});

test('UnixSocketController with lmtp: mode 0o660, LHLO, per-recipient delivery, socket removed on stop', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'lmtp.sock');
    const maildir = join(dir, 'Maildir');
    const controller = new UnixSocketController(new Mailbox(maildir), { unixSocket: path, lmtp: true, mode: 0o660 });
    await controller.start();
    let c: RawClient | null = null;
    try {
      const st = await lstat(path);
      assert.ok(st.isSocket(), 'a socket file');
      assert.equal(st.mode & 0o777, 0o660, `mode ${(st.mode & 0o777).toString(8)}`);
      ({ c } = await greet(path));
      assert.equal((await c.cmd('EHLO client.example')).code, 500);
      const after = await deliver(c, 'from@example.com', ['p@example.com', 'q@example.com'], 'Subject: unix\r\n\r\nvia socket\r\n');
      assert.deepEqual(codes(after), [250, 250]);
      const files = await readMaildir(maildir);
      assert.deepEqual(files.map((f) => f.rcptTo), ['p@example.com, q@example.com']);
      for (const f of files) assert.equal(f.body.toString(), 'Subject: unix\r\n\r\nvia socket\r\n');
    } finally {
      c?.close();
      await controller.stop();
    }
    await assert.rejects(lstat(path), { code: 'ENOENT' });
  });
});

/** Runs the CLI with args; waits until it listens; runs fn; kills it. */
async function withCli(args: string[], fn: (p: CliProcess) => Promise<void>): Promise<void> {
  const p = new CliProcess(args);
  try {
    await p.listening();
    await fn(p);
  } finally {
    await p.stop();
  }
}

test('CLI: -n --lmtp --unix PATH --unix-mode 660 -c Mailbox DIR delivers per recipient', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'lmtp.sock');
    const maildir = join(dir, 'Maildir');
    await withCli(['-n', '--lmtp', '--unix', path, '--unix-mode', '660', '-c', 'Mailbox', maildir], async (p) => {
      assert.match(p.stderr, /LMTP/);
      const st = await lstat(path);
      assert.ok(st.isSocket());
      assert.equal(st.mode & 0o777, 0o660, `mode ${(st.mode & 0o777).toString(8)}`);
      const { c, hello } = await greet(path);
      try {
        assert.ok(hello.lines.some((l) => /^250[ -]CHUNKING$/.test(l)), hello.text);
        assert.equal((await c.cmd('HELO client.example')).code, 500);
        const after = await deliver(c, 'from@example.com', ['r1@example.com', 'r2@example.com', 'r3@example.com'], 'Subject: cli\r\n\r\nhello\r\n');
        assert.deepEqual(codes(after), [250, 250, 250]);
        assert.equal((await c.cmd('QUIT')).code, 221);
      } finally {
        c.close();
      }
      const files = await waitMaildir(maildir, 1);
      assert.deepEqual(files.map((f) => f.rcptTo), ['r1@example.com, r2@example.com, r3@example.com']);
      for (const f of files) {
        assert.equal(f.mailFrom, 'from@example.com');
        assert.equal(f.body.toString(), 'Subject: cli\r\n\r\nhello\r\n');
      }
    });
  });
});

test('CLI: --lmtp -l 127.0.0.1:PORT -c Mailbox DIR delivers per recipient over TCP', async () => {
  await withTempDir(async (dir) => {
    const maildir = join(dir, 'Maildir');
    const port = await freePort();
    await withCli(['-n', '--lmtp', '-l', `127.0.0.1:${port}`, '-c', 'Mailbox', maildir], async () => {
      const { c } = await greet(port);
      try {
        assert.equal((await c.cmd('EHLO client.example')).code, 500);
        const after = await deliver(c, 'from@example.com', ['t1@example.com', 'refused-not@example.com'], 'Subject: tcp\r\n\r\nhi\r\n');
        assert.deepEqual(codes(after), [250, 250]);
        assert.match(after[0]!.text, /t1@example\.com/);
        assert.match(after[1]!.text, /refused-not@example\.com/);
      } finally {
        c.close();
      }
      const files = await waitMaildir(maildir, 1);
      assert.deepEqual(files.map((f) => f.rcptTo), ['t1@example.com, refused-not@example.com']);
      for (const f of files) assert.match(f.peer, /^127\.0\.0\.1:\d+$/);
    });
  });
});
