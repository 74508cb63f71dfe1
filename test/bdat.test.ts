/**
 * CHUNKING and BINARYMIME (RFC 3030) in SMTP and LMTP over a raw client: chunks are taken
 * exactly (no dot-unstuffing, no terminator search), chunk bytes never run as commands (not
 * even when the BDAT is refused or the message is too big), the size limit counts across
 * chunks, BDAT 0 LAST, DATA/BDAT mixing, bad arguments, byte-wise and very large chunks,
 * pipelining, and LMTP's per-recipient replies to BDAT LAST.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Body, ChunkReader } from '../src/framing.js';
import type { Handler, SMTPServer } from '../src/handler.js';
import { Mailbox } from '../src/handlers/mailbox.js';
import type { Envelope, RcptOptions, Session } from '../src/session.js';
import type { RawClient } from './helpers.js';
import { MemoryLogger } from './commands-util.js';
import { makeCertsIfPossible, needCerts } from './tls-util.js';
import {
  MARKER,
  MODES,
  b,
  codes,
  connect,
  expectCmd,
  greet,
  hello,
  readMaildir,
  repliesUntilClose,
  repliesUntilMarker,
  sendBytewise,
  sendLarge,
  sleep,
  snapshot,
  startMode,
  withTempDir,
  type Mode,
  type Seen,
} from './lmtp-util.js';

/** Records every message; refuses recipients named refused@; answers per recipient in LMTP. */
class Rec implements Handler {
  seen: Seen[] = [];
  handleRCPT(_s: SMTPServer, _ss: Session, envelope: Envelope, address: string, _o: RcptOptions): string {
    if (address.startsWith('refused@')) return '550 5.1.1 no such user';
    envelope.rcptTos.push(address);
    return '250 2.1.5 OK';
  }
  handleDATA(server: SMTPServer, _ss: Session, envelope: Envelope): string | string[] {
    this.seen.push(snapshot(envelope));
    if (!server.lmtp) return '250 2.0.0 stored';
    return envelope.rcptTos.map((r) => `250 2.0.0 <${r}> stored`);
  }
}

const start = (mode: Mode, handler: Handler, options = {}) => startMode(mode, handler, { logger: new MemoryLogger(), ...options });

/** `BDAT n[ LAST]\r\n` followed by the chunk's bytes. */
function chunk(data: Buffer | string, last = false): Buffer {
  const bytes = typeof data === 'string' ? b(data) : data;
  return Buffer.concat([b(`BDAT ${bytes.length}${last ? ' LAST' : ''}\r\n`), bytes]);
}

const ENVELOPE = 'MAIL FROM:<from@example.com>\r\nRCPT TO:<to@example.com>\r\n';

