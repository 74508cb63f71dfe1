/**
 * `--auth-results[=ID]` and `--auth-results-dns`: the CLI wraps its handler in withAuthResults.
 * The checks ask a DNS server of the test's own on loopback (UDP), which serves the sender's SPF
 * record and answers NXDOMAIN to everything else, so no query leaves the machine.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawClient } from './helpers.js';
import { CliProcess, freePort, runCli } from './cli-util.js';

const TXT = 16;

/** The question's name and type, and where the question section ends. */
function question(query: Buffer): { name: string; type: number; end: number } {
  const labels: string[] = [];
  let i = 12;
  while (query[i] !== 0) {
    const length = query[i]!;
    labels.push(query.subarray(i + 1, i + 1 + length).toString('latin1'));
    i += length + 1;
  }
  return { name: labels.join('.').toLowerCase(), type: query.readUInt16BE(i + 1), end: i + 5 };
}

/** A DNS server on 127.0.0.1 answering TXT `records` and NXDOMAIN otherwise (RFC 1035 §4.1). */
async function fixtureDns(records: Record<string, string>): Promise<{ socket: Socket; port: number; asked: string[] }> {
  const socket = createSocket('udp4');
  const asked: string[] = [];
  socket.on('message', (query, peer) => {
    const q = question(query);
    asked.push(`${q.name}/${q.type}`);
    const txt = q.type === TXT ? records[q.name] : undefined;
    const header = Buffer.from(query.subarray(0, 12));
    header[2] = 0x80 | (query[2]! & 0x01); // QR, RD copied
    header[3] = txt === undefined ? 0x83 : 0x80; // RA; NXDOMAIN or no error
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(txt === undefined ? 0 : 1, 6);
    header.writeUInt32BE(0, 8); // no authority, no additional (the query's EDNS record is dropped)
    const parts = [header, query.subarray(12, q.end)];
    if (txt !== undefined) {
      const data = Buffer.concat([Buffer.from([txt.length]), Buffer.from(txt, 'latin1')]);
      const answer = Buffer.alloc(12);
      answer.writeUInt16BE(0xc00c, 0); // the question's name
      answer.writeUInt16BE(TXT, 2);
      answer.writeUInt16BE(1, 4);
      answer.writeUInt32BE(60, 6);
      answer.writeUInt16BE(data.length, 10);
      parts.push(answer, data);
    }
    socket.send(Buffer.concat(parts), peer.port, peer.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return { socket, port: socket.address().port, asked };
}

test('--auth-results=ID: one Authentication-Results header with our verdicts; a forged one naming ID is removed, another server\'s kept', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tsmtpd-authres-cli-'));
  const dns = await fixtureDns({ 'sender.test': 'v=spf1 ip4:127.0.0.1 -all' });
  const port = await freePort();
  const p = new CliProcess(['-n', '-c', 'Mailbox', dir, '-l', `127.0.0.1:${port}`, '--auth-results=mx.test', '--auth-results-dns', `127.0.0.1:${dns.port}`]);
  try {
    await p.listening();
    const c = await RawClient.connect(port);
    await c.reply();
    assert.equal((await c.cmd('EHLO client.sender.test')).code, 250);
    assert.equal((await c.cmd('MAIL FROM:<a@sender.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<b@example.test>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    const message = [
      'Authentication-Results: mx.test; dkim=pass header.d=bank.example; spf=pass',
      'Authentication-Results: other.example; spf=fail',
      'From: <a@sender.test>',
      'Subject: checked',
      '',
      'body',
      '.',
      '',
    ].join('\r\n');
    assert.equal((await c.cmd(message.slice(0, -2))).code, 250);
    await c.cmd('QUIT');
  } finally {
    await p.stop();
    dns.socket.close();
  }
  try {
    const files = await readdir(join(dir, 'new'));
    assert.equal(files.length, 1);
    const stored = await readFile(join(dir, 'new', files[0]!), 'latin1');
    const ours = stored.replace(/\r\n[ \t]+/g, ' ').split('\r\n').filter((line) => /^Authentication-Results:\s*mx\.test;/i.test(line));
    assert.equal(ours.length, 1, stored);
    assert.match(ours[0]!, /spf=pass/, 'the SPF record the fixture served was used');
    assert.doesNotMatch(stored, /header\.d=bank\.example/, 'the forged verdict is gone');
    assert.match(stored, /Authentication-Results: other\.example; spf=fail/, "another authserv-id's header stays");
    assert.ok(dns.asked.includes('sender.test/16'), `asked: ${dns.asked.join(' ')}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('--auth-results usage errors: exit 2, one line naming the option', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--auth-results=bad id'], /--auth-results: expected a domain name/],
    [['--auth-results=mx;x'], /--auth-results: expected a domain name/],
    [['--auth-results', '--auth-results-dns', '1.2.3'], /--auth-results-dns: expected IP/],
    [['--auth-results', '--auth-results-dns', '127.0.0.1:99999'], /--auth-results-dns: expected IP/],
    [['--auth-results-dns', '127.0.0.1'], /--auth-results-dns: needs --auth-results/],
  ];
  for (const [args, expected] of cases) {
    const port = await freePort();
    const r = await runCli(['-n', '-c', 'Sink', '-l', `127.0.0.1:${port}`, ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, expected);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});
