/**
 * Message and AsyncMessage over real sockets: a subclass gets a parsed message (subject, text,
 * attachments) carrying the X- headers; a handleMessage that throws gives a 451 and the session
 * goes on. prepareMessage (the raw-bytes form) directly.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { AsyncMessage, Message, type ParsedMail } from '../src/handlers/message.js';
import { prepareMessage } from '../src/handlers/headers.js';
import { Envelope, Session } from '../src/session.js';
import { greeted, startServer, type RawClient } from './helpers.js';

const ATTACHMENT = Buffer.from('%PDF-1.4 not really a pdf \x00\xff', 'latin1');

const MULTIPART = [
  'From: =?UTF-8?Q?Anne_=C3=84rt?= <anne@example.com>',
  'To: bart@example.com',
  'Subject: =?ISO-8859-1?Q?caf=E9_report?=',
  'X-Peer: 6.6.6.6:666',
  'MIME-Version: 1.0',
  'Content-Type: multipart/mixed; boundary="XYZ"',
  '',
  '--XYZ',
  'Content-Type: text/plain; charset=windows-1252',
  'Content-Transfer-Encoding: quoted-printable',
  '',
  '=93Hello=94 =80 5',
  '..a line that starts with a dot',
  '--XYZ',
  'Content-Type: application/pdf',
  'Content-Disposition: attachment; filename="r.pdf"',
  'Content-Transfer-Encoding: base64',
  '',
  ATTACHMENT.toString('base64'),
  '--XYZ--',
  '',
].join('\r\n');

class Collector extends Message {
  messages: ParsedMail[] = [];
  handleMessage(message: ParsedMail): void {
    this.messages.push(message);
  }
}

async function transaction(c: RawClient, body: string, rcpts = ['bart@example.com']): Promise<string> {
  assert.equal((await c.cmd('MAIL FROM:<anne@example.com>')).code, 250);
  for (const r of rcpts) assert.equal((await c.cmd(`RCPT TO:<${r}>`)).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send(body + '.\r\n');
  return (await c.reply()).text;
}

describe('Message', () => {
  test('a subclass receives the parsed message with the X- headers', async () => {
    const handler = new Collector();
    await using server = await startServer(handler);
    const c = await greeted(server.port);
    try {
      assert.equal(await transaction(c, MULTIPART, ['bart@example.com', 'cate@example.com']), '250 2.6.0 OK');
      assert.equal(handler.messages.length, 1);
      const m = handler.messages[0]!;
      assert.equal(m.subject, 'café report');
      assert.equal(m.from?.text, '"Anne Ärt" <anne@example.com>');
      // windows-1252 smart quotes and euro sign: the reason for mailparser over postal-mime.
      assert.equal(m.text, '“Hello” € 5\n.a line that starts with a dot');
      assert.equal(m.attachments.length, 1);
      assert.equal(m.attachments[0]!.filename, 'r.pdf');
      assert.equal(m.attachments[0]!.contentType, 'application/pdf');
      assert.deepEqual(m.attachments[0]!.content, ATTACHMENT);
      // Ours, a string, whatever the client forged.
      assert.equal(m.headers.get('x-peer'), `127.0.0.1:${c.socket.localPort}`);
      assert.equal(m.headers.get('x-mailfrom'), 'anne@example.com');
      assert.equal(m.headers.get('x-rcptto'), 'bart@example.com, cate@example.com');
      const peers = m.headerLines.filter((h) => h.key === 'x-peer').map((h) => h.line);
      assert.deepEqual(peers, [`X-Peer: 127.0.0.1:${c.socket.localPort}`, 'X-Peer: 6.6.6.6:666']);
    } finally {
      c.close();
    }
  });

  test('works the same with decodeData (the raw bytes are parsed)', async () => {
    const handler = new Collector();
    await using server = await startServer(handler, { decodeData: true });
    const c = await greeted(server.port);
    try {
      assert.equal(await transaction(c, MULTIPART), '250 2.6.0 OK');
      assert.equal(handler.messages[0]!.text, '“Hello” € 5\n.a line that starts with a dot');
    } finally {
      c.close();
    }
  });

  test('a throwing handleMessage gives a 451 and the session goes on', async () => {
    class Picky extends Message {
      seen: string[] = [];
      handleMessage(message: ParsedMail): void {
        if (message.subject === 'bad') throw new Error('refused by handleMessage');
        this.seen.push(message.subject ?? '');
      }
    }
    const handler = new Picky();
    await using server = await startServer(handler, { logger: quiet });
    const c = await greeted(server.port);
    try {
      const r = await transaction(c, 'Subject: bad\r\n\r\nx\r\n');
      assert.match(r, /^451 /);
      assert.doesNotMatch(r, /refused by handleMessage/, 'no internals in the reply');
      assert.equal(await transaction(c, 'Subject: good\r\n\r\ny\r\n'), '250 2.6.0 OK');
      assert.deepEqual(handler.seen, ['good']);
      assert.equal((await c.cmd('QUIT')).code, 221);
    } finally {
      c.close();
    }
  });
});

describe('AsyncMessage', () => {
  test('handleMessage is awaited before the reply', async () => {
    class Slow extends AsyncMessage {
      done: string[] = [];
      async handleMessage(message: ParsedMail): Promise<void> {
        await new Promise((r) => setTimeout(r, 50));
        this.done.push(message.subject ?? '');
      }
    }
    const handler = new Slow();
    await using server = await startServer(handler);
    const c = await greeted(server.port);
    try {
      assert.equal(await transaction(c, 'Subject: one\r\n\r\nx\r\n'), '250 2.6.0 OK');
      assert.deepEqual(handler.done, ['one'], 'finished before the 250 was sent');
    } finally {
      c.close();
    }
  });

  test('a rejection gives a 451 and the session goes on', async () => {
    class Rejecting extends AsyncMessage {
      count = 0;
      async handleMessage(): Promise<void> {
        if (++this.count === 1) throw new Error('first one fails');
      }
    }
    await using server = await startServer(new Rejecting(), { logger: quiet });
    const c = await greeted(server.port);
    try {
      assert.match(await transaction(c, 'Subject: a\r\n\r\nx\r\n'), /^451 /);
      assert.equal(await transaction(c, 'Subject: b\r\n\r\nx\r\n'), '250 2.6.0 OK');
    } finally {
      c.close();
    }
  });
});

describe('prepareMessage', () => {
  const session = new Session({ address: '::1', port: 2525, family: 'IPv6' });

  function envelope(body: string, mailFrom = 'a@example.com', rcptTos = ['b@example.com', 'c@example.com']): Envelope {
    const e = new Envelope();
    e.mailFrom = mailFrom;
    e.rcptTos = rcptTos;
    e.originalContent = Buffer.from(body, 'latin1');
    e.content = e.originalContent;
    return e;
  }

  test('prepends the three headers with the message\'s CRLF, body byte for byte', () => {
    const body = 'Subject: s\r\n\r\nbare\nLF and \xff\r\n';
    assert.equal(
      prepareMessage(session, envelope(body)).toString('latin1'),
      'X-Peer: [::1]:2525\r\nX-MailFrom: a@example.com\r\nX-RcptTo: b@example.com, c@example.com\r\n' + body,
    );
  });

  test('uses LF for an LF message, and <> is an empty X-MailFrom', () => {
    assert.equal(
      prepareMessage(session, envelope('Subject: s\n\nb\n', '', ['b@example.com'])).toString('latin1'),
      'X-Peer: [::1]:2525\nX-MailFrom: \nX-RcptTo: b@example.com\nSubject: s\n\nb\n',
    );
  });

  test('CR and LF in values cannot start a header', () => {
    const out = prepareMessage(session, envelope('\r\n', 'a@x\r\nBcc: v@x', ['r@x\nX-Evil: 1'])).toString('latin1');
    assert.equal(out, 'X-Peer: [::1]:2525\r\nX-MailFrom: a@x\\x0d\\x0aBcc: v@x\r\nX-RcptTo: r@x\\x0aX-Evil: 1\r\n\r\n');
  });
});

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