for (const mode of MODES) {
  test(`${mode}: ${hello(mode)} advertises CHUNKING and BINARYMIME`, async () => {
    await using server = await start(mode, new Rec());
    const { c, hello: r } = await greet(server.port, mode);
    try {
      const keywords = r.lines.slice(1).map((l) => l.slice(4));
      assert.ok(keywords.includes('CHUNKING'), r.text);
      assert.ok(keywords.includes('BINARYMIME'), r.text);
    } finally {
      c.close();
    }
  });

  test(`${mode}: BDAT n, then BDAT m LAST: stored byte for byte, no unstuffing, no terminator search`, async () => {
    const rec = new Rec();
    await using server = await start(mode, rec);
    const { c } = await greet(server.port, mode);
    try {
      const one = b('Subject: chunks\r\n\r\nline\r\n.\r\nafter the would-be end\r\n..x stays doubled\r\n.\r\n');
      const two = Buffer.concat([b('bare\nLF, bare\rCR, NUL:'), Buffer.from([0, 0xff, 0x80]), b('\r\n.\r\nQUIT\r\n')]);
      c.send(Buffer.concat([b(ENVELOPE), chunk(one)]));
      const first = await repliesUntilMarkerAfter(c, '');
      assert.deepEqual(codes(first), [250, 250, 250], JSON.stringify(first.map((r) => r.text)));
      assert.match(first[2]!.text, new RegExp(`^250 2\\.0\\.0 ${one.length} octets received`));
      assert.equal(rec.seen.length, 0, 'nothing delivered before LAST');
      c.send(chunk(two, true));
      const last = await repliesUntilMarkerAfter(c, '');
      assert.deepEqual(codes(last), [250], JSON.stringify(last.map((r) => r.text)));
      assert.equal(rec.seen.length, 1);
      const m = rec.seen[0]!;
      assert.ok(m.content.equals(Buffer.concat([one, two])), JSON.stringify(m.content.toString('latin1')));
      assert.equal(m.mailFrom, 'from@example.com');
      assert.deepEqual(m.rcptTos, ['to@example.com']);
      // The connection is as it was: the QUIT inside the chunk did nothing.
      await expectCmd(c, 'NOOP', 250);
    } finally {
      c.close();
    }
  });

  test(`${mode}: chunk bytes that look like commands are never executed`, async () => {
    const rec = new Rec();
    await using server = await start(mode, rec);
    const { c } = await greet(server.port, mode);
    try {
      const payload = 'MAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\nDATA\r\nRSET\r\nHELP QUIT\r\nQUIT\r\n' + 'pad'.repeat(4);
      c.send(Buffer.concat([b(ENVELOPE), chunk(payload), chunk('', true), b(MARKER)]));
      const got = await repliesUntilMarker(c);
      assert.deepEqual(codes(got), [250, 250, 250, 250], JSON.stringify(got.map((r) => r.text)));
      assert.equal(rec.seen.length, 1);
      assert.equal(rec.seen[0]!.content.toString('latin1'), payload);
      assert.equal(rec.seen[0]!.mailFrom, 'from@example.com');
      assert.deepEqual(rec.seen[0]!.rcptTos, ['to@example.com']);
    } finally {
      c.close();
    }
  });

  test(`${mode}: BDAT with no transaction reads its n bytes first, then says 503; the bytes never run`, async () => {
    const rec = new Rec();
    await using server = await start(mode, rec);
    const evil = 'QUIT\r\nHELP QUIT\r\nRSET\r\n';
    // (1) Not even greeted.
    {
      const c = await connect(server.port);
      try {
        c.send(`BDAT ${evil.length}\r\n`);
        assert.ok(await c.noReplyWithin(150), 'no reply before the chunk bytes arrived');
        c.send(evil + MARKER);
        const got = await repliesUntilMarker(c);
        assert.deepEqual(codes(got), [503], JSON.stringify(got.map((r) => r.text)));
      } finally {
        c.close();
      }
    }
    // (2) Greeted, no MAIL; (3) MAIL, no RCPT (the MAIL stays: RCPT and BDAT then work).
    const { c } = await greet(server.port, mode);
    try {
      c.send(`BDAT ${evil.length} LAST\r\n`);
      assert.ok(await c.noReplyWithin(150), 'no reply before the chunk bytes arrived');
      c.send(evil + MARKER);
      assert.deepEqual(codes(await repliesUntilMarker(c)), [503]);
      c.send('MAIL FROM:<from@example.com>\r\n' + `BDAT ${evil.length} LAST\r\n` + evil + MARKER);
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 503]);
      c.send(Buffer.concat([b('RCPT TO:<to@example.com>\r\n'), chunk('ok\r\n', true), b(MARKER)]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250]);
      assert.equal(rec.seen.length, 1);
      assert.equal(rec.seen[0]!.content.toString(), 'ok\r\n');
      // A recipient refused at RCPT leaves none: BDAT is 503 and its bytes are dropped.
      c.send(Buffer.concat([b('MAIL FROM:<a@example.com>\r\nRCPT TO:<refused@example.com>\r\n'), chunk(evil, true), b(MARKER)]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 550, 503]);
      assert.equal(rec.seen.length, 1);
    } finally {
      c.close();
    }
  });

  test(`${mode}: the size limit counts across chunks: 552, bytes dropped, transaction reset`, async () => {
    const rec = new Rec();
    await using server = await start(mode, rec, { dataSizeLimit: 100 });
    const { c, hello: h } = await greet(server.port, mode);
    try {
      assert.ok(h.lines.some((l) => l.slice(4) === 'SIZE 100'), h.text);
      const sixty = 'x'.repeat(58) + '\r\n';
      const sneaky = ('NOOP\r\n'.repeat(10)).slice(0, 60); // 60 bytes of would-be commands
      c.send(Buffer.concat([b(ENVELOPE), chunk(sixty), chunk(sneaky), b(MARKER)]));
      const got = await repliesUntilMarker(c);
      assert.deepEqual(codes(got), [250, 250, 250, 552], JSON.stringify(got.map((r) => r.text)));
      // The transaction was reset: the next BDAT (a pipelined one, say) gets 503, its bytes eaten.
      c.send(Buffer.concat([chunk('NOOP\r\nNOOP\r\n', true), b(MARKER)]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [503]);
      assert.equal(rec.seen.length, 0, 'nothing delivered');
      // A fresh transaction works.
      c.send(Buffer.concat([b(ENVELOPE), chunk('0123456789', true), b(MARKER)]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250]);
      assert.equal(rec.seen.length, 1);
      assert.equal(rec.seen[0]!.content.toString(), '0123456789');
      // One chunk over the limit, LAST: 552, and its bytes are read to the end and dropped.
      c.send(Buffer.concat([b(ENVELOPE), chunk('HELP QUIT\r\n'.repeat(20), true), b(MARKER)]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 552]);
      // Exactly at the limit is fine.
      c.send(Buffer.concat([b(ENVELOPE), chunk('y'.repeat(50)), chunk('z'.repeat(50), true), b(MARKER)]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250, 250]);
      assert.equal(rec.seen.length, 2);
      assert.equal(rec.seen[1]!.content.length, 100);
    } finally {
      c.close();
    }
  });

  test(`${mode}: BDAT chunks already pipelined after a failed one are read and discarded, not a 421`, async () => {
    // RFC 3030 §4.2: after a failed BDAT "the receiver SMTP MUST be prepared to accept and
    // discard additional BDAT chunks already in the pipeline". A client streaming a large
    // message in small pipelined chunks has many in flight when the size limit hits.
    const rec = new Rec();
    await using server = await start(mode, rec, { dataSizeLimit: 100 });
    const { c } = await greet(server.port, mode);
    try {
      const n = 30;
      const chunks: Buffer[] = [];
      for (let i = 0; i < n; i++) chunks.push(chunk(`${String(i).padStart(2, '0')}:` + 'c'.repeat(47)));
      c.send(Buffer.concat([b(ENVELOPE), ...chunks, chunk('end', true), b(MARKER)]));
      const got = await repliesUntilMarker(c, 100);
      const texts = JSON.stringify(got.map((r) => r.text));
      assert.deepEqual(codes(got.slice(0, 5)), [250, 250, 250, 250, 552], texts);
      const discarded = got.slice(5);
      assert.equal(discarded.length, n - 3 + 1, texts);
      for (const r of discarded) assert.equal(Math.floor(r.code / 100), 5, texts);
      assert.equal(rec.seen.length, 0);
      // The connection is still there, and a fresh transaction works.
      c.send(Buffer.concat([b(ENVELOPE), chunk('fresh', true), b(MARKER)]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250]);
      assert.equal(rec.seen[0]!.content.toString(), 'fresh');
    } finally {
      c.close();
    }
  });

  test(`${mode}: BDAT 0 LAST ends the message, after chunks or alone (an empty message)`, async () => {
    const rec = new Rec();
    await using server = await start(mode, rec);
    const { c } = await greet(server.port, mode);
    try {
      c.send(Buffer.concat([b(ENVELOPE), chunk('part one;'), chunk(' part two'), chunk('', true), b(MARKER)]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250, 250, 250]);
      c.send(Buffer.concat([b(ENVELOPE), b('BDAT 0 LAST\r\n'), b(MARKER)]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250]);
      assert.equal(rec.seen.length, 2);
      assert.equal(rec.seen[0]!.content.toString(), 'part one; part two');
      assert.equal(rec.seen[1]!.content.length, 0);
      // A BDAT 0 that is not LAST is just an empty chunk.
      c.send(Buffer.concat([b(ENVELOPE), b('BDAT 0\r\n'), chunk('z', true), b(MARKER)]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250, 250]);
      assert.equal(rec.seen[2]!.content.toString(), 'z');
    } finally {
      c.close();
    }
  });

  test(`${mode}: DATA after BDAT in one transaction is 503; the transaction goes on; RSET clears it`, async () => {
    const rec = new Rec();
    await using server = await start(mode, rec);
    const { c } = await greet(server.port, mode);
    try {
      c.send(Buffer.concat([b(ENVELOPE), chunk('first;'), b('DATA\r\n'), chunk('second', true), b(MARKER)]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250, 503, 250]);
      assert.equal(rec.seen.length, 1);
      assert.equal(rec.seen[0]!.content.toString(), 'first;second');
      // After RSET the chunk is forgotten and DATA is allowed again.
      c.send(Buffer.concat([b(ENVELOPE), chunk('forgotten'), b('RSET\r\n' + ENVELOPE + 'DATA\r\nbody\r\n.\r\n' + MARKER)]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250, 250, 250, 250, 354, 250]);
      assert.equal(rec.seen.length, 2);
      assert.equal(rec.seen[1]!.content.toString(), 'body\r\n');
    } finally {
      c.close();
    }
  });

  test(`${mode}: BODY=BINARYMIME then DATA is 503; then BDAT works`, async () => {
    const rec = new Rec();
    await using server = await start(mode, rec);
    const { c } = await greet(server.port, mode);
    try {
      const binary = Buffer.from([0, 1, 2, 0x0d, 0x2e, 0x0d, 0x0a, 0x2e, 0x0d, 0x0a, 0xff, 0x0a]);
      c.send(Buffer.concat([
        b('MAIL FROM:<from@example.com> BODY=BINARYMIME\r\nRCPT TO:<to@example.com>\r\nDATA\r\n'),
        chunk(binary, true),
        b(MARKER),
      ]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 503, 250]);
      assert.equal(rec.seen.length, 1);
      assert.ok(rec.seen[0]!.content.equals(binary));
      assert.deepEqual(rec.seen[0]!.mailParams, ['BODY=BINARYMIME']);
    } finally {
      c.close();
    }
  });

  for (const bad of ['BDAT x', 'BDAT -1', 'BDAT 10 LAST extra', 'BDAT', 'BDAT 10 FIRST', 'BDAT 1234567890123456', 'BDAT 0x10']) {
    test(`${mode}: "${bad}" is 501 and the connection is closed (the chunk length is unknown)`, async () => {
      const rec = new Rec();
      await using server = await start(mode, rec);
      const { c } = await greet(server.port, mode);
      try {
        c.send(ENVELOPE + bad + '\r\nNOOP\r\nQUIT\r\n');
        const got = await repliesUntilClose(c);
        assert.deepEqual(codes(got), [250, 250, 501], JSON.stringify(got.map((r) => r.text)));
        assert.equal(rec.seen.length, 0);
      } finally {
        c.close();
      }
    });
  }

  test(`${mode}: a whole BDAT transaction written one byte at a time`, async () => {
    const rec = new Rec();
    await using server = await start(mode, rec);
    const { c } = await greet(server.port, mode);
    try {
      const one = 'Subject: bytes\r\n\r\n.\r\n..';
      const two = '\r\n.\r\nRSET\r\n';
      await sendBytewise(c, Buffer.concat([b(ENVELOPE), chunk(one), chunk(two, true), b(MARKER)]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250, 250]);
      assert.equal(rec.seen.length, 1);
      assert.equal(rec.seen[0]!.content.toString('latin1'), one + two);
    } finally {
      c.close();
    }
  });

  test(`${mode}: an 8 MiB chunk over a small limit is drained without being stored`, async () => {
    const rec = new Rec();
    await using server = await start(mode, rec, { dataSizeLimit: 1000 });
    const { c } = await greet(server.port, mode);
    try {
      const size = 8 * 1024 * 1024;
      const big = Buffer.alloc(size);
      const pattern = b('QUIT\r\nHELP QUIT\r\n.\r\n');
      for (let pos = 0; pos < size; pos += pattern.length) pattern.copy(big, pos);
      c.send(b(ENVELOPE + `BDAT ${size} LAST\r\n`));
      await sendLarge(c, big);
      c.send(MARKER);
      const got = await repliesUntilMarker(c, 10, 15000);
      assert.deepEqual(codes(got), [250, 250, 552], JSON.stringify(got.map((r) => r.text)));
      assert.equal(rec.seen.length, 0);
      await expectCmd(c, 'NOOP', 250);
    } finally {
      c.close();
    }
  });

  test(`${mode}: MAIL/RCPT/BDAT/bytes/BDAT LAST/bytes/QUIT in one write: replies in order`, async () => {
    const rec = new Rec();
    await using server = await start(mode, rec);
    const c = await connect(server.port);
    try {
      c.send(Buffer.concat([
        b(`${hello(mode)} client.example\r\n` + ENVELOPE),
        chunk('Subject: pipelined\r\n\r\n'),
        chunk('body\r\n', true),
        b('MAIL FROM:<second@example.com>\r\nRCPT TO:<to2@example.com>\r\n'),
        chunk('second\r\n', true),
        b('QUIT\r\n'),
      ]));
      const got = await repliesUntilClose(c);
      assert.deepEqual(codes(got), [250, 250, 250, 250, 250, 250, 250, 250, 221], JSON.stringify(got.map((r) => r.text)));
      assert.deepEqual(
        rec.seen.map((m) => [m.mailFrom, m.rcptTos, m.content.toString()]),
        [
          ['from@example.com', ['to@example.com'], 'Subject: pipelined\r\n\r\nbody\r\n'],
          ['second@example.com', ['to2@example.com'], 'second\r\n'],
        ],
      );
    } finally {
      c.close();
    }
  });

  test(`${mode}: chunk bytes arriving while a hook is pending are still taken as chunk bytes`, async () => {
    const seen: Seen[] = [];
    const handler: Handler = {
      async handleRCPT(_s, _ss, envelope, address) {
        await sleep(30);
        envelope.rcptTos.push(address);
        return '250 OK';
      },
      async handleDATA(_s, _ss, envelope) {
        await sleep(30);
        seen.push(snapshot(envelope));
        return '250 OK';
      },
    };
    await using server = await start(mode, handler);
    const { c } = await greet(server.port, mode);
    try {
      const payload = 'RSET\r\nHELP QUIT\r\n';
      c.send(b(ENVELOPE + `BDAT ${payload.length} LAST\r\n`));
      await sleep(5); // the RCPT hook is pending now
      c.send(payload + 'NOOP\r\n' + MARKER);
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250, 250]);
      assert.equal(seen.length, 1);
      assert.equal(seen[0]!.content.toString(), payload);
    } finally {
      c.close();
    }
  });
  test(`${mode}: handleDATAStream with BDAT: the chunks stream byte-exact, with backpressure; replies at LAST`, async () => {
    const got: Array<{ rcpts: string[]; bytes: Buffer }> = [];
    const handler: Handler = {
      async handleDATAStream(server, _ss, envelope, stream) {
        const parts: Buffer[] = [];
        for await (const part of stream) {
          parts.push(part as Buffer);
          await sleep(0); // a slow consumer
        }
        got.push({ rcpts: [...envelope.rcptTos], bytes: Buffer.concat(parts) });
        return server.lmtp ? envelope.rcptTos.map((r) => `250 2.0.0 <${r}> streamed`) : '250 2.0.0 streamed';
      },
    };
    await using server = await start(mode, handler);
    const { c } = await greet(server.port, mode);
    try {
      const big = Buffer.alloc(3 * 1024 * 1024);
      for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 11)) & 0xff;
      const head = b('Subject: s\r\n\r\n.\r\n..x\r\n');
      c.send(b('MAIL FROM:<from@example.com>\r\nRCPT TO:<p@example.com>\r\nRCPT TO:<q@example.com>\r\n'));
      c.send(chunk(head));
      c.send(b(`BDAT ${big.length}\r\n`));
      await sendLarge(c, big);
      c.send(Buffer.concat([chunk('tail', true), b(MARKER)]));
      const replies = await repliesUntilMarker(c, 20, 15000);
      const finals = mode === 'LMTP' ? [250, 250] : [250];
      assert.deepEqual(codes(replies), [250, 250, 250, 250, 250, ...finals], JSON.stringify(replies.map((r) => r.text)));
      assert.equal(got.length, 1);
      assert.deepEqual(got[0]!.rcpts, ['p@example.com', 'q@example.com']);
      assert.ok(got[0]!.bytes.equals(Buffer.concat([head, big, b('tail')])), 'streamed bytes differ');
    } finally {
      c.close();
    }
  });

  test(`${mode}: handleDATAStream with BDAT over the limit: the stream errors, 552, bytes dropped`, async () => {
    const errors: string[] = [];
    const handler: Handler = {
      async handleDATAStream(_s, _ss, _envelope, stream) {
        try {
          for await (const _ of stream) void _;
        } catch (error) {
          errors.push((error as NodeJS.ErrnoException).code ?? String(error));
          throw error;
        }
        return '250 2.0.0 should not happen';
      },
    };
    await using server = await start(mode, handler, { dataSizeLimit: 100 });
    const { c } = await greet(server.port, mode);
    try {
      const rcpts = 'RCPT TO:<p@example.com>\r\nRCPT TO:<q@example.com>\r\n';
      // Over the limit at a non-LAST chunk: one 552, the transaction is gone.
      c.send(Buffer.concat([b('MAIL FROM:<a@example.com>\r\n' + rcpts), chunk('x'.repeat(60)), chunk('HELP QUIT\r\n'.repeat(6)), chunk('y', true), b(MARKER)]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250, 250, 552, 503]);
      // Over the limit at LAST: 552 (LMTP: one per recipient).
      c.send(Buffer.concat([b('MAIL FROM:<a@example.com>\r\n' + rcpts), chunk('x'.repeat(60)), chunk('z'.repeat(60), true), b(MARKER)]));
      const finals = mode === 'LMTP' ? [552, 552] : [552];
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250, 250, ...finals]);
      assert.ok(errors.length >= 1, 'the stream errored');
      await expectCmd(c, 'NOOP', 250);
    } finally {
      c.close();
    }
  });

  test(`${mode}: handleDATAStream with BDAT, then RSET: the stream is aborted, nothing delivered`, async () => {
    let aborted = 0;
    let delivered = 0;
    const handler: Handler = {
      async handleDATAStream(_s, _ss, _envelope, stream) {
        try {
          for await (const _ of stream) void _;
        } catch (error) {
          aborted++;
          throw error;
        }
        delivered++;
        return '250 2.0.0 streamed';
      },
    };
    await using server = await start(mode, handler);
    const { c } = await greet(server.port, mode);
    try {
      c.send(Buffer.concat([b(ENVELOPE), chunk('part'), b('RSET\r\n'), chunk('orphan', true), b(ENVELOPE), chunk('whole', true), b(MARKER)]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250, 250, 503, 250, 250, 250]);
      assert.equal(aborted, 1);
      assert.equal(delivered, 1);
    } finally {
      c.close();
    }
  });
}

