/** Capture's Maildir persistence: written before the 250, readable by Python's mailbox, reloaded at start, pruned. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Capture } from '../src/capture/capture.js';
import { greeted, startServer } from './helpers.js';
import { runCli } from './cli-util.js';

function hasPython(): boolean {
  try {
    execFileSync('python3', ['-c', 'import mailbox'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function deliver(port: number, rcpt: string, subject: string): Promise<string> {
  const c = await greeted(port);
  await c.cmd('MAIL FROM:<sender@example.com>');
  await c.cmd(`RCPT TO:<${rcpt}>`);
  await c.cmd('DATA');
  c.send(`Subject: ${subject}\r\nX-Tags: kept\r\n\r\nbody of ${subject}\r\n.\r\n`);
  const reply = await c.reply();
  c.close();
  return reply.text;
}

test('messages are files in new/ before the 250; read moves to cur/ with S; delete unlinks; a restart reloads', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tsmtpd-capture-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const first = new Capture({ maildir: dir });
  {
    await using server = await startServer(first);
    assert.match(await deliver(server.port, 'a@example.com', 'one'), /^250 /);
    assert.equal((await readdir(join(dir, 'new'))).length, 1, 'on disk when the client heard 250');
    await deliver(server.port, 'b@example.com', 'two');
    await deliver(server.port, 'c@example.com', 'three');
  }
  const [one, two, three] = first.inbox.list();
  one!.read = true;
  first.store.updated(one!);
  first.store.remove([three!.id]);
  await first.persistence!.flush();
  assert.equal((await readdir(join(dir, 'new'))).length, 1);
  const cur = await readdir(join(dir, 'cur'));
  assert.equal(cur.length, 1);
  assert.match(cur[0]!, /:2,S$/);

  if (hasPython()) {
    const out = execFileSync('python3', ['-c', 'import mailbox,sys\nfor m in mailbox.Maildir(sys.argv[1], create=False): print(m["subject"], m.get_flags())', dir], { encoding: 'utf8' });
    assert.deepEqual(out.trim().split('\n').sort(), ['one S', 'two '.trim()].sort());
  } else if (process.env['CI']) assert.fail('python3 missing: CI installs it');

  const again = new Capture({ maildir: dir });
  await again.init();
  const loaded = again.inbox.list();
  assert.deepEqual(loaded.map((m) => [m.id, m.subject, m.read]), [[one!.id, 'one', true], [two!.id, 'two', false]]);
  assert.deepEqual(loaded[1]!.envelope.rcptTos, ['b@example.com']);
  assert.equal(loaded[1]!.session.peer.address, '127.0.0.1');
  assert.deepEqual(loaded[1]!.tags, ['kept']);
  assert.equal(loaded[1]!.raw.toString('latin1').startsWith('Subject: two\r\n'), true, 'raw is the message as received');
});

test('pruning at start and on arrival unlinks the oldest files; foreign files are loaded too', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tsmtpd-capture-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const seed = new Capture({ maildir: dir });
  {
    await using server = await startServer(seed);
    for (const s of ['a', 'b', 'c']) await deliver(server.port, `${s}@example.com`, s);
  }
  await writeFile(join(dir, 'new', '1.foreign.host'), 'Subject: dropped in by hand\n\nhello\n');
  const pruned = new Capture({ maildir: dir, maxMessages: 2 });
  await pruned.init();
  await pruned.persistence!.flush();
  assert.equal(pruned.inbox.count, 2);
  assert.equal((await readdir(join(dir, 'new'))).length, 2);
  const subjects = pruned.inbox.list().map((m) => m.subject);
  assert.ok(subjects.includes('c'), JSON.stringify(subjects));
  await using server = await startServer(pruned);
  await deliver(server.port, 'd@example.com', 'd');
  await pruned.persistence!.flush();
  assert.equal((await readdir(join(dir, 'new'))).length, 2);
});

test('a Maildir that cannot be made fails at start, in the library and the CLI', async () => {
  await assert.rejects(new Capture({ maildir: '/proc/tsmtpd-no/x' }).init());
  const cli = await runCli(['-n', '-c', 'Capture', '/proc/tsmtpd-no/x', '--http', '127.0.0.1:0', '-l', '127.0.0.1:0']);
  assert.equal(cli.code, 2);
  assert.match(cli.stderr, /handler setup failed/);
});
