/**
 * Attacks on the server's own trace headers (X-Peer, X-MailFrom, X-RcptTo) over real sockets,
 * DATA and BDAT, through Mailbox, Message and Proxy. Every result is read by real RFC 5322 readers
 * (Python's email package under two policies, and mailparser): whatever the client sends, the
 * first X-Peer, X-MailFrom and X-RcptTo each reader sees are exactly what the server accepted.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { simpleParser } from 'mailparser';
import { Mailbox } from '../src/handlers/mailbox.js';
import { AsyncMessage, type ParsedMail } from '../src/handlers/message.js';
import { Proxy } from '../src/handlers/proxy.js';
import { foldHeader, prepareMessage } from '../src/handlers/headers.js';
import { Envelope, Session } from '../src/session.js';
import { RawClient, Recorder, greeted, startServer } from './helpers.js';
import { withTempDir } from './lmtp-util.js';

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const NAMES = ['X-Peer', 'X-MailFrom', 'X-RcptTo'] as const;
type Trace = Record<(typeof NAMES)[number], string[]>;

/** Bodies a forger would send. None may change what a reader takes for our headers. */
const ATTACKS: Array<[string, string]> = [
  ['tab continuation', '\t, ceo@victim.example\r\nSubject: tab\r\n\r\nbody\r\n'],
  ['space continuation', ' ceo@victim.example\r\n\r\nbody\r\n'],
  ['LF-only continuation', '\tceo@victim.example\nSubject: lf\n\nbody\n'],
  ['bare LF then a continuation, CRLF after', '\n\tceo@victim.example\r\nSubject: lf\r\n\r\nbody\r\n'],
  ['bare CR then a continuation', '\r\tceo@victim.example\r\nSubject: cr\r\n\r\nbody\r\n'],
  ['vertical tab, form feed', '\x0b\x0cceo@victim.example\r\n\r\nbody\r\n'],
  ['no-break space (UTF-8)', '\u00a0ceo@victim.example\r\n\r\nbody\r\n'],
  ['no header block at all', 'just text, no headers\r\nX-RcptTo: ceo@victim.example\r\n'],
  ['forged copies after a real header', 'Subject: x\r\nX-RcptTo: ceo@victim.example\r\nX-Peer: 6.6.6.6:666\r\nX-MailFrom: ceo@victim.example\r\n\r\nb\r\n'],
  ['headers only, continuation first', '\t ceo@victim.example'],
];

/** Python's email package, compat32 and default policies: every value of our three names, unfolded. */
async function pythonReads(paths: string[]): Promise<Trace[]> {
  const script = [
    'import email, email.policy, json, re, sys',
    'out = []',
    'for path in sys.argv[1:]:',
    '    data = open(path, "rb").read()',
    '    for policy in (email.policy.compat32, email.policy.default):',
    '        m = email.message_from_bytes(data, policy=policy)',
    `        out.append({n: [re.sub(r"\\r?\\n", "", str(v)) for v in (m.get_all(n) or [])] for n in ${JSON.stringify(NAMES)}})`,
    'print(json.dumps(out))',
  ].join('\n');
  const { stdout } = await promisify(execFile)('python3', ['-c', script, ...paths], { timeout: 30_000 });
  return JSON.parse(stdout) as Trace[];
}

/** mailparser's raw header lines, unfolded. */
function mailparserReads(parsed: ParsedMail): Trace {
  const trace: Trace = { 'X-Peer': [], 'X-MailFrom': [], 'X-RcptTo': [] };
  for (const { key, line } of parsed.headerLines) {
    const name = NAMES.find((n) => n.toLowerCase() === key);
    if (name !== undefined) trace[name].push(line.replace(/\r?\n/g, '').slice(name.length + 1).trim());
  }
  return trace;
}

function assertOurs(trace: Trace, expected: Partial<Record<(typeof NAMES)[number], string>>, what: string): void {
  for (const [name, value] of Object.entries(expected) as Array<[(typeof NAMES)[number], string]>) {
    assert.equal(trace[name][0], value, `${what}: first ${name} ${JSON.stringify(trace)}`);
  }
}