test('a BDAT refused before AUTH (authRequired, 530) still consumes its chunk: its bytes never run', async () => {
  for (const mode of MODES) {
    const rec = new Rec();
    await using server = await start(mode, rec, { authRequired: true });
    const { c } = await greet(server.port, mode);
    try {
      // NOOP and QUIT are allowed before AUTH: run as commands they would answer 250 or close.
      c.send('BDAT 18\r\nNOOP\r\nNOOP\r\nNOOP\r\nQUIT\r\n');
      const got = await repliesUntilClose(c);
      assert.deepEqual(codes(got), [530, 221], `${mode}: ${JSON.stringify(got.map((r) => r.text))}`);
    } finally {
      c.close();
    }
  }
});

test('a BDAT refused before STARTTLS (requireStartTLS, 530) still consumes its chunk: its bytes never run', async (t) => {
  const certs = makeCertsIfPossible();
  if (!needCerts(t, certs)) return;
  try {
    for (const mode of MODES) {
      const rec = new Rec();
      await using server = await start(mode, rec, {
        tlsContext: { cert: certs.server.cert, key: certs.server.key },
        requireStartTLS: true,
      });
      const { c } = await greet(server.port, mode);
      try {
        c.send('BDAT 18\r\nNOOP\r\nNOOP\r\nNOOP\r\nQUIT\r\n');
        const got = await repliesUntilClose(c);
        assert.deepEqual(codes(got), [530, 221], `${mode}: ${JSON.stringify(got.map((r) => r.text))}`);
      } finally {
        c.close();
      }
    }
  } finally {
    certs.cleanup();
  }
});

