/** The built-in handlers, called directly (no sockets): exact output, Maildir on disk, CLI args. */
import { test, describe } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { promisify } from 'node:util';
import { BufferedSink, Debugging, Mailbox, Sink, builtinHandlers } from '../src/handlers/index.js';
import { builtinLoaders } from '../src/handlers/builtin.js';
import { UsageError } from '../src/handler.js';
import { Envelope, Session } from '../src/session.js';

const server = {} as never;

function makeSession(): Session {
  return new Session({ address: '127.0.0.1', port: 1234, family: 'IPv4' });
}

function makeEnvelope(content: Buffer | string, mailFrom = 'anne@example.com', rcptTos = ['bart@example.com']): Envelope {
  const envelope = new Envelope();
  envelope.mailFrom = mailFrom;
  envelope.rcptTos = [...rcptTos];
  envelope.rcptOptions = rcptTos.map(() => ({}));
  envelope.content = content;
  envelope.originalContent = Buffer.isBuffer(content) ? content : Buffer.from(content, 'utf8');
  return envelope;
}

async function debugOutput(envelope: Envelope): Promise<string> {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  let writes = 0;
  const write = stream.write.bind(stream);
  stream.write = ((...args: Parameters<typeof write>) => {
    writes++;
    return write(...args);
  }) as typeof stream.write;
  const reply = await new Debugging(stream).handleDATA(server, makeSession(), envelope);
  assert.equal(reply, '250 OK');
  assert.equal(writes, 1, 'one write per message');
  return Buffer.concat(chunks).toString('utf8');
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'tsmtpd-handlers-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('Debugging', () => {
  const expected = [
    '---------- MESSAGE FOLLOWS ----------',
    'Subject: hi',
    'From: anne@example.com',
    'X-Peer: 127.0.0.1:1234',
    '',
    'body line 1',
    'body line 2',
    '------------ END MESSAGE ------------',
    '',
  ].join('\n');

  test('CRLF content', async () => {
    const out = await debugOutput(makeEnvelope(Buffer.from('Subject: hi\r\nFrom: anne@example.com\r\n\r\nbody line 1\r\nbody line 2\r\n')));
    assert.equal(out, expected);
  });

  test('LF content given as a string', async () => {
    const out = await debugOutput(makeEnvelope('Subject: hi\nFrom: anne@example.com\n\nbody line 1\nbody line 2\n'));
    assert.equal(out, expected);
  });

  test('mail options, then a blank separator line', async () => {
    const envelope = makeEnvelope(Buffer.from('Subject: x\r\n\r\nbody\r\n'));
    envelope.mailParams = ['SIZE=10', 'BODY=8BITMIME'];
    const out = await debugOutput(envelope);
    assert.equal(
      out,
      [
        '---------- MESSAGE FOLLOWS ----------',
        "mail options: ['SIZE=10', 'BODY=8BITMIME']",
        '',
        'Subject: x',
        'X-Peer: 127.0.0.1:1234',
        '',
        'body',
        '------------ END MESSAGE ------------',
        '',
      ].join('\n'),
    );
  });

  test('rcpt options are printed only when some recipient has one', async () => {
    const envelope = makeEnvelope(Buffer.from('Subject: x\r\n\r\nb\r\n'), 'a@example.com', ['b@example.com', 'c@example.com']);
    envelope.rcptOptions = [{ unknown: { NOTIFY: 'NEVER' } }, {}];
    const out = await debugOutput(envelope);
    assert.ok(out.startsWith("---------- MESSAGE FOLLOWS ----------\nrcpt options: [['NOTIFY=NEVER'], []]\n\nSubject: x\n"), out);
  });

  test('content without a blank line gets no X-Peer', async () => {
    const out = await debugOutput(makeEnvelope(Buffer.from('just one line\r\nand another')));
    assert.equal(out, '---------- MESSAGE FOLLOWS ----------\njust one line\nand another\n------------ END MESSAGE ------------\n');
  });

  test('bare CR splits lines; invalid UTF-8 becomes U+FFFD', async () => {
    const out = await debugOutput(makeEnvelope(Buffer.from([0x61, 0x0d, 0x62, 0xff, 0x0a, 0x0a, 0x63])));
    assert.equal(out, '---------- MESSAGE FOLLOWS ----------\na\nb\ufffd\nX-Peer: 127.0.0.1:1234\n\nc\n------------ END MESSAGE ------------\n');
  });

  test('fromCli', () => {
    assert.equal(Debugging.fromCli().stream, process.stdout);
    assert.equal(Debugging.fromCli('stdout').stream, process.stdout);
    assert.equal(Debugging.fromCli('stderr').stream, process.stderr);
    assert.throws(() => Debugging.fromCli('stdin'), { name: 'UsageError', message: 'Debugging usage: [stdout|stderr]' });
    assert.throws(() => Debugging.fromCli('stdout', 'stderr'), UsageError);
  });
});

