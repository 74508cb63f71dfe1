/**
 * Pure tests of src/framing.ts: the DATA body reader and the command-line framer, by example and
 * by a seeded property test against the naive byte-at-a-time references in attack-util.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BARE_LF, Body, CommandFramer, DataReader, LINE_TOO_LONG, type FramedLine } from '../src/framing.js';
import { Rng } from './rng.js';
import { randomChunks, referenceBody, referenceLines, type RefLine } from './attack-util.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const show = (x: Buffer): string => JSON.stringify(x.toString('latin1'));

interface ReadResult {
  content: Buffer;
  rest: Buffer;
  done: boolean;
  size: number;
  overflowed: boolean;
  segments: Buffer | null;
}

/** Feeds the chunks to a fresh reader; after the terminator, later chunks count as rest. */
function read(chunks: Buffer[], sizeLimit = 0, withSegments = false): ReadResult {
  const segs: Buffer[] = [];
  const reader = new DataReader(
    withSegments ? { sizeLimit, onSegment: (s) => segs.push(Buffer.from(s)) } : { sizeLimit },
  );
  let rest: Buffer[] | null = null;
  for (const c of chunks) {
    if (rest !== null) {
      rest.push(c);
      continue;
    }
    const r = reader.push(c);
    if (r !== null) rest = [Buffer.from(r)];
  }
  return {
    content: Buffer.from(reader.content()),
    rest: rest === null ? Buffer.alloc(0) : Buffer.concat(rest),
    done: rest !== null,
    size: reader.size,
    overflowed: reader.overflowed,
    segments: withSegments ? Buffer.concat(segs) : null,
  };
}

function whole(s: string, sizeLimit = 0): ReadResult {
  return read([b(s)], sizeLimit);
}

function bytewise(s: string, sizeLimit = 0): ReadResult {
  const buf = b(s);
  return read([...buf].map((x) => Buffer.from([x])), sizeLimit);
}

// ---- DataReader by example ----------------------------------------------------------------

test('DataReader: dot-unstuffing removes one leading dot of a line, and only at a line start', () => {
  for (const r of [whole('..dot\r\na..b\r\n...\r\n..\r\n.\r\n'), bytewise('..dot\r\na..b\r\n...\r\n..\r\n.\r\n')]) {
    assert.equal(r.done, true);
    assert.equal(r.content.toString('latin1'), '.dot\r\na..b\r\n..\r\n.\r\n');
    assert.equal(r.rest.length, 0);
  }
});

test('DataReader: the body ends only at CRLF.CRLF', () => {
  const lookalikes = ['\n.\n', '\r\n.\n', '\n.\r\n', '\r.\r\n', '\r\n.\r', '\r\n.\r\r\n', '\r.\r', '\n.\r'];
  for (const l of lookalikes) {
    const body = `hello${l}MAIL FROM:<evil@x>\r\n`;
    for (const r of [whole(body), bytewise(body)]) {
      assert.equal(r.done, false, `ended on ${JSON.stringify(l)}`);
    }
    const r = whole(body + '.\r\n');
    assert.equal(r.done, true);
    assert.deepEqual(r.content, referenceBody(b(body + '.\r\n')).content);
    assert.ok(r.content.includes(b('MAIL FROM:<evil@x>\r\n')));
  }
});

test('DataReader: DATA\\r\\n.\\r\\n is an empty body', () => {
  for (const r of [whole('.\r\n'), bytewise('.\r\n')]) {
    assert.equal(r.done, true);
    assert.equal(r.content.length, 0);
    assert.equal(r.size, 0);
    assert.equal(r.rest.length, 0);
  }
  const r = whole('.\r\nQUIT\r\n');
  assert.equal(r.done, true);
  assert.equal(r.content.length, 0);
  assert.equal(r.rest.toString(), 'QUIT\r\n');
});