test('SMTP: BDAT LAST with several recipients gets one reply', async () => {
  const rec = new Rec();
  await using server = await start('SMTP', rec);
  const { c } = await greet(server.port, 'SMTP');
  try {
    c.send(Buffer.concat([b('MAIL FROM:<a@example.com>\r\nRCPT TO:<x@example.com>\r\nRCPT TO:<y@example.com>\r\n'), chunk('m', true), b(MARKER)]));
    assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250, 250]);
  } finally {
    c.close();
  }
});

test('LMTP: a non-LAST chunk gets one reply; BDAT LAST one per accepted recipient, in order', async () => {
  const rec = new Rec();
  await using server = await start('LMTP', rec);
  const { c } = await greet(server.port, 'LMTP');
  try {
    c.send(Buffer.concat([
      b('MAIL FROM:<a@example.com>\r\nRCPT TO:<x@example.com>\r\nRCPT TO:<refused@example.com>\r\nRCPT TO:<y@example.com>\r\nRCPT TO:<z@example.com>\r\n'),
      chunk('one,'),
      chunk('two,'),
      chunk('three', true),
      b(MARKER),
    ]));
    const got = await repliesUntilMarker(c);
    assert.deepEqual(
      got.map((r) => r.text),
      [
        '250 2.1.0 OK',
        '250 2.1.5 OK',
        '550 5.1.1 no such user',
        '250 2.1.5 OK',
        '250 2.1.5 OK',
        '250 2.0.0 4 octets received',
        '250 2.0.0 4 octets received',
        '250 2.0.0 <x@example.com> stored',
        '250 2.0.0 <y@example.com> stored',
        '250 2.0.0 <z@example.com> stored',
      ],
    );
    assert.equal(rec.seen.length, 1);
    assert.equal(rec.seen[0]!.content.toString(), 'one,two,three');
  } finally {
    c.close();
  }
});

