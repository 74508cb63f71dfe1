/**
 * The Proxy's upstream SMTP client (src/handlers/upstream.ts): the body encoder (CRLF
 * normalization and dot-stuffing, chunk by chunk), and the client over real sockets against a
 * tsmtpd upstream and scripted fake servers: replies (multi-line, refused, garbage, too long,
 * unasked), EHLO/HELO, STARTTLS (and what a server sends before its handshake), implicit TLS,
 * and every timeout.
 */
import { test, describe, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import * as fc from 'fast-check';
import { DataReader } from '../src/framing.js';
import type { SMTPServer } from '../src/handler.js';
import { DataEncoder, Upstream, UpstreamError, encodeData, toCRLF, type UpstreamOptions } from '../src/handlers/upstream.js';
import type { Envelope, Session } from '../src/session.js';
import { freePort } from './cli-util.js';
import { Recorder, startServer } from './helpers.js';
import { makeCertsIfPossible, needCerts, type Certs } from './tls-util.js';

const certs: Certs | null = makeCertsIfPossible();
after(() => certs?.cleanup());

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const b = (s: string): Buffer => Buffer.from(s, 'latin1');

function options(port: number, extra: Partial<UpstreamOptions> = {}): UpstreamOptions {
  return { host: '127.0.0.1', port, name: 'proxy.example', timeout: 3000, ...extra };
}

/** What the encoder must produce: lines normalized to CRLF, leading dots doubled, then the end. */
function reference(input: string): string {
  const text = input.replace(/\r\n|\r|\n/g, '\r\n');
  const stuffed = text.split('\r\n').map((line) => (line.startsWith('.') ? '.' + line : line)).join('\r\n');
  return stuffed + (stuffed === '' || stuffed.endsWith('\r\n') ? '' : '\r\n') + '.\r\n';
}

/** Encodes in the given pieces. */
function encodeInPieces(input: Buffer, cuts: number[]): Buffer {
  const encoder = new DataEncoder();
  const out: Buffer[] = [];
  let at = 0;
  for (const cut of [...cuts].sort((x, y) => x - y)) {
    out.push(encoder.push(input.subarray(at, cut)));
    at = cut;
  }
  out.push(encoder.push(input.subarray(at)), encoder.end());
  return Buffer.concat(out);
}

describe('DataEncoder', () => {
  test('normalizes bare CR and LF to CRLF, dot-stuffs, and ends with CRLF.CRLF', () => {
    const cases: Array<[string, string]> = [
      ['', '.\r\n'],
      ['a', 'a\r\n.\r\n'],
      ['a\r\n', 'a\r\n.\r\n'],
      ['.', '..\r\n.\r\n'],
      ['.\r\n', '..\r\n.\r\n'],
      ['\n.\n', '\r\n..\r\n.\r\n'],
      ['hello\n.\nMAIL FROM:<x>\r\n', 'hello\r\n..\r\nMAIL FROM:<x>\r\n.\r\n'],
      ['a\r.\rb', 'a\r\n..\r\nb\r\n.\r\n'],
      ['a\r\r\n\n.', 'a\r\n\r\n\r\n..\r\n.\r\n'],
      ['..two', '...two\r\n.\r\n'],
      ['x.\r\n.y', 'x.\r\n..y\r\n.\r\n'],
      ['end\r', 'end\r\n.\r\n'],
    ];
    for (const [input, want] of cases) {
      assert.equal(encodeData(b(input)).toString('latin1'), want, JSON.stringify(input));
      assert.equal(reference(input), want, `reference ${JSON.stringify(input)}`);
    }
  });

  test('the output does not depend on where the chunks split (every split, and byte by byte)', () => {
    const inputs = ['a\r\nb', '\r\n.\r\n', 'x\r', '\r\r\n\n', '.\n.\r.', 'hello\n.\nMAIL FROM:<e@x>\r\n..a\r\r'];
    for (const input of inputs) {
      const whole = encodeData(b(input)).toString('latin1');
      for (let i = 0; i <= input.length; i++) {
        for (let j = i; j <= input.length; j++) {
          assert.equal(encodeInPieces(b(input), [i, j]).toString('latin1'), whole, `${JSON.stringify(input)} cut at ${i},${j}`);
        }
      }
      const bytewise = encodeInPieces(b(input), Array.from({ length: input.length }, (_, k) => k));
      assert.equal(bytewise.toString('latin1'), whole);
    }
  });

  test('property: any bytes, any chunking: the reference output, which a DATA reader reads back as one message', () => {
    const alphabet = fc.constantFrom('\r', '\n', '.', 'a', '\r\n', '\r\n.\r\n', '\n.\n', 'MAIL FROM:<x@y>');
    fc.assert(
      fc.property(fc.array(alphabet, { maxLength: 40 }), fc.array(fc.nat(400), { maxLength: 6 }), (tokens, cutsRaw) => {
        const input = b(tokens.join(''));
        const cuts = cutsRaw.map((c) => c % (input.length + 1));
        const encoded = encodeInPieces(input, cuts);
        assert.equal(encoded.toString('latin1'), reference(input.toString('latin1')));
        // Only the last five bytes end the body; after them, nothing.
        const reader = new DataReader({ sizeLimit: 0 });
        const rest = reader.push(encoded);
        assert.ok(rest !== null && rest.length === 0, 'ends exactly at the end');
        const normalized = toCRLF(input).toString('latin1');
        const want = normalized === '' || normalized.endsWith('\r\n') ? normalized : normalized + '\r\n';
        assert.equal(reader.content().toString('latin1'), want);
      }),
      { numRuns: 500 },
    );
  });

  test('a large body in pieces is the same as at once', () => {
    const line = 'x'.repeat(70);
    const input = b(Array.from({ length: 20000 }, (_, i) => (i % 7 === 0 ? '.' : '') + line + (i % 3 === 0 ? '\n' : i % 3 === 1 ? '\r' : '\r\n')).join(''));
    const whole = encodeData(input);
    const cuts = Array.from({ length: 50 }, (_, i) => Math.floor((input.length * (i + 1)) / 51) + (i % 2));
    assert.ok(encodeInPieces(input, cuts).equals(whole));
    assert.equal(whole.toString('latin1'), reference(input.toString('latin1')));
  });
});

/** Records the session's TLS state at MAIL, and counts QUITs. */
class Upstreamish extends Recorder {
  tlsAtMail: Array<string | null> = [];
  quits = 0;
  handleMAIL(_s: SMTPServer, session: Session, envelope: Envelope, address: string): string {
    this.tlsAtMail.push(session.tls?.protocol ?? null);
    envelope.mailFrom = address;
    return '250 OK';
  }
  handleQUIT(): string {
    this.quits++;
    return '221 Bye';
  }
}

describe('Upstream against a tsmtpd server', () => {
  test('EHLO, MAIL, RCPT, DATA with exact bytes, QUIT', async () => {
    const handler = new Upstreamish();
    await using server = await startServer(handler, { logger: quiet });
    const up = await Upstream.connect(options(server.port));
    try {
      assert.ok(up.supports('SIZE') && up.supports('8bitmime') && up.supports('SMTPUTF8'));
      assert.equal(up.extensions.get('SIZE'), '33554432');
      assert.equal(up.secure, false);
      assert.deepEqual(await up.command('MAIL FROM:<a@example.com>'), { code: 250, lines: ['2.1.0 OK'] });
      assert.equal((await up.command('RCPT TO:<b@example.com>')).code, 250);
      const bad = await up.command('RCPT TO:<no brackets');
      assert.equal(bad.code, 501, 'a refusal is a reply, not an error');
      const final = await up.data([b('Subject: s\r\n\r\nhello\n.\nQUIT\r\n'), b('..dots\r'), b('\nend')]);
      assert.equal(final.code, 250);
      assert.equal(handler.messages.length, 1);
      assert.equal(handler.messages[0]!.content.toString('latin1'), 'Subject: s\r\n\r\nhello\r\n.\r\nQUIT\r\n..dots\r\nend\r\n');
      assert.ok(up.open);
      up.quit();
      assert.equal(up.open, false);
      await waitFor(() => handler.quits === 1, 'QUIT');
      await assert.rejects(up.command('NOOP'), UpstreamError);
    } finally {
      up.close();
    }
  });

  test('DATA refused is returned as the reply', async () => {
    const handler = { handleRCPT: () => '250 OK', handleDATA: () => '250 OK' };
    await using server = await startServer(handler, { logger: quiet });
    const up = await Upstream.connect(options(server.port));
    try {
      // No RCPT: the server refuses DATA itself.
      assert.equal((await up.command('MAIL FROM:<a@example.com>')).code, 250);
      const r = await up.data([b('x')]);
      assert.equal(r.code, 503);
      assert.ok(up.open, 'still usable');
    } finally {
      up.close();
    }
  });

  test('the idle timeout says QUIT and closes, and does not keep the process alive meanwhile', async () => {
    const handler = new Upstreamish();
    await using server = await startServer(handler, { logger: quiet });
    const up = await Upstream.connect(options(server.port, { idleTimeout: 200 }));
    try {
      assert.equal((await up.command('MAIL FROM:<a@example.com>')).code, 250);
      assert.ok(up.open);
      await waitFor(() => handler.quits === 1, 'the idle QUIT');
      await waitFor(() => !up.open, 'closed');
      await assert.rejects(up.command('RCPT TO:<b@example.com>'), UpstreamError);
    } finally {
      up.close();
    }
  });

  test('STARTTLS when offered: verified, EHLO again, the session is encrypted', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new Upstreamish();
    await using server = await startServer(handler, { logger: quiet, tlsContext: { cert: certs.server.cert, key: certs.server.key } });
    const up = await Upstream.connect(options(server.port, { tls: { ca: certs.ca } }));
    try {
      assert.equal(up.secure, true);
      assert.equal(up.supports('STARTTLS'), false, 'the EHLO after the handshake');
      assert.equal((await up.command('MAIL FROM:<a@example.com>')).code, 250);
      assert.match(handler.tlsAtMail[0] ?? '', /^TLSv1\.[23]$/);
    } finally {
      up.close();
    }
  });

  test('STARTTLS with a certificate that does not verify fails the connection (no silent fallback)', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new Recorder(), { logger: quiet, tlsContext: { cert: certs.server.cert, key: certs.server.key } });
    await assert.rejects(Upstream.connect(options(server.port)), (e: UpstreamError) => e.code === 'ETLS');
  });

  test('ignoreTLS: stays in clear although STARTTLS is offered', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new Upstreamish();
    await using server = await startServer(handler, { logger: quiet, tlsContext: { cert: certs.server.cert, key: certs.server.key } });
    const up = await Upstream.connect(options(server.port, { ignoreTLS: true }));
    try {
      assert.equal(up.secure, false);
      assert.ok(up.supports('STARTTLS'));
      assert.equal((await up.command('MAIL FROM:<a@example.com>')).code, 250);
      assert.deepEqual(handler.tlsAtMail, [null]);
    } finally {
      up.close();
    }
  });

  test('secure: TLS from the first byte (SMTPS)', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const handler = new Upstreamish();
    await using server = await startServer(handler, { logger: quiet, tls: { cert: certs.server.cert, key: certs.server.key } });
    const up = await Upstream.connect(options(server.port, { secure: true, tls: { ca: certs.ca } }));
    try {
      assert.equal(up.secure, true);
      assert.equal((await up.command('MAIL FROM:<a@example.com>')).code, 250);
      assert.match(handler.tlsAtMail[0] ?? '', /^TLSv1\.[23]$/);
    } finally {
      up.close();
    }
  });
});