test('DataReader: an empty line then the terminator', () => {
  const r = whole('\r\n.\r\n');
  assert.equal(r.done, true);
  assert.equal(r.content.toString('latin1'), '\r\n');
});

test('DataReader: bytes after the terminator are returned as rest, untouched', () => {
  const after = 'MAIL FROM:<a@b>\r\n.\r\n\n\r..\r\n';
  for (const r of [whole(`x\r\n.\r\n${after}`), read([b('x\r\n.'), b(`\r\n${after}`)]), read([b('x\r\n.\r'), b(`\n${after}`)])]) {
    assert.equal(r.done, true);
    assert.equal(r.content.toString('latin1'), 'x\r\n');
    assert.equal(r.rest.toString('latin1'), after);
  }
});

test('DataReader: bare LF, bare CR and every byte value are kept byte for byte', () => {
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const body = Buffer.concat([b('a\nb\rc\n\rd\r\re\n\n'), all, b('\r\n')]);
  for (const r of [read([body, b('.\r\n')]), read([...body, ...b('.\r\n')].map((x) => Buffer.from([x])))]) {
    assert.equal(r.done, true);
    assert.deepEqual(r.content, body);
    assert.equal(r.size, body.length);
  }
});

test('DataReader: CRLF split across chunks still makes a line start', () => {
  const r = read([b('a\r'), b('\n'), b('.'), b('.x\r'), b('\n.'), b('\r'), b('\n')]);
  assert.equal(r.done, true);
  assert.equal(r.content.toString('latin1'), 'a\r\n.x\r\n');
});

test('DataReader: ".\\r" then not LF keeps the CR and drops the stuffing dot', () => {
  for (const r of [whole('a\r\n.\rb\r\n.\r\n'), read([b('a\r\n.\r'), b('b\r\n.\r\n')]), bytewise('a\r\n.\rb\r\n.\r\n')]) {
    assert.equal(r.done, true);
    assert.equal(r.content.toString('latin1'), 'a\r\n\rb\r\n');
  }
});

test('DataReader: size limit: overflowed, nothing kept, size counts all, the terminator is still found', () => {
  const body = 'x'.repeat(48) + '\r\n'; // 50 bytes per line
  const input = body.repeat(10) + '.\r\nNOOP\r\n'; // 500 body bytes
  for (const r of [whole(input, 100), bytewise(input, 100), read([b(input)], 100, true)]) {
    assert.equal(r.overflowed, true);
    assert.equal(r.content.length, 0);
    if (r.segments !== null) assert.ok(r.segments.length <= 100, 'onSegment got bytes past the limit');
    assert.equal(r.size, 500);
    assert.equal(r.done, true);
    assert.equal(r.rest.toString(), 'NOOP\r\n');
  }
});

test('DataReader: a body exactly at the limit is kept; one byte more overflows', () => {
  const at = 'y'.repeat(98) + '\r\n'; // 100 bytes
  const ok = whole(at + '.\r\n', 100);
  assert.equal(ok.overflowed, false);
  assert.equal(ok.content.toString(), at);
  const over = whole('z' + at + '.\r\n', 100);
  assert.equal(over.overflowed, true);
  assert.equal(over.content.length, 0);
  assert.equal(over.size, 101);
  // Stuffing dots are not body bytes: 102 bytes after unstuffing fit a 102-byte limit.
  const stuffed = whole('.' + 'y'.repeat(97) + '\r\n..\r\n.\r\n', 102);
  assert.equal(stuffed.size, 102);
  assert.equal(stuffed.overflowed, false);
});

test('DataReader: sizeLimit 0 means no limit', () => {
  const r = whole('q'.repeat(100_000) + '\r\n.\r\n', 0);
  assert.equal(r.overflowed, false);
  assert.equal(r.content.length, 100_002);
});