test('LMTP: handleDeliver with BDAT LAST: a throw fails only that recipient', async () => {
  const handler: Handler = {
    handleDeliver(_s, _ss, envelope, recipient) {
      assert.equal(envelope.originalContent!.toString(), 'abc\r\n.\r\ndef');
      if (recipient === 'bad@example.com') throw new Error('no');
      return '250 2.0.0 delivered';
    },
  };
  await using server = await start('LMTP', handler);
  const { c } = await greet(server.port, 'LMTP');
  try {
    c.send(Buffer.concat([
      b('MAIL FROM:<a@example.com>\r\nRCPT TO:<ok1@example.com>\r\nRCPT TO:<bad@example.com>\r\nRCPT TO:<ok2@example.com>\r\n'),
      chunk('abc\r\n.\r\n'),
      chunk('def', true),
      b(MARKER),
    ]));
    assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250, 250, 250, 250, 451, 250]);
  } finally {
    c.close();
  }
});

test('LMTP: BDAT LAST over the size limit gets one 552 per accepted recipient', async () => {
  const rec = new Rec();
  await using server = await start('LMTP', rec, { dataSizeLimit: 100 });
  const { c } = await greet(server.port, 'LMTP');
  try {
    c.send(Buffer.concat([
      b('MAIL FROM:<a@example.com>\r\nRCPT TO:<x@example.com>\r\nRCPT TO:<y@example.com>\r\n'),
      chunk('q'.repeat(60)),
      chunk('r'.repeat(60), true),
      b(MARKER),
    ]));
    const got = await repliesUntilMarker(c);
    assert.deepEqual(
      codes(got),
      [250, 250, 250, 250, 552, 552],
      `after BDAT LAST an LMTP client reads one reply per recipient; got ${JSON.stringify(got.map((r) => r.text))}`,
    );
    assert.equal(rec.seen.length, 0);
  } finally {
    c.close();
  }
});