describe('Sink', () => {
  test('accepts and discards, without reading the stream', async () => {
    assert.equal(await new Sink().handleDATAStream(server, makeSession(), makeEnvelope('x'), Readable.from([])), '250 OK');
    assert.equal(await new BufferedSink().handleDATA(server, makeSession(), makeEnvelope('x')), '250 OK');
  });

  test('fromCli takes nothing or "buffered"', () => {
    assert.ok(Sink.fromCli() instanceof Sink);
    assert.ok(Sink.fromCli('buffered') instanceof BufferedSink);
    assert.throws(() => Sink.fromCli('x'), { name: 'UsageError', message: 'Sink usage: [buffered]' });
  });
});

describe('Mailbox', () => {
  test('creates tmp/new/cur and stores the message byte for byte after the X- headers', () =>
    withTempDir(async (dir) => {
      const mailDir = join(dir, 'Maildir');
      const box = new Mailbox(mailDir);
      // Bare LF inside the body and a forged X-MailFrom must survive untouched.
      const raw = Buffer.from('X-MailFrom: forged@evil.example\r\nSubject: hi\r\n\r\nline one\nstill one\r\n\xff\r\n', 'latin1');
      const envelope = makeEnvelope(raw, 'anne@example.com', ['bart@example.com', 'cate@example.com']);
      envelope.content = 'decoded text that must not be stored';
      assert.equal(await box.handleDATA(server, makeSession(), envelope), '250 OK');

      for (const sub of ['tmp', 'new', 'cur']) {
        const info = await stat(join(mailDir, sub));
        assert.ok(info.isDirectory());
        assert.equal(info.mode & 0o077, 0, `${sub} is private`);
      }
      const files = await readdir(join(mailDir, 'new'));
      assert.equal(files.length, 1);
      assert.match(files[0]!, /^\d+\.M\d+P\d+Q\d+\.[^/:]+$/);
      const stored = await readFile(join(mailDir, 'new', files[0]!));
      const expected = Buffer.concat([
        Buffer.from('X-Peer: 127.0.0.1:1234\r\nX-MailFrom: anne@example.com\r\nX-RcptTo: bart@example.com, cate@example.com\r\n'),
        raw,
      ]);
      assert.deepEqual(stored, expected);
      assert.deepEqual(await readdir(join(mailDir, 'tmp')), []);
    }));

  test('init() makes missing parents, private, and accepts a Maildir that already exists', () =>
    withTempDir(async (dir) => {
      const mailDir = join(dir, 'a', 'b', 'Maildir');
      await new Mailbox(mailDir).init();
      for (const path of [join(dir, 'a'), join(dir, 'a', 'b'), mailDir, join(mailDir, 'new')]) {
        const info = await stat(path);
        assert.ok(info.isDirectory(), path);
        assert.equal(info.mode & 0o077, 0, `${path} is private`);
      }
      await new Mailbox(mailDir).init();
      await assert.rejects(new Mailbox('/proc/tsmtpd-no-such-maildir').init(), { code: 'ENOENT' });
    }));

  test('LF-only messages get LF header lines; deliver() returns the path and takes recipients', () =>
    withTempDir(async (dir) => {
      const box = new Mailbox(dir);
      await box.init();
      const envelope = makeEnvelope('Subject: lf\n\nbody\n', '', ['x@example.com', 'y@example.com']);
      const path = await box.deliver(makeSession(), envelope, ['y@example.com']);
      assert.ok(path.startsWith(join(dir, 'new')));
      assert.equal(await readFile(path, 'utf8'), 'X-Peer: 127.0.0.1:1234\nX-MailFrom: \nX-RcptTo: y@example.com\nSubject: lf\n\nbody\n');
    }));

  test('CR/LF in an address cannot inject a header', () =>
    withTempDir(async (dir) => {
      const box = new Mailbox(dir);
      const envelope = makeEnvelope('Subject: s\r\n\r\nb\r\n', 'a@example.com\r\nBcc: victim@example.com', ['r@example.com\nX-Evil: 1']);
      const path = await box.deliver(makeSession(), envelope);
      const text = await readFile(path, 'utf8');
      const headerLines = text.split('\r\n\r\n')[0]!.split('\r\n');
      assert.deepEqual(headerLines, [
        'X-Peer: 127.0.0.1:1234',
        'X-MailFrom: a@example.com\\x0d\\x0aBcc: victim@example.com',
        'X-RcptTo: r@example.com\\x0aX-Evil: 1',
        'Subject: s',
      ]);
    }));

  test('concurrent deliveries produce distinct files and leave tmp/ empty', () =>
    withTempDir(async (dir) => {
      const box = new Mailbox(dir);
      const n = 50;
      const paths = await Promise.all(
        Array.from({ length: n }, (_, i) => box.deliver(makeSession(), makeEnvelope(`Subject: m${i}\r\n\r\nbody ${i}\r\n`))),
      );
      assert.equal(new Set(paths).size, n);
      const files = await readdir(join(dir, 'new'));
      assert.equal(files.length, n);
      assert.deepEqual(await readdir(join(dir, 'tmp')), []);
      const subjects = new Set<string>();
      for (const f of files) subjects.add(/Subject: (m\d+)/.exec(await readFile(join(dir, 'new', f), 'utf8'))![1]!);
      assert.equal(subjects.size, n);
    }));

  test('a failed delivery throws and leaves nothing in tmp/ or new/', () =>
    withTempDir(async (dir) => {
      const box = new Mailbox(dir);
      await box.init();
      const envelope = makeEnvelope('Subject: s\r\n\r\nb\r\n');
      // new/ replaced by a file: the move fails after tmp/ was written.
      await rm(join(dir, 'new'), { recursive: true });
      await writeFile(join(dir, 'new'), '');
      await assert.rejects(box.handleDATA(server, makeSession(), envelope));
      assert.deepEqual(await readdir(join(dir, 'tmp')), []);
    }));

  test("Python's mailbox.Maildir reads the result", () =>
    withTempDir(async (dir) => {
      const box = new Mailbox(dir);
      await box.deliver(makeSession(), makeEnvelope(Buffer.from('X-MailFrom: forged@evil.example\r\nSubject: first\r\n\r\nhello\r\n'), 'anne@example.com'));
      await box.deliver(makeSession(), makeEnvelope('Subject: second\n\nhello\n', 'bart@example.com'));
      const script = [
        'import mailbox, sys',
        'box = mailbox.Maildir(sys.argv[1], create=False)',
        'for m in sorted(box, key=lambda m: m["Subject"]):',
        '    print(m["X-MailFrom"], m["Subject"], m["X-Peer"], sep="|")',
      ].join('\n');
      const { stdout } = await promisify(execFile)('python3', ['-c', script, dir], { timeout: 20_000 });
      assert.equal(stdout, 'anne@example.com|first|127.0.0.1:1234\nbart@example.com|second|127.0.0.1:1234\n');
    }));

  test('fromCli', () => {
    assert.equal(Mailbox.fromCli('/tmp/x').mailDir, '/tmp/x');
    assert.throws(() => Mailbox.fromCli(), { name: 'UsageError', message: 'The directory for the maildir is required' });
    assert.throws(() => Mailbox.fromCli('a', 'b'), { name: 'UsageError', message: 'Too many arguments for Mailbox handler' });
  });
});

test("the CLI's lazy built-ins load the same classes as builtinHandlers", async () => {
  assert.deepEqual(Object.keys(builtinLoaders).sort(), Object.keys(builtinHandlers).sort());
  for (const [name, load] of Object.entries(builtinLoaders)) assert.equal(await load(), builtinHandlers[name], name);
});

test('builtinHandlers maps bare names to classes', () => {
  assert.deepEqual(Object.keys(builtinHandlers).sort(), ['Capture', 'Debugging', 'JetStream', 'Mailbox', 'Proxy', 'Sink']);
  assert.equal(builtinHandlers['Sink'], Sink);
  assert.ok(builtinHandlers['Mailbox']!.fromCli!('/tmp/y') instanceof Mailbox);
});