/** One transaction, body by DATA (dot-stuffed) or by BDAT in two chunks. */
async function send(c: RawClient, body: string, mode: 'DATA' | 'BDAT', rcpts = ['b@example.com']): Promise<void> {
  assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
  for (const r of rcpts) assert.equal((await c.cmd(`RCPT TO:<${r}>`)).code, 250);
  const bytes = Buffer.from(body, 'utf8');
  if (mode === 'DATA') {
    assert.equal((await c.cmd('DATA')).code, 354);
    const text = bytes.toString('latin1').replace(/^\./gm, '..');
    c.send(Buffer.from(text + (text.endsWith('\r\n') ? '.\r\n' : '\r\n.\r\n'), 'latin1'));
  } else {
    // The first chunk is the first byte alone: the split must not matter.
    c.send(Buffer.concat([Buffer.from('BDAT 1\r\n'), bytes.subarray(0, 1)]));
    assert.equal((await c.reply()).code, 250);
    c.send(Buffer.concat([Buffer.from(`BDAT ${bytes.length - 1} LAST\r\n`), bytes.subarray(1)]));
  }
  assert.equal((await c.reply(15_000)).code, 250);
}

/** The bytes the client sent, as the server keeps them (DATA adds the CRLF the terminator needs). */
function received(body: string, mode: 'DATA' | 'BDAT'): Buffer {
  const bytes = Buffer.from(body, 'utf8');
  return mode === 'DATA' && !body.endsWith('\r\n') ? Buffer.concat([bytes, Buffer.from('\r\n')]) : bytes;
}

for (const mode of ['DATA', 'BDAT'] as const) {
  describe(`trace headers cannot be forged over ${mode}`, () => {
    test('Mailbox: Python and mailparser see only our values first; the client bytes follow unchanged', () =>
      withTempDir(async (dir) => {
        await using server = await startServer(new Mailbox(dir), { logger: quiet });
        const c = await greeted(server.port);
        try {
          for (const [, body] of ATTACKS) await send(c, body, mode);
          const peer = `127.0.0.1:${c.socket.localPort}`;
          const names = (await readdir(join(dir, 'new'))).sort((x, y) => Number(x.split('Q')[1]!.split('.')[0]) - Number(y.split('Q')[1]!.split('.')[0]));
          assert.equal(names.length, ATTACKS.length);
          const paths = names.map((n) => join(dir, 'new', n));
          const python = await pythonReads(paths);
          const expected = { 'X-Peer': peer, 'X-MailFrom': 'a@example.com', 'X-RcptTo': 'b@example.com' };
          for (const [i, [what, body]] of ATTACKS.entries()) {
            assertOurs(python[2 * i]!, expected, `${what} (compat32)`);
            assertOurs(python[2 * i + 1]!, expected, `${what} (default policy)`);
            const stored = await readFile(paths[i]!);
            assertOurs(mailparserReads(await simpleParser(stored)), expected, `${what} (mailparser)`);
            const sent = received(body, mode);
            assert.ok(stored.subarray(stored.length - sent.length).equals(sent), `${what}: the client's bytes are kept`);
          }
        } finally {
          c.close();
        }
      }));

    test('Message: the raw header lines mailparser reads start with ours', async () => {
      const seen: ParsedMail[] = [];
      const handler = new (class extends AsyncMessage {
        override async handleMessage(message: ParsedMail): Promise<void> {
          seen.push(message);
        }
      })();
      await using server = await startServer(handler, { logger: quiet });
      const c = await greeted(server.port);
      try {
        for (const [, body] of ATTACKS) await send(c, body, mode);
        const expected = { 'X-Peer': `127.0.0.1:${c.socket.localPort}`, 'X-MailFrom': 'a@example.com', 'X-RcptTo': 'b@example.com' };
        for (const [i, [what]] of ATTACKS.entries()) {
          assertOurs(mailparserReads(seen[i]!), expected, what);
          assert.equal(seen[i]!.headers.get('x-rcptto'), 'b@example.com');
        }
      } finally {
        c.close();
      }
    });

    test('Proxy: the upstream reads our X-Peer first, whatever the client sent', () =>
      withTempDir(async (dir) => {
        const recorder = new Recorder();
        await using upstream = await startServer(recorder, { logger: quiet });
        await using proxy = await startServer(new Proxy('127.0.0.1', upstream.port, { timeout: 5000 }), { logger: quiet });
        const c = await greeted(proxy.port);
        try {
          for (const [, body] of ATTACKS) await send(c, body, mode);
          assert.equal(recorder.messages.length, ATTACKS.length);
          const paths: string[] = [];
          for (const [i, m] of recorder.messages.entries()) {
            paths.push(join(dir, `${i}.eml`));
            await writeFile(paths[i]!, m.content);
          }
          const python = await pythonReads(paths);
          const expected = { 'X-Peer': `127.0.0.1:${c.socket.localPort}` };
          for (const [i, [what]] of ATTACKS.entries()) {
            assertOurs(python[2 * i]!, expected, `${what} (compat32)`);
            assertOurs(python[2 * i + 1]!, expected, `${what} (default policy)`);
            assertOurs(mailparserReads(await simpleParser(recorder.messages[i]!.content)), expected, `${what} (mailparser)`);
          }
        } finally {
          c.close();
        }
      }));
  });
}