test('LMTP: Mailbox via BDAT: one file for both recipients, byte-exact chunks', async () => {
  await withTempDir(async (dir) => {
    const maildir = join(dir, 'Maildir');
    await using server = await start('LMTP', new Mailbox(maildir));
    const { c } = await greet(server.port, 'LMTP');
    try {
      const one = b('Subject: bdat\r\n\r\n.\r\n..not unstuffed\r\n');
      const two = Buffer.concat([Buffer.from([0xc3, 0xa9, 0, 0x0a]), b('end\r\n')]);
      c.send(Buffer.concat([
        b('MAIL FROM:<s@example.com> BODY=BINARYMIME\r\nRCPT TO:<m1@example.com>\r\nRCPT TO:<m2@example.com>\r\n'),
        chunk(one),
        chunk(two, true),
        b(MARKER),
      ]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250, 250, 250, 250]);
      const files = await readMaildir(maildir);
      assert.deepEqual(files.map((f) => f.rcptTo), ['m1@example.com, m2@example.com']);
      for (const f of files) assert.ok(f.body.equals(Buffer.concat([one, two])), JSON.stringify(f.body.toString('latin1')));
    } finally {
      c.close();
    }
  });
});

test('ChunkReader + Body: exactly n bytes taken, the rest handed back; past the limit nothing is kept', () => {
  const body = new Body(10);
  const reader = new ChunkReader(8, body);
  assert.equal(reader.push(b('abc')), null);
  const rest = reader.push(b('defghQUIT\r\n'));
  assert.equal(rest?.toString(), 'QUIT\r\n');
  assert.ok(reader.done);
  assert.equal(body.content().toString(), 'abcdefgh');
  const second = new ChunkReader(8 * 1024 * 1024, body);
  const piece = Buffer.alloc(65536, 0x41);
  for (let i = 0; i < 127; i++) assert.equal(second.push(piece), null);
  assert.equal(second.done, false);
  const after = second.push(Buffer.concat([piece, b('NOOP\r\n')]));
  assert.equal(after?.toString(), 'NOOP\r\n');
  assert.ok(second.done);
  assert.ok(body.overflowed);
  assert.equal(body.size, 8 + 8 * 1024 * 1024, 'every byte counted');
  assert.equal(body.content().length, 0, 'nothing kept past the limit');
});

