/** nodemailer as a real client against a Controller: the happy paths a real sender takes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Envelope } from '../src/session.js';
import type { Session } from '../src/session.js';
import type { SMTPServer } from '../src/handler.js';
import type { ControllerOptions } from '../src/controller.js';
import dns from 'node:dns';
import { Controller } from '../src/controller.js';
import { Recorder, startServer } from './helpers.js';
import { smtpTransport } from './capture-util.js';

const transportFor = smtpTransport;

async function withServer(
  handler: Recorder,
  fn: (port: number) => Promise<void>,
  options: ControllerOptions = {},
): Promise<void> {
  await using controller = await startServer(handler, options);
  await fn(controller.port);
}

/** Header block and body of a stored message (CRLF line ends). */
function split(content: Buffer): { headers: string; body: string } {
  const text = content.toString('utf8');
  const at = text.indexOf('\r\n\r\n');
  assert.ok(at >= 0, 'no end of headers');
  return { headers: text.slice(0, at + 2), body: text.slice(at + 4) };
}

test('plain text mail', async () => {
  const handler = new Recorder();
  await withServer(handler, async (port) => {
    const transport = transportFor(port);
    try {
      const info = await transport.sendMail({
        from: 'Anne <anne@example.org>',
        to: 'bart@example.com',
        subject: 'Plain hello',
        text: 'Hello Bart,\nthis is plain text.\n',
      });
      assert.deepEqual(info.accepted, ['bart@example.com']);
      assert.deepEqual(info.rejected, []);
      assert.match(String(info.response), /^250 /);
    } finally {
      transport.close();
    }
  });
  assert.equal(handler.messages.length, 1);
  const m = handler.messages[0]!;
  assert.equal(m.mailFrom, 'anne@example.org');
  assert.deepEqual(m.rcptTos, ['bart@example.com']);
  const { headers, body } = split(m.content);
  assert.match(headers, /^Subject: Plain hello\r$/m);
  assert.match(headers, /^From: Anne <anne@example\.org>\r$/m);
  assert.match(headers, /^To: bart@example\.com\r$/m);
  assert.equal(body, 'Hello Bart,\r\nthis is plain text.\r\n');
});

test('multiple recipients (to, cc, bcc) in one transaction', async () => {
  const handler = new Recorder();
  const to = ['one@example.com', 'two@example.com'];
  await withServer(handler, async (port) => {
    const transport = transportFor(port);
    try {
      const info = await transport.sendMail({
        from: 'sender@example.org',
        to,
        cc: 'three@example.net',
        bcc: 'hidden@example.net',
        subject: 'many',
        text: 'to many',
      });
      assert.deepEqual([...info.accepted].sort(), [...to, 'three@example.net', 'hidden@example.net'].sort());
      assert.deepEqual(info.rejected, []);
    } finally {
      transport.close();
    }
  });
  assert.equal(handler.messages.length, 1, 'one message, not one per recipient');
  const m = handler.messages[0]!;
  assert.deepEqual([...m.rcptTos].sort(), [...to, 'three@example.net', 'hidden@example.net'].sort());
  const { headers } = split(m.content);
  assert.doesNotMatch(headers, /hidden@example\.net/, 'Bcc leaked into headers');
  assert.match(headers, /^Cc: three@example\.net\r$/m);
});

test('a binary attachment arrives inside the stored MIME', async () => {
  const handler = new Recorder();
  const data = randomBytes(50_000);
  // Include every byte value, CR, LF and a ".\r\n" sequence in the binary too.
  const attachment = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), Buffer.from('\r\n.\r\n'), data]);
  await withServer(handler, async (port) => {
    const transport = transportFor(port);
    try {
      const info = await transport.sendMail({
        from: 'sender@example.org',
        to: 'rcpt@example.com',
        subject: 'with attachment',
        text: 'see attached',
        attachments: [{ filename: 'blob.bin', content: attachment, contentType: 'application/octet-stream' }],
      });
      assert.deepEqual(info.accepted, ['rcpt@example.com']);
    } finally {
      transport.close();
    }
  });
  assert.equal(handler.messages.length, 1);
  const text = handler.messages[0]!.content.toString('latin1');
  const boundary = /boundary="?([^"\r\n;]+)"?/.exec(text)?.[1];
  assert.ok(boundary, 'no multipart boundary');
  const parts = text.split(`--${boundary}`);
  const part = parts.find((p) => /filename="?blob\.bin"?/.test(p));
  assert.ok(part, 'no part for blob.bin');
  const at = part.indexOf('\r\n\r\n');
  const partHeaders = part.slice(0, at);
  assert.match(partHeaders, /Content-Transfer-Encoding: base64/i);
  const decoded = Buffer.from(part.slice(at + 4).replace(/\s+/g, ''), 'base64');
  assert.equal(decoded.length, attachment.length);
  assert.ok(decoded.equals(attachment), 'attachment bytes differ');
});