/** A PROXY v2 header for a UNIX stream whose source path is `path` (at most 108 bytes). */
function proxyV2Unix(path: Buffer): Buffer {
  const header = Buffer.alloc(16 + 216);
  Buffer.from('\r\n\r\n\0\r\nQUIT\n', 'latin1').copy(header, 0);
  header[12] = 0x21; // version 2, PROXY
  header[13] = 0x31; // AF_UNIX, stream
  header.writeUInt16BE(216, 14);
  path.copy(header, 16);
  Buffer.from('/run/dst').copy(header, 16 + 108);
  return header;
}

test('a PROXY header UNIX path with CR, LF, NEL, U+2028/2029 and controls reaches X-Peer escaped, as one line', () =>
  withTempDir(async (dir) => {
    await using server = await startServer(new Mailbox(dir), { logger: quiet, proxyProtocolTimeout: 5000 });
    const c = await RawClient.connect(server.port);
    try {
      const path = Buffer.from('/tmp/x\r\nX-RcptTo: ceo@victim.example\u0085\u2028\u2029\x1b[31m\x7f end', 'utf8');
      c.send(proxyV2Unix(path));
      assert.equal((await c.reply()).code, 220);
      assert.equal((await c.cmd('EHLO client.example')).code, 250);
      await send(c, 'Subject: s\r\n\r\nb\r\n', 'DATA');
      const [name] = await readdir(join(dir, 'new'));
      const stored = await readFile(join(dir, 'new', name!), 'utf8');
      const peer = '/tmp/x\\x0d\\x0aX-RcptTo: ceo@victim.example\\x85\\u2028\\u2029\\x1b[31m\\x7f end';
      // Folded at a space (the value is over 78 octets), so unfolding gives the escaped path back.
      assert.ok(stored.replace(/\r\n /g, ' ').startsWith(`X-Peer: ${peer}\r\nX-MailFrom: a@example.com\r\n`), JSON.stringify(stored));
      assert.doesNotMatch(stored.slice(0, stored.indexOf('Subject')), /[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]|\r(?!\n)|(?<!\r)\n/);
      const paths = [join(dir, 'new', name!)];
      const [compat, modern] = await pythonReads(paths);
      for (const t of [compat!, modern!, mailparserReads(await simpleParser(Buffer.from(stored)))]) {
        assert.deepEqual(t['X-RcptTo'], ['b@example.com'], JSON.stringify(t));
        assert.equal(t['X-Peer'].length, 1);
      }
    } finally {
      c.close();
    }
  }));