/**
 * A scripted server: `greeting` first, then `answer(line)` for each command line (a string to
 * send, or null to send nothing). `received` keeps every line.
 */
async function fake(
  answer: (line: string, socket: net.Socket) => string | null,
  greeting: string | null = '220 fake ESMTP\r\n',
): Promise<{ port: number; received: string[]; [Symbol.asyncDispose](): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const received: string[] = [];
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    if (greeting !== null) socket.write(greeting);
    let buf = '';
    socket.on('data', (chunk: Buffer) => {
      buf += chunk.toString('latin1');
      let nl: number;
      while ((nl = buf.indexOf('\r\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        received.push(line);
        const reply = answer(line, socket);
        if (reply !== null && !socket.destroyed) socket.write(reply);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    received,
    async [Symbol.asyncDispose]() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

const EHLO_OK = '250-fake.example hello\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250 AUTH=PLAIN LOGIN\r\n';

describe('Upstream against scripted servers', () => {
  test('multi-line replies and EHLO keywords', async () => {
    await using server = await fake((line) => (line.startsWith('EHLO') ? EHLO_OK : line === 'NOOP' ? '250-one\r\n250-two\r\n250 three\r\n' : '250 ok\r\n'));
    const up = await Upstream.connect(options(server.port));
    try {
      assert.deepEqual([...up.extensions], [['SIZE', '1000'], ['8BITMIME', ''], ['AUTH', 'PLAIN LOGIN']]);
      assert.deepEqual(await up.command('NOOP'), { code: 250, lines: ['one', 'two', 'three'] });
      assert.deepEqual(server.received, ['EHLO proxy.example', 'NOOP']);
    } finally {
      up.close();
    }
  });

  test('replies split anywhere and ended by bare LF are read whole', async () => {
    await using server = await fake((line, socket) => {
      if (!line.startsWith('EHLO')) return '250 ok\r\n';
      const reply = '250-fake\n250-PIPE';
      socket.write(reply.slice(0, 7));
      setTimeout(() => socket.write(reply.slice(7) + 'LINING\r\n250 HELP\r\n'), 20);
      return null;
    });
    const up = await Upstream.connect(options(server.port));
    try {
      assert.deepEqual([...up.extensions.keys()], ['PIPELINING', 'HELP']);
    } finally {
      up.close();
    }
  });

  test('EHLO refused: HELO, and no extensions', async () => {
    await using server = await fake((line) => (line.startsWith('EHLO') ? '502 5.5.1 what?\r\n' : '250 ok\r\n'));
    const up = await Upstream.connect(options(server.port));
    try {
      assert.equal(up.extensions.size, 0);
      assert.deepEqual(server.received, ['EHLO proxy.example', 'HELO proxy.example']);
    } finally {
      up.close();
    }
  });

  test('EHLO and HELO refused: EHELO with the reply', async () => {
    await using server = await fake(() => '550 5.7.1 go away\r\n');
    await assert.rejects(Upstream.connect(options(server.port)), (e: UpstreamError) => e.code === 'EHELO' && e.reply?.code === 550);
  });

  test('a greeting other than 220: EGREETING with the reply', async () => {
    for (const greeting of ['554 5.3.2 no service\r\n', '421 4.3.2 busy\r\n']) {
      await using server = await fake(() => null, greeting);
      await assert.rejects(
        Upstream.connect(options(server.port)),
        (e: UpstreamError) => e.code === 'EGREETING' && e.reply?.code === Number(greeting.slice(0, 3)),
      );
    }
  });

  test('what is not SMTP fails the connection with EPROTOCOL', async () => {
    const cases = [
      'HTTP/1.1 400 Bad Request\r\n',
      '250-one\r\n251 two\r\n', // codes differ within one reply
      '2500 x\r\n',
      '150 x\r\n',
      '250-' + 'x'.repeat(10000) + '\r\n', // line too long
      '250-x\r\n'.repeat(300), // too many lines
      '250 x\r\n'.repeat(10), // replies nobody asked for
    ];
    for (const bad of cases) {
      await using server = await fake((line) => (line.startsWith('EHLO') ? bad : '250 ok\r\n'));
      await assert.rejects(Upstream.connect(options(server.port)), (e: UpstreamError) => e.code === 'EPROTOCOL', JSON.stringify(bad.slice(0, 30)));
    }
  });

  test('a refused connection: ECONNECTION', async () => {
    const port = await freePort();
    await assert.rejects(Upstream.connect(options(port)), (e: UpstreamError) => e.code === 'ECONNECTION');
  });

  test('no greeting, no reply: ETIMEDOUT within the timeout', async () => {
    await using silent = await fake(() => null, null);
    let started = Date.now();
    await assert.rejects(Upstream.connect(options(silent.port, { timeout: 200 })), (e: UpstreamError) => e.code === 'ETIMEDOUT');
    assert.ok(Date.now() - started < 2000);

    await using slow = await fake((line) => (line.startsWith('EHLO') ? '250 ok\r\n' : null));
    const up = await Upstream.connect(options(slow.port, { timeout: 200 }));
    started = Date.now();
    await assert.rejects(up.command('MAIL FROM:<a@b>'), (e: UpstreamError) => e.code === 'ETIMEDOUT');
    assert.ok(Date.now() - started < 2000);
    assert.equal(up.open, false);
  });

  test('the upstream closing mid-command: ECLOSED; a 421 is read, and the connection is then done', async () => {
    await using server = await fake((line, socket) => {
      if (line.startsWith('EHLO')) return '250 ok\r\n';
      if (line.startsWith('MAIL')) return '421 4.3.2 bye\r\n';
      socket.destroy();
      return null;
    });
    const up = await Upstream.connect(options(server.port));
    assert.equal((await up.command('MAIL FROM:<a@b>')).code, 421);
    assert.equal(up.open, false);
    await assert.rejects(up.command('RCPT TO:<c@d>'), UpstreamError);

    const up2 = await Upstream.connect(options(server.port));
    await assert.rejects(up2.command('RSET'), (e: UpstreamError) => e.code === 'ECLOSED');
  });

  test('commands with CR or LF are refused before anything is sent', async () => {
    await using server = await fake((line) => (line.startsWith('EHLO') ? '250 ok\r\n' : '250 ok\r\n'));
    const up = await Upstream.connect(options(server.port));
    try {
      await assert.rejects(up.command('MAIL FROM:<a@b>\r\nRCPT TO:<c@d>'), TypeError);
      assert.deepEqual(server.received, ['EHLO proxy.example']);
    } finally {
      up.close();
    }
  });

  test('STARTTLS: what the server sent after its 220 and before the handshake is thrown away', async (t: TestContext) => {
    if (!needCerts(t, certs)) return;
    const c = certs;
    const sockets = new Set<net.Socket>();
    const seen: string[] = [];
    const server = net.createServer((plain) => {
      sockets.add(plain);
      plain.on('error', () => {});
      plain.write('220 fake ESMTP\r\n');
      let buf = '';
      const onPlain = (chunk: Buffer) => {
        buf += chunk.toString('latin1');
        let nl: number;
        while ((nl = buf.indexOf('\r\n')) !== -1) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 2);
          seen.push(line);
          if (line.startsWith('EHLO')) plain.write('250-fake\r\n250 STARTTLS\r\n');
          if (line === 'STARTTLS') {
            plain.off('data', onPlain);
            // The injection: replies in clear, after the 220, that must not be taken as answers.
            plain.write('220 go ahead\r\n250-injected\r\n250 INJECTED\r\n');
            const secure = new tls.TLSSocket(plain, { isServer: true, cert: c.server.cert, key: c.server.key });
            secure.on('error', () => {});
            let tbuf = '';
            secure.on('data', (d: Buffer) => {
              tbuf += d.toString('latin1');
              let n: number;
              while ((n = tbuf.indexOf('\r\n')) !== -1) {
                const l = tbuf.slice(0, n);
                tbuf = tbuf.slice(n + 2);
                seen.push(`tls: ${l}`);
                secure.write(l.startsWith('EHLO') ? '250-fake\r\n250 X-AFTER-TLS\r\n' : '250 2.0.0 real\r\n');
              }
            });
            return;
          }
        }
      };
      plain.on('data', onPlain);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const up = await Upstream.connect(options((server.address() as net.AddressInfo).port, { tls: { ca: c.ca } }));
      try {
        assert.equal(up.secure, true);
        assert.deepEqual([...up.extensions.keys()], ['X-AFTER-TLS']);
        assert.deepEqual(await up.command('NOOP'), { code: 250, lines: ['2.0.0 real'] });
        assert.deepEqual(seen, ['EHLO proxy.example', 'STARTTLS', 'tls: EHLO proxy.example', 'tls: NOOP']);
      } finally {
        up.close();
      }
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    }
  });

  test('a refused STARTTLS leaves the session in clear', async () => {
    await using server = await fake((line) => (line.startsWith('EHLO') ? '250-fake\r\n250 STARTTLS\r\n' : line === 'STARTTLS' ? '454 4.7.0 TLS not available\r\n' : '250 ok\r\n'));
    const up = await Upstream.connect(options(server.port));
    try {
      assert.equal(up.secure, false);
      assert.equal((await up.command('MAIL FROM:<a@b>')).code, 250);
    } finally {
      up.close();
    }
  });
});

async function waitFor(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