test('a 2 MiB message arrives byte for byte', async () => {
  const handler = new Recorder();
  const line = 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.-_:;,!?'; // 70 chars
  const lines: string[] = [];
  let size = 0;
  for (let i = 0; size < 2 * 1024 * 1024; i++) {
    const l = `${String(i).padStart(6, '0')} ${line}`;
    lines.push(l);
    size += l.length + 2;
  }
  const raw =
    'From: sender@example.org\r\nTo: big@example.com\r\nSubject: big\r\nMessage-ID: <big@example.org>\r\n\r\n' +
    lines.join('\r\n') +
    '\r\n';
  assert.ok(raw.length > 2 * 1024 * 1024);
  await withServer(handler, async (port) => {
    const transport = transportFor(port);
    try {
      const info = await transport.sendMail({
        envelope: { from: 'sender@example.org', to: ['big@example.com'] },
        raw,
      });
      assert.deepEqual(info.accepted, ['big@example.com']);
    } finally {
      transport.close();
    }
  });
  assert.equal(handler.messages.length, 1);
  const content = handler.messages[0]!.content;
  assert.equal(content.length, raw.length);
  assert.ok(content.equals(Buffer.from(raw)), 'content differs from what was sent');
});

test('a 2 MiB message built by nodemailer (text body) arrives intact', async () => {
  const handler = new Recorder();
  const text = Array.from({ length: 30_000 }, (_, i) => `line ${i} ${'x'.repeat(60)}`).join('\n') + '\n';
  assert.ok(text.length > 2 * 1024 * 1024);
  await withServer(handler, async (port) => {
    const transport = transportFor(port);
    try {
      await transport.sendMail({ from: 'a@example.org', to: 'b@example.com', subject: 'big text', text });
    } finally {
      transport.close();
    }
  });
  assert.equal(handler.messages.length, 1);
  const { body } = split(handler.messages[0]!.content);
  assert.equal(body, text.replace(/\n/g, '\r\n'));
});

class RejectingRecorder extends Recorder {
  handleRCPT(_server: SMTPServer, _session: Session, envelope: Envelope, address: string): string {
    if (address.startsWith('nobody@')) return '550 5.1.1 no such user';
    envelope.rcptTos.push(address);
    return '250 OK';
  }
}

test('a recipient refused by handleRCPT is in info.rejected, the others are accepted', async () => {
  const handler = new RejectingRecorder();
  await withServer(handler, async (port) => {
    const transport = transportFor(port);
    try {
      const info = await transport.sendMail({
        from: 'sender@example.org',
        to: ['good@example.com', 'nobody@example.com', 'fine@example.net'],
        subject: 'partial',
        text: 'some get it',
      });
      assert.deepEqual([...info.accepted].sort(), ['fine@example.net', 'good@example.com']);
      assert.deepEqual(info.rejected, ['nobody@example.com']);
      const errors = (info as unknown as { rejectedErrors?: Array<{ responseCode?: number }> }).rejectedErrors;
      if (errors !== undefined) assert.equal(errors[0]?.responseCode, 550);
    } finally {
      transport.close();
    }
  });
  assert.equal(handler.messages.length, 1);
  assert.deepEqual(handler.messages[0]!.rcptTos, ['good@example.com', 'fine@example.net']);
});

test('every recipient refused: sendMail rejects and nothing is stored', async () => {
  const handler = new RejectingRecorder();
  await withServer(handler, async (port) => {
    const transport = transportFor(port);
    try {
      await assert.rejects(
        transport.sendMail({ from: 'sender@example.org', to: 'nobody@example.com', subject: 'x', text: 'y' }),
        (error: { code?: string; responseCode?: number }) => {
          assert.equal(error.code, 'EENVELOPE');
          assert.equal(error.responseCode, 550);
          return true;
        },
      );
    } finally {
      transport.close();
    }
  });
  assert.equal(handler.messages.length, 0);
});

class ParamRecorder extends Recorder {
  mailOptions: Array<Record<string, unknown>> = [];
  override handleDATA(server: unknown, session: unknown, envelope: Envelope): string {
    this.mailOptions.push({ ...envelope.mailOptions, smtputf8: envelope.smtputf8 });
    return super.handleDATA(server, session, envelope);
  }
}

test('SMTPUTF8: an address with a UTF-8 local part, with enableSMTPUTF8', async () => {
  const handler = new ParamRecorder();
  await withServer(
    handler,
    async (port) => {
      const transport = transportFor(port);
      try {
        const info = await transport.sendMail({
          from: 'jörg@example.org',
          to: ['用户@example.com', 'plain@example.com'],
          subject: 'Grüße aus Köln',
          text: 'Grüße, 用户!\n',
        });
        assert.deepEqual([...info.accepted].sort(), ['plain@example.com', '用户@example.com'].sort());
        assert.deepEqual(info.rejected, []);
      } finally {
        transport.close();
      }
    },
    { enableSMTPUTF8: true },
  );
  assert.equal(handler.messages.length, 1);
  const m = handler.messages[0]!;
  assert.equal(m.mailFrom, 'jörg@example.org');
  assert.deepEqual([...m.rcptTos].sort(), ['plain@example.com', '用户@example.com'].sort());
  assert.ok(m.mailParams.includes('SMTPUTF8'), `MAIL parameters: ${m.mailParams.join(' ')}`);
  assert.equal(handler.mailOptions[0]!.smtputf8, true);
});

