/**
 * Graceful shutdown (issue 8, item 4): Controller.stop({ deadline }) / close({ deadline }) and
 * the CLI's SIGTERM with transactions in flight. Connections between transactions get 421 at
 * once; a transaction in flight may finish until the deadline (its 250 is sent and the message
 * is stored); one still in DATA at the deadline gets 421 and leaves nothing in a Maildir.
 * A kill -9 mid-DATA never leaves a partial message in new/.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { Controller } from '../src/controller.js';
import { Mailbox } from '../src/handlers/mailbox.js';
import type { Handler, SMTPServer } from '../src/handler.js';
import type { Logger } from '../src/options.js';
import type { Envelope, Session } from '../src/session.js';
import { CliProcess, freePort } from './cli-util.js';
import { Probe, listDir, pool, readFiles, removeDir, sleep, tempDir, until } from './scale-util.js';

const quiet: Logger = { debugEnabled: false, debug() {}, info() {}, warn() {}, error() {} };

async function start(handler: Handler, extra: Record<string, unknown> = {}): Promise<Controller> {
  // A Maildir that exists from the start, so "tmp/ and new/ are empty" means something.
  if (handler instanceof Mailbox) await handler.init();
  const controller = new Controller(handler, { hostname: '127.0.0.1', port: 0, logger: quiet, ...extra });
  await controller.start();
  return controller;
}

/** Greeting, EHLO, MAIL, RCPT, DATA (354): the client is now sending a body. */
async function openData(port: number, tag = 'x'): Promise<Probe> {
  const p = await Probe.connect(port);
  assert.equal((await p.reply()).code, 220);
  assert.equal((await p.cmd('EHLO client.example')).code, 250);
  assert.equal((await p.cmd(`MAIL FROM:<${tag}@example.com>`)).code, 250);
  assert.equal((await p.cmd('RCPT TO:<b@example.com>')).code, 250);
  assert.equal((await p.cmd('DATA')).code, 354);
  return p;
}

async function greetedProbe(port: number): Promise<Probe> {
  const p = await Probe.connect(port);
  assert.equal((await p.reply()).code, 220);
  assert.equal((await p.cmd('EHLO client.example')).code, 250);
  return p;
}