test('1000 recipients: X-RcptTo is folded to lines of at most 78 octets, and unfolds to the list', () =>
  withTempDir(async (dir) => {
    await using server = await startServer(new Mailbox(dir), { logger: quiet });
    const c = await greeted(server.port);
    const rcpts = Array.from({ length: 1000 }, (_, i) => `recipient-${i}@example.com`);
    try {
      // Pipelined, as a real client sends a long recipient list.
      c.send(`MAIL FROM:<a@example.com>\r\n${rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join('')}DATA\r\n`);
      for (let i = 0; i < 1001; i++) assert.equal((await c.reply()).code, 250);
      assert.equal((await c.reply()).code, 354);
      c.send('Subject: many\r\n\r\nb\r\n.\r\n');
      assert.equal((await c.reply(15_000)).code, 250);
      const [name] = await readdir(join(dir, 'new'));
      const stored = await readFile(join(dir, 'new', name!));
      const head = stored.subarray(0, stored.indexOf('\r\n\r\n')).toString('latin1');
      for (const line of head.split('\r\n')) assert.ok(line.length <= 78, `${line.length} octets: ${line}`);
      const [compat, modern] = await pythonReads([join(dir, 'new', name!)]);
      for (const t of [compat!, modern!, mailparserReads(await simpleParser(stored))]) {
        assert.deepEqual(t['X-RcptTo'], [rcpts.join(', ')]);
      }
    } finally {
      c.close();
    }
  }));

describe('foldHeader', () => {
  test('short values stay on one line; empty values keep the space after the colon', () => {
    assert.equal(foldHeader('X-A', 'b@example.com', '\r\n'), 'X-A: b@example.com\r\n');
    assert.equal(foldHeader('X-A', '', '\n'), 'X-A: \n');
  });

  test('no line passes 998 octets, even for one word of 5000 (UTF-8 counted in octets), and no line is white space alone', () => {
    for (const value of ['x'.repeat(5000), 'é'.repeat(2500), `a ${'y'.repeat(2000)} b`, `   lead  and  double  spaces${' z'.repeat(100)}   `]) {
      const folded = foldHeader('X-Long', value, '\r\n');
      assert.ok(folded.endsWith('\r\n'));
      for (const line of folded.slice(0, -2).split('\r\n')) {
        assert.ok(Buffer.byteLength(line) <= 998, `${Buffer.byteLength(line)} octets`);
        assert.match(line, /\S/);
      }
      // Folds at spaces unfold to the value; a cut word gets the space of its fold.
      const unfolded = folded.slice('X-Long: '.length, -2).replace(/\r\n/g, '');
      assert.equal(unfolded.replace(/ /g, ''), value.replace(/ /g, ''));
      if (!value.includes('x') && !value.includes('é') && !value.includes('y')) assert.equal(unfolded, value);
    }
  });

  test('prepareMessage: an empty line goes between ours and a body that cannot start a header section, and only then', () => {
    const session = new Session({ address: '::1', port: 2525, family: 'IPv6' });
    const envelope = (body: string) => {
      const e = new Envelope();
      e.mailFrom = 'a@x';
      e.rcptTos = ['b@x'];
      e.originalContent = Buffer.from(body, 'latin1');
      return e;
    };
    const ours = 'X-Peer: [::1]:2525\r\nX-MailFrom: a@x\r\nX-RcptTo: b@x\r\n';
    for (const [body, separated] of [
      ['Subject: s\r\n\r\nb\r\n', false],
      ['\r\nb\r\n', false],
      ['', false],
      ['\tforged\r\n\r\nb\r\n', true],
      [' forged\r\n', true],
      ['From someone\r\n', true],
      ['Subject : obsolete\r\n\r\n', true],
      ['\rX: y\r\n', true],
    ] as const) {
      const out = prepareMessage(session, envelope(body)).toString('latin1');
      const eol = body.includes('\r\n') ? '\r\n' : '\n';
      assert.equal(out, ours.replace(/\r\n/g, eol) + (separated ? eol : '') + body, JSON.stringify(body));
    }
  });
});