/** Reads replies up to the marker after sending `extra` and the marker. */
async function repliesUntilMarkerAfter(c: RawClient, extra: string) {
  c.send(extra + MARKER);
  return repliesUntilMarker(c);
}

for (const mode of MODES) {
  test(`${mode}: BDAT 999999999999999 LAST gets 552 at once and a close, not a 10-minute read`, async () => {
    const rec = new Rec();
    await using server = await start(mode, rec, { dataSizeLimit: 1000 });
    const { c } = await greet(server.port, mode);
    try {
      c.send(b(ENVELOPE + 'BDAT 999999999999999 LAST\r\n'));
      // Nothing of the chunk was sent: the reply cannot have waited for it.
      const got = await repliesUntilClose(c, 10, 5000);
      assert.deepEqual(codes(got), [250, 250, 552], JSON.stringify(got.map((r) => r.text)));
      assert.equal(got[2]!.text, '552 5.3.4 Error: message too big for system');
      // Past twice the limit and 32 MiB it is closed too, refused or not (no MAIL here).
      const d = await greet(server.port, mode);
      d.c.send(b('BDAT 33554433\r\n'));
      assert.deepEqual(codes(await repliesUntilClose(d.c, 10, 5000)), [503]);
      d.c.close();
      assert.equal(rec.seen.length, 0);
    } finally {
      c.close();
    }
  });

  test(`${mode}: a chunk over the limit but within the discard bound gets 552 before its bytes, which are dropped`, async () => {
    const rec = new Rec();
    await using server = await start(mode, rec, { dataSizeLimit: 100 });
    const { c } = await greet(server.port, mode);
    try {
      c.send(b('MAIL FROM:<a@example.com>\r\nRCPT TO:<x@example.com>\r\nRCPT TO:<y@example.com>\r\nBDAT 600 LAST\r\n'));
      const finals = mode === 'LMTP' ? [552, 552] : [552];
      const got: number[] = [];
      for (let i = 0; i < 3 + finals.length; i++) got.push((await c.reply()).code);
      assert.deepEqual(got, [250, 250, 250, ...finals]);
      // The chunk's bytes (would-be commands) come after the reply and run as nothing.
      c.send(b('QUIT\r\n'.repeat(100)));
      await expectCmd(c, 'NOOP', 250);
      c.send(Buffer.concat([b(ENVELOPE), chunk('fits', true), b(MARKER)]));
      assert.deepEqual(codes(await repliesUntilMarker(c)), [250, 250, 250]);
      assert.equal(rec.seen[0]!.content.toString(), 'fits');
    } finally {
      c.close();
    }
  });
}