/** Every reply until the connection closes (bounded). */
async function rest(p: Probe, ms = 5000): Promise<number[]> {
  const codes: number[] = [];
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      codes.push((await p.reply(Math.max(1, deadline - Date.now()))).code);
    } catch {
      return codes;
    }
  }
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, 2000);
    s.once('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolve(false);
    });
    s.once('error', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Maildir contents: the files of new/ and the names in tmp/. */
async function maildir(dir: string): Promise<{ newFiles: Buffer[]; tmp: string[] }> {
  return { newFiles: await readFiles(join(dir, 'new')), tmp: await listDir(join(dir, 'tmp')) };
}

class SlowRecorder implements Handler {
  stored: string[] = [];
  constructor(private readonly ms: number) {}
  async handleDATA(_server: SMTPServer, _session: Session, envelope: Envelope): Promise<string> {
    await sleep(this.ms);
    this.stored.push(envelope.originalContent!.toString('latin1'));
    return '250 OK stored';
  }
}

describe('Controller.stop({ deadline }) with transactions in flight', () => {
  test('mid-DATA and finishing before the deadline: 250, stored in the Maildir, then 421; idle clients get 421 at once', async () => {
    const dir = await tempDir('shutdown-a');
    const controller = await start(new Mailbox(dir));
    const port = controller.port;
    const busy = await openData(port, 'busy');
    const idle = await greetedProbe(port);
    try {
      busy.send('Subject: in flight\r\n\r\nfirst half\r\n');
      await sleep(50);
      const t0 = Date.now();
      const stopping = controller.stop({ deadline: 3000 });
      // The idle client is told at once.
      const idleReply = await idle.reply(1000);
      assert.equal(idleReply.code, 421, idleReply.text);
      assert.match(idleReply.text, /^421 4\.3\.2 /);
      assert.ok(await idle.closedWithin(2000), 'idle connection left open');
      assert.ok(await refused(port), 'new connections must be refused once stopping');
      // The busy client finishes its message well before the deadline.
      await sleep(200);
      busy.send('second half\r\n.\r\n');
      const end = await busy.reply(2000);
      assert.equal(end.code, 250, end.text);
      assert.deepEqual(await rest(busy, 2000), [421]);
      await stopping;
      assert.ok(Date.now() - t0 < 2500, `stop() took ${Date.now() - t0} ms though every connection was done`);
      const { newFiles, tmp } = await maildir(dir);
      assert.equal(newFiles.length, 1);
      assert.match(newFiles[0]!.toString('latin1'), /Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n$/);
      assert.deepEqual(tmp, []);
    } finally {
      busy.close();
      idle.close();
      await controller.stop();
      await removeDir(dir);
    }
  });

  test('still in DATA at the deadline: 421, and nothing (not even a partial file) in the Maildir', async () => {
    const dir = await tempDir('shutdown-b');
    const controller = await start(new Mailbox(dir));
    const p = await openData(controller.port, 'slow');
    try {
      p.send('Subject: never finished\r\n\r\n' + 'x'.repeat(100_000) + '\r\n');
      await sleep(50);
      const t0 = Date.now();
      const stopping = controller.stop({ deadline: 400 });
      const r = await p.reply(3000);
      const at = Date.now() - t0;
      assert.equal(r.code, 421, r.text);
      assert.ok(at >= 350 && at < 1500, `421 after ${at} ms, deadline 400`);
      // A client that sends its terminator after the 421 delivers nothing.
      p.send('late\r\n.\r\n');
      assert.ok(await p.closedWithin(2000));
      await stopping;
      await sleep(100);
      const { newFiles, tmp } = await maildir(dir);
      assert.equal(newFiles.length, 0, 'an interrupted message was stored');
      assert.deepEqual(tmp, []);
    } finally {
      p.close();
      await controller.stop();
      await removeDir(dir);
    }
  });

  test('close({ deadline }) is the same graceful stop', async () => {
    const dir = await tempDir('shutdown-close');
    const controller = await start(new Mailbox(dir));
    const finishing = await openData(controller.port, 'f');
    const stuck = await openData(controller.port, 's');
    try {
      finishing.send('Subject: one\r\n\r\n');
      stuck.send('Subject: two\r\n\r\n');
      const closing = controller.close({ deadline: 600 });
      await sleep(100);
      finishing.send('body\r\n.\r\n');
      assert.equal((await finishing.reply()).code, 250);
      assert.equal((await stuck.reply(3000)).code, 421);
      await closing;
      const { newFiles, tmp } = await maildir(dir);
      assert.equal(newFiles.length, 1);
      assert.match(newFiles[0]!.toString('latin1'), /Subject: one/);
      assert.deepEqual(tmp, []);
    } finally {
      finishing.close();
      stuck.close();
      await controller.stop();
      await removeDir(dir);
    }
  });

  test('a transaction begun (MAIL sent, no DATA yet) may still finish before the deadline', async () => {
    const handler = new SlowRecorder(0);
    const controller = await start(handler);
    const p = await greetedProbe(controller.port);
    try {
      assert.equal((await p.cmd('MAIL FROM:<a@example.com>')).code, 250);
      const stopping = controller.stop({ deadline: 3000 });
      assert.equal((await p.cmd('RCPT TO:<b@example.com>')).code, 250);
      assert.equal((await p.cmd('DATA')).code, 354);
      p.send('Subject: late start\r\n\r\nx\r\n.\r\n');
      assert.equal((await p.reply()).code, 250);
      assert.deepEqual(await rest(p), [421]);
      await stopping;
      assert.equal(handler.stored.length, 1);
    } finally {
      p.close();
      await controller.stop();
    }
  });

  test('a BDAT transaction finishing before the deadline gets 250; one stuck mid-chunk gets 421 and is not delivered', async () => {
    const handler = new SlowRecorder(0);
    const controller = await start(handler);
    const ok = await greetedProbe(controller.port);
    const stuck = await greetedProbe(controller.port);
    try {
      for (const p of [ok, stuck]) {
        assert.equal((await p.cmd('MAIL FROM:<a@example.com>')).code, 250);
        assert.equal((await p.cmd('RCPT TO:<b@example.com>')).code, 250);
      }
      ok.send('BDAT 10\r\n0123456789');
      assert.equal((await ok.reply()).code, 250);
      stuck.send('BDAT 100 LAST\r\nonly part of the chunk');
      const stopping = controller.stop({ deadline: 500 });
      await sleep(100);
      ok.send('BDAT 5 LAST\r\nabcde');
      assert.equal((await ok.reply()).code, 250);
      assert.equal((await stuck.reply(3000)).code, 421);
      await stopping;
      assert.deepEqual(handler.stored, ['0123456789abcde']);
    } finally {
      ok.close();
      stuck.close();
      await controller.stop();
    }
  });

  test('handleDATA in progress when stop() is called (deadline longer): its 250 is sent, then 421', async () => {
    const handler = new SlowRecorder(400);
    const controller = await start(handler);
    const p = await openData(controller.port);
    try {
      p.send('Subject: slow handler\r\n\r\nx\r\n.\r\n');
      await sleep(100); // the handler is now working
      const stopping = controller.stop({ deadline: 2000 });
      assert.deepEqual(await rest(p, 3000), [250, 421]);
      await stopping;
      assert.equal(handler.stored.length, 1);
    } finally {
      p.close();
      await controller.stop();
    }
  });

  test('handleDATA still in progress at the deadline: it finishes and its 250 goes out, never a 421 for a stored message', async () => {
    // The message is being stored when the deadline passes. Answering 421 makes the client send
    // it again later: a duplicate. The handler's own answer must be the one the client sees.
    const handler = new SlowRecorder(600);
    const controller = await start(handler);
    const p = await openData(controller.port);
    try {
      p.send('Subject: slower than the deadline\r\n\r\nx\r\n.\r\n');
      await sleep(50);
      const stopping = controller.stop({ deadline: 200 });
      const codes = await rest(p, 3000);
      await stopping;
      assert.ok(await until(() => handler.stored.length === 1, 2000), 'the handler never finished');
      assert.equal(codes[0], 250, `replies after DATA: ${JSON.stringify(codes)}: the stored message was answered 421`);
    } finally {
      p.close();
      await controller.stop();
    }
  });

  test('stop() resolves only once a handleDATA in progress has settled (the CLI exits right after it)', async () => {
    const handler = new SlowRecorder(600);
    const controller = await start(handler);
    const p = await openData(controller.port);
    try {
      p.send('Subject: slower than the deadline\r\n\r\nx\r\n.\r\n');
      await sleep(50);
      await controller.stop({ deadline: 200 });
      assert.equal(handler.stored.length, 1, 'stop() resolved while handleDATA was still storing the message');
    } finally {
      p.close();
      await controller.stop();
      await until(() => handler.stored.length === 1, 2000);
    }
  });

  test('idle connections in every between-transactions state get 421 at once; stop() does not wait for the deadline', async () => {
    const handler = new SlowRecorder(0);
    const controller = await start(handler);
    const port = controller.port;
    const ungreeted = await Probe.connect(port);
    assert.equal((await ungreeted.reply()).code, 220);
    const afterEhlo = await greetedProbe(port);
    const afterMessage = await openData(port);
    afterMessage.send('x\r\n.\r\n');
    assert.equal((await afterMessage.reply()).code, 250);
    const afterRset = await greetedProbe(port);
    assert.equal((await afterRset.cmd('MAIL FROM:<a@example.com>')).code, 250);
    assert.equal((await afterRset.cmd('RSET')).code, 250);
    const all = [ungreeted, afterEhlo, afterMessage, afterRset];
    try {
      const t0 = Date.now();
      const stopping = controller.stop({ deadline: 10_000 });
      for (const p of all) {
        const r = await p.reply(1000);
        assert.equal(r.code, 421, r.text);
      }
      assert.ok(Date.now() - t0 < 1000);
      for (const p of all) assert.ok(await p.closedWithin(2000));
      await stopping;
      assert.ok(Date.now() - t0 < 2000, `stop() took ${Date.now() - t0} ms with only idle clients`);
    } finally {
      for (const p of all) p.close();
      await controller.stop();
    }
  });

  test('a client that ignores the 421 and keeps its side open is cut off soon after the deadline', async () => {
    const handler = new SlowRecorder(0);
    const controller = await start(handler);
    const socket = net.connect({ port: controller.port, host: '127.0.0.1', allowHalfOpen: true });
    socket.on('error', () => {});
    const p = new Probe(socket);
    try {
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      assert.equal((await p.reply()).code, 220);
      assert.equal((await p.cmd('EHLO x')).code, 250);
      assert.equal((await p.cmd('MAIL FROM:<a@example.com>')).code, 250);
      assert.equal((await p.cmd('RCPT TO:<b@example.com>')).code, 250);
      assert.equal((await p.cmd('DATA')).code, 354);
      p.send('partial\r\n');
      const t0 = Date.now();
      await controller.stop({ deadline: 300 });
      const took = Date.now() - t0;
      assert.ok(took < 2500, `stop() took ${took} ms`);
      assert.ok(await until(() => p.closed || socket.readableEnded, 1000));
      assert.equal(handler.stored.length, 0);
    } finally {
      socket.destroy();
      await controller.stop();
    }
  });
});

describe('the CLI: SIGTERM and kill -9 with a Maildir', () => {
  test('SIGTERM mid-stream: answered messages are whole in new/, the interrupted one is absent, exit 0', async () => {
    const dir = await tempDir('shutdown-cli');
    const maildirPath = join(dir, 'Maildir');
    const port = await freePort();
    const cli = new CliProcess(['-n', '-c', 'Mailbox', '-l', `127.0.0.1:${port}`, '--shutdown-timeout', '1.5', maildirPath]);
    const probes: Probe[] = [];
    try {
      await cli.listening();
      // 1: delivered before the signal.
      const done = await openData(port, 'done');
      probes.push(done);
      done.send('Subject: done\r\n\r\nDONE-BODY\r\n.\r\n');
      assert.equal((await done.reply()).code, 250);
      // 2: in DATA at the signal, finishes inside the deadline.
      const finishing = await openData(port, 'finishing');
      probes.push(finishing);
      finishing.send('Subject: finishing\r\n\r\nFINISHING-START\r\n');
      // 3: in DATA at the signal, streaming and never finishing.
      const stuck = await openData(port, 'stuck');
      probes.push(stuck);
      stuck.send('Subject: stuck\r\n\r\nSTUCK-START\r\n');
      // 4: idle.
      const idle = await greetedProbe(port);
      probes.push(idle);
      await sleep(50);
      const t0 = Date.now();
      cli.child.kill('SIGTERM');
      assert.equal((await idle.reply(1500)).code, 421);
      let streaming = true;
      const trickle = (async () => {
        for (let i = 0; streaming && !stuck.closed && i < 100; i++) {
          stuck.send(`STUCK-LINE ${i} ${'y'.repeat(980)}\r\n`);
          await sleep(50);
        }
      })();
      await sleep(300);
      finishing.send('FINISHING-END\r\n.\r\n');
      assert.equal((await finishing.reply(2000)).code, 250);
      const stuckReply = await stuck.reply(4000);
      streaming = false;
      await trickle;
      assert.equal(stuckReply.code, 421, stuckReply.text);
      assert.ok(Date.now() - t0 >= 1400, `the stuck client got 421 after ${Date.now() - t0} ms, before the 1.5 s deadline`);
      const exit = await cli.waitExit(6000);
      assert.deepEqual(exit, { code: 0, signal: null }, `stderr: ${cli.stderr}`);
      const { newFiles, tmp } = await maildir(maildirPath);
      const texts = newFiles.map((f) => f.toString('latin1')).sort();
      assert.equal(texts.length, 2, `new/ holds ${texts.length} messages`);
      assert.match(texts.find((t) => t.includes('Subject: done'))!, /DONE-BODY\r\n$/);
      assert.match(texts.find((t) => t.includes('Subject: finishing'))!, /FINISHING-START\r\nFINISHING-END\r\n$/);
      assert.ok(!texts.some((t) => t.includes('STUCK')), 'the interrupted message reached new/');
      assert.deepEqual(tmp, []);
    } finally {
      for (const p of probes) p.close();
      await cli.stop();
      await removeDir(dir);
    }
  });

  test('kill -9 mid-DATA leaves nothing in new/', async () => {
    const dir = await tempDir('shutdown-kill');
    const maildirPath = join(dir, 'Maildir');
    const port = await freePort();
    const cli = new CliProcess(['-n', '-c', 'Mailbox', '-l', `127.0.0.1:${port}`, maildirPath]);
    try {
      await cli.listening();
      const p = await openData(port);
      try {
        p.send('Subject: killed\r\n\r\n' + 'z'.repeat(200_000) + '\r\n');
        await sleep(100);
        cli.child.kill('SIGKILL');
        await cli.waitExit(5000);
        assert.ok(await p.closedWithin(2000));
      } finally {
        p.close();
      }
      assert.deepEqual(await listDir(join(maildirPath, 'new')), []);
    } finally {
      await cli.stop();
      await removeDir(dir);
    }
  });

  test('kill -9 under load: every file in new/ is a whole message, and every message answered 250 is there', async () => {
    const dir = await tempDir('shutdown-kill-load');
    const maildirPath = join(dir, 'Maildir');
    const port = await freePort();
    const cli = new CliProcess(['-n', '-c', 'Mailbox', '-l', `127.0.0.1:${port}`, maildirPath]);
    const acknowledged = new Set<string>();
    try {
      await cli.listening();
      let killed = false;
      const client = async (c: number) => {
        for (let m = 0; m < 1000 && !killed; m++) {
          const id = `c${c}m${m}`;
          let p: Probe;
          try {
            p = await openData(port, id);
          } catch {
            return;
          }
          try {
            // Sent in pieces, so the kill can land anywhere in a body.
            p.send(`Subject: ${id}\r\n\r\nBEGIN ${id}\r\n`);
            for (let k = 0; k < 8 && !p.closed; k++) {
              // 16 KB a piece, in lines within dataLineLimit (1001 octets).
              p.send(`${id} ${'q'.repeat(980)}\r\n`.repeat(16));
              await sleep(1);
            }
            p.send(`END ${id}\r\n.\r\n`);
            const r = await p.reply(3000);
            if (r.code === 250) acknowledged.add(id);
          } catch {
            return;
          } finally {
            p.close();
          }
        }
      };
      const clients = pool(
        Array.from({ length: 8 }, (_, i) => i),
        8,
        client,
      );
      await until(() => acknowledged.size >= 5, 8000);
      await sleep(37);
      cli.child.kill('SIGKILL');
      killed = true;
      await cli.waitExit(5000);
      await clients;
      const files = await readFiles(join(maildirPath, 'new'));
      assert.ok(acknowledged.size >= 5, `only ${acknowledged.size} messages were answered before the kill`);
      const stored = new Set<string>();
      for (const f of files) {
        const text = f.toString('latin1');
        const id = /Subject: (c\d+m\d+)\r\n/.exec(text)?.[1];
        assert.ok(id, 'a file without its Subject');
        assert.ok(text.endsWith(`END ${id}\r\n`), `${id}: a partial message in new/ (${text.length} bytes)`);
        assert.ok(text.includes(`BEGIN ${id}\r\n`));
        assert.equal(text.split(`${id} q`).length - 1, 8 * 16, `${id}: lines missing`);
        stored.add(id);
      }
      for (const id of acknowledged) assert.ok(stored.has(id), `${id} was answered 250 but is not in new/`);
    } finally {
      await cli.stop();
      await removeDir(dir);
    }
  });
});