test('DataReader: a large overflowing body keeps no segments (memory stays flat)', () => {
  const reader = new DataReader({ sizeLimit: 1024 });
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  for (let i = 0; i < 128; i++) assert.equal(reader.push(chunk), null); // 8 MiB
  assert.equal(reader.overflowed, true);
  assert.equal(reader.content().length, 0);
  assert.equal(reader.size, 128 * 64 * 1024);
  const rest = reader.push(b('\r\n.\r\n'));
  assert.notEqual(rest, null);
  assert.equal(rest!.length, 0);
});

// ---- DataReader property test -------------------------------------------------------------

function randomBody(rng: Rng): Buffer {
  const alphabet = ['\r', '\n', '.', 'a', '\r', '\n', '.', 'a', '\r\n', '\r\n.', 'b', '\x00', '\xff'];
  const n = rng.int(0, 40);
  let s = '';
  for (let i = 0; i < n; i++) {
    s += rng.next() < 0.03 ? '\r\n.\r\n' : rng.pick(alphabet);
  }
  return b(s);
}

test('DataReader property: any chunking gives the reference (content, rest, done, size)', () => {
  const rng = new Rng(0x5eed_da7a);
  let finished = 0;
  for (let i = 0; i < 3000; i++) {
    const input = randomBody(rng);
    // Half the cases start with the body (as after DATA); half have a terminator appended.
    const full = rng.next() < 0.5 ? Buffer.concat([input, b('\r\n.\r\n'), randomBody(rng)]) : input;
    const ref = referenceBody(full);
    const limit = rng.next() < 0.3 ? rng.int(1, 30) : 0;
    const chunks = rng.next() < 0.2 ? [...full].map((x) => Buffer.from([x])) : randomChunks(rng, full, 12);
    const got = read(chunks, limit, rng.next() < 0.3);
    const label = `case ${i}: input ${show(full)} chunks ${JSON.stringify(chunks.map((c) => c.toString('latin1')))} limit ${limit}`;
    assert.equal(got.done, ref.done, label);
    assert.equal(got.size, ref.content.length, label);
    const overflow = limit > 0 && ref.content.length > limit;
    assert.equal(got.overflowed, overflow, label);
    if (got.segments === null) {
      assert.deepEqual(got.content, overflow ? Buffer.alloc(0) : ref.content, label);
    } else {
      // With onSegment the reader keeps nothing itself; before an overflow the segments are the body.
      assert.equal(got.content.length, 0, label);
      if (!overflow) assert.deepEqual(got.segments, ref.content, label);
    }
    assert.deepEqual(got.rest, ref.rest, label);
    if (ref.done) finished++;
  }
  assert.ok(finished > 1000, `only ${finished} cases reached a terminator`);
});

test('DataReader property: content so far matches the reference after every chunk', () => {
  const rng = new Rng(1234);
  for (let i = 0; i < 1000; i++) {
    const full = randomBody(rng);
    const chunks = randomChunks(rng, full, 6);
    const reader = new DataReader({ sizeLimit: 0 });
    let fed = 0;
    for (const c of chunks) {
      const r = reader.push(c);
      fed += c.length;
      const ref = referenceBody(full.subarray(0, fed));
      const label = `case ${i}: prefix ${show(full.subarray(0, fed))}`;
      assert.equal(r !== null, ref.done, label);
      assert.deepEqual(Buffer.from(reader.content()), ref.content, label);
      if (r !== null) {
        assert.deepEqual(Buffer.from(r), ref.rest, label);
        break;
      }
    }
  }
});

// ---- CommandFramer by example -------------------------------------------------------------

function drain(f: CommandFramer): FramedLine[] {
  const out: FramedLine[] = [];
  for (let i = 0; i < 10_000; i++) {
    const l = f.next();
    if (l === null) return out;
    out.push(typeof l === 'symbol' ? l : Buffer.from(l));
  }
  throw new Error('framer never ran dry');
}

function asRef(l: FramedLine): RefLine {
  if (l === LINE_TOO_LONG) return { kind: 'too-long' };
  if (l === BARE_LF) return { kind: 'bare-lf' };
  return { kind: 'line', bytes: Buffer.from(l) };
}

