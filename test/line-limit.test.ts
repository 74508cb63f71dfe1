/** LineLengthWatch (pure): where a body's first over-long line crosses the limit, however it is cut. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LineLengthWatch } from '../src/line-limit.js';
import { Rng } from './rng.js';

/** The offset of the first byte past `limit` in a line (LF included), or -1: the plain way. */
function oracle(body: Buffer, limit: number): number {
  let length = 0;
  for (let i = 0; i < body.length; i++) {
    if (++length > limit) return i;
    if (body[i] === 0x0a) length = 0;
  }
  return -1;
}

test('the watch agrees with a byte-by-byte count, for any cut of the body into chunks', () => {
  const rng = new Rng(14);
  for (let round = 0; round < 500; round++) {
    const limit = rng.int(1, 40);
    const lines = Array.from({ length: rng.int(0, 12) }, () => 'x'.repeat(rng.int(0, limit + 2)) + rng.pick(['\r\n', '\n', '']));
    const body = Buffer.from(lines.join(''));
    const watch = new LineLengthWatch(limit);
    let seen = 0;
    let found = -1;
    while (seen < body.length && found < 0) {
      const piece = body.subarray(seen, seen + rng.int(1, 30));
      const at = watch.see(piece);
      if (at >= 0) found = seen + at;
      seen += piece.length;
    }
    assert.equal(found, oracle(body, limit), `limit ${limit}, body ${JSON.stringify(body.toString())}`);
    assert.equal(watch.exceeded, found >= 0);
  }
});

test('1001 octets with CRLF is the longest line that passes', () => {
  const ok = new LineLengthWatch(1001);
  assert.equal(ok.see(Buffer.from('a'.repeat(999) + '\r\n' + 'b'.repeat(999) + '\r\n')), -1);
  const over = new LineLengthWatch(1001);
  assert.equal(over.see(Buffer.from('a'.repeat(1000) + '\r\n')), 1001);
});