test('SMTPUTF8 address without enableSMTPUTF8: refused, nothing stored', async () => {
  const handler = new Recorder();
  await withServer(
    handler,
    async (port) => {
      const transport = transportFor(port);
      try {
        await assert.rejects(
          transport.sendMail({ from: 'jörg@example.org', to: 'plain@example.com', subject: 'x', text: 'y' }),
        );
      } finally {
        transport.close();
      }
    },
    { enableSMTPUTF8: false },
  );
  assert.equal(handler.messages.length, 0);
});

test('lines starting with "." survive the dot-stuffing round trip', async () => {
  const handler = new Recorder();
  const bodyLines = ['.', '..', '...', '.hidden', '. space', 'x', '.\t', '..double', 'end.', '.'];
  const text = bodyLines.join('\n') + '\n';
  const raw =
    'From: a@example.org\r\nTo: b@example.com\r\nSubject: dots\r\n\r\n' + bodyLines.join('\r\n') + '\r\n';
  await withServer(handler, async (port) => {
    const transport = transportFor(port);
    try {
      await transport.sendMail({ from: 'a@example.org', to: 'b@example.com', subject: 'dots', text });
      await transport.sendMail({ envelope: { from: 'a@example.org', to: ['b@example.com'] }, raw });
      // A raw message that does not end in CRLF: the client adds it before ".".
      await transport.sendMail({ envelope: { from: 'a@example.org', to: ['b@example.com'] }, raw: raw + '.' });
    } finally {
      transport.close();
    }
  });
  assert.equal(handler.messages.length, 3);
  assert.equal(split(handler.messages[0]!.content).body, bodyLines.join('\r\n') + '\r\n');
  assert.equal(handler.messages[1]!.content.toString('utf8'), raw);
  assert.equal(handler.messages[2]!.content.toString('utf8'), raw + '.\r\n');
});

class SessionCounter extends Recorder {
  sessions = new Set<unknown>();
  override handleDATA(server: unknown, session: unknown, envelope: Envelope): string {
    this.sessions.add(session);
    return super.handleDATA(server, session, envelope);
  }
}

test('pooled transport: 20 messages over few connections, each arrives exactly once', async () => {
  const handler = new SessionCounter();
  await withServer(handler, async (port) => {
    const transport = transportFor(port, { pool: true, maxConnections: 2, maxMessages: 100 });
    try {
      const infos = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          transport.sendMail({
            from: 'pool@example.org',
            to: `r${i}@example.com`,
            subject: `pooled ${i}`,
            text: `message number ${i}`,
          }),
        ),
      );
      for (const [i, info] of infos.entries()) assert.deepEqual(info.accepted, [`r${i}@example.com`]);
    } finally {
      transport.close();
    }
  });
  assert.equal(handler.messages.length, 20);
  const subjects = handler.messages.map((m) => /^Subject: (.*)\r$/m.exec(m.content.toString())?.[1]).sort();
  assert.deepEqual(subjects, Array.from({ length: 20 }, (_, i) => `pooled ${i}`).sort());
  for (const m of handler.messages) {
    const n = /^Subject: pooled (\d+)\r$/m.exec(m.content.toString())![1];
    assert.deepEqual(m.rcptTos, [`r${n}@example.com`]);
    assert.match(m.content.toString(), new RegExp(`message number ${n}\\r\\n$`));
  }
  assert.ok(handler.sessions.size >= 1 && handler.sessions.size <= 2, `${handler.sessions.size} connections`);
});

test("a Controller with no hostname takes nodemailer's mail for host 'localhost'", async () => {
  // nodemailer asks the DNS server about 'localhost' before /etc/hosts: answer "no such name"
  // here, so the test stays on this machine and nodemailer falls back to the system's lookup.
  const { resolve4, resolve6 } = dns.Resolver.prototype;
  const notFound = (_host: string, callback: (error: NodeJS.ErrnoException) => void) =>
    process.nextTick(callback, Object.assign(new Error('queryA ENOTFOUND'), { code: dns.NOTFOUND }));
  Object.assign(dns.Resolver.prototype, { resolve4: notFound, resolve6: notFound });
  const handler = new Recorder();
  try {
    await using controller = new Controller(handler, { port: 0 });
    await controller.start();
    const transport = transportFor(controller.port, { host: 'localhost' });
    try {
      const info = await transport.sendMail({ from: 'a@example.org', to: 'b@example.com', subject: 'via localhost', text: 'hi\n' });
      assert.deepEqual(info.accepted, ['b@example.com']);
    } finally {
      transport.close();
    }
  } finally {
    Object.assign(dns.Resolver.prototype, { resolve4, resolve6 });
  }
  assert.equal(handler.messages.length, 1);
});