test('CommandFramer: lines end only at CRLF; bare LF gives BARE_LF; bare CR stays in the line', () => {
  const f = new CommandFramer(512);
  f.push(b('NOOP\r\nRSET\nQU'));
  assert.deepEqual(drain(f).map(asRef), [{ kind: 'line', bytes: b('NOOP') }, { kind: 'bare-lf' }]);
  f.push(b('IT\r'));
  assert.deepEqual(drain(f), []);
  f.push(b('\nA\rB\r\n\n\r\r\n'));
  assert.deepEqual(drain(f).map(asRef), [
    { kind: 'line', bytes: b('QUIT') },
    { kind: 'line', bytes: b('A\rB') },
    { kind: 'bare-lf' },
    { kind: 'line', bytes: b('\r') },
  ]);
  assert.equal(f.buffered, 0);
});

test('CommandFramer: a line of exactly maxLine octets (CRLF included) passes; one more is LINE_TOO_LONG', () => {
  const f = new CommandFramer(16);
  f.push(b('x'.repeat(14) + '\r\n' + 'y'.repeat(15) + '\r\nNOOP\r\n'));
  assert.deepEqual(drain(f).map(asRef), [
    { kind: 'line', bytes: b('x'.repeat(14)) },
    { kind: 'too-long' },
    { kind: 'line', bytes: b('NOOP') },
  ]);
});

test('CommandFramer: a 1 MiB line without LF is discarded as it comes; buffered stays bounded', () => {
  const maxLine = 538;
  const f = new CommandFramer(maxLine);
  const chunk = Buffer.alloc(64 * 1024, 0x41);
  let peak = 0;
  for (let i = 0; i < 16; i++) {
    f.push(chunk);
    peak = Math.max(peak, f.buffered);
    assert.ok(f.buffered <= maxLine + chunk.length);
    assert.deepEqual(drain(f), []);
    assert.ok(f.buffered <= maxLine, `buffered ${f.buffered} after draining`);
  }
  assert.ok(peak <= maxLine + chunk.length);
  f.push(b('AAAA\r\nNOOP\r\n'));
  assert.deepEqual(drain(f).map(asRef), [{ kind: 'too-long' }, { kind: 'line', bytes: b('NOOP') }]);
  assert.equal(f.buffered, 0);
});

test('CommandFramer: takeRest hands over the unframed bytes (the start of a body)', () => {
  const f = new CommandFramer(512);
  f.push(b('DATA\r\nSubject: x\r\n\r\nbo'));
  assert.deepEqual(drain(f).map(asRef), [{ kind: 'line', bytes: b('DATA') }, { kind: 'line', bytes: b('Subject: x') }, { kind: 'line', bytes: b('') }]);
  assert.equal(f.takeRest().toString(), 'bo');
  assert.equal(f.buffered, 0);
  assert.equal(f.next(), null);
});

// ---- CommandFramer property test ----------------------------------------------------------

test('CommandFramer property: any chunking gives the reference lines; buffered stays bounded', () => {
  const rng = new Rng(0xc0ffee);
  const alphabet = ['a', 'a', 'a', ' ', '\r', '\n', '\r\n', '\r\n', '\x00', '\xff'];
  for (let i = 0; i < 3000; i++) {
    const maxLine = rng.int(2, 24);
    let s = '';
    const n = rng.int(0, 60);
    for (let k = 0; k < n; k++) s += rng.next() < 0.04 ? 'L'.repeat(rng.int(10, 80)) : rng.pick(alphabet);
    const input = b(s);
    const ref = referenceLines(input, maxLine);
    const chunks = rng.next() < 0.2 ? [...input].map((x) => Buffer.from([x])) : randomChunks(rng, input, 20);
    const f = new CommandFramer(maxLine);
    const got: RefLine[] = [];
    const label = `case ${i}: maxLine ${maxLine} input ${show(input)}`;
    for (const c of chunks) {
      f.push(c);
      assert.ok(f.buffered <= maxLine + c.length, `${label}: buffered ${f.buffered} after a ${c.length}-byte push`);
      got.push(...drain(f).map(asRef));
      assert.ok(f.buffered <= maxLine, `${label}: buffered ${f.buffered} after draining`);
    }
    assert.deepEqual(got, ref.lines, label);
    const rest = f.takeRest();
    // A tail no longer than maxLine was never dropped and must come back whole.
    if (ref.pending.length <= maxLine) assert.deepEqual(Buffer.from(rest), ref.pending, label);
    else assert.ok(rest.length <= maxLine, label);
  }
});

/** Bytes moved by Buffer#copy and Buffer.concat while `run` runs. */
function bytesCopied(run: () => void): number {
  let moved = 0;
  const copy = Buffer.prototype.copy;
  const concat = Buffer.concat;
  Buffer.prototype.copy = function (this: Buffer, ...args: Parameters<Buffer['copy']>): number {
    const n = copy.apply(this, args);
    moved += n;
    return n;
  };
  Buffer.concat = (list: readonly Uint8Array[], total?: number) => {
    const out = concat(list, total);
    moved += out.length;
    return out;
  };
  try {
    run();
  } finally {
    Buffer.prototype.copy = copy;
    Buffer.concat = concat;
  }
  return moved;
}

/**
 * Feeds `input` to a DataReader in 64 KiB reads, each with its own ArrayBuffer as a socket gives
 * them, and takes the body: what it holds and how many bytes were copied to get it.
 */
function readCounted(input: Buffer): { content: Buffer; copied: number } {
  const reads: Buffer[] = [];
  for (let off = 0; off < input.length; off += 65_536) reads.push(Buffer.from(input.subarray(off, off + 65_536)));
  const reader = new DataReader({ sizeLimit: 0 });
  let content: Buffer = Buffer.alloc(0);
  const copied = bytesCopied(() => {
    for (const r of reads) reader.push(r);
    content = reader.content();
  });
  return { content, copied };
}

test('DataReader: an ordinary body is copied once per byte, a body that is most of one read not at all', () => {
  const line = 'y'.repeat(76) + '\r\n';
  const text = line.repeat(Math.ceil((2 << 20) / line.length));
  const { content, copied } = readCounted(b(text + '.\r\n'));
  assert.equal(content.length, text.length);
  assert.ok(content.equals(b(text)));
  // The last read holds only the tail of the body, too small to keep as a view: it is staged.
  assert.ok(copied >= content.length && copied < content.length + 65_536, `${copied} bytes copied for ${content.length}`);

  const one = new DataReader({ sizeLimit: 0 });
  const read = Buffer.from(line.repeat(500) + '.\r\n');
  assert.equal(
    bytesCopied(() => {
      one.push(read);
      one.content();
    }),
    0,
  );
  assert.equal(one.content().toString(), line.repeat(500));
});

test('DataReader: a dot-stuffed body stays correct, within two copies per byte and few pieces', () => {
  // Every line stuffed: one small segment per line, which is staged rather than kept as a view.
  const text = '..dot line\r\n'.repeat(50_000);
  const { content, copied } = readCounted(b(text + '.\r\n'));
  assert.ok(content.equals(referenceBody(b(text + '.\r\n')).content));
  assert.ok(copied <= 2 * content.length, `${copied} bytes copied for ${content.length}`);
});

test('Body: a small part of a large read is copied, so the read is not kept alive by it', () => {
  const read = Buffer.from('BDAT 5\r\nhello' + 'NOOP\r\n'.repeat(5000));
  const body = new Body(0);
  body.add(read.subarray(8, 13));
  const content = body.content();
  assert.equal(content.toString(), 'hello');
  assert.notEqual(content.buffer, read.buffer);
});
