/** Controller and UnixSocketController: start/stop life cycle over real sockets. */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync, lstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Controller, UnixSocketController, getLocalhost } from '../src/controller.js';
import { SMTP } from '../src/smtp.js';
import { Sink } from '../src/handlers/index.js';
import { RawClient, Recorder, greeted, startServer } from './helpers.js';

/** Binds host:port with a plain net.Server and closes it: proves the port is free. */
function bindAndClose(port: number, host = '127.0.0.1'): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(port, host, () => server.close(() => resolve()));
  });
}

function listenOn(port: number, host = '127.0.0.1'): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((s) => s.destroy());
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Resolves to the error code of a refused connection, or 'connected'. */
function tryConnect(port: number, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('timeout');
    }, 3000);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(e.code ?? e.message);
    });
  });
}

/** An engine that accepts the connection and never greets. */
class MuteSMTP extends SMTP {
  override serve(socket: net.Socket): Promise<void> {
    this.socket = socket;
    socket.resume(); // read and drop, so the client's FIN is seen and the socket closes
    socket.on('error', () => {});
    return new Promise((resolve) => socket.once('close', () => resolve()));
  }
}

class MuteController extends Controller {
  override factory(): SMTP {
    return new MuteSMTP(this.handler, {});
  }
}

/** An engine that greets only after `delay` ms. */
class SlowSMTP extends SMTP {
  static delay = 300;
  override serve(socket: net.Socket): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, SlowSMTP.delay)).then(() => super.serve(socket));
  }
}

class SlowController extends Controller {
  override factory(): SMTP {
    return new SlowSMTP(this.handler, { hostname: 'slow.example' });
  }
}

/** An engine whose greeting is a refusal. */
class RefusingSMTP extends SMTP {
  override serve(socket: net.Socket): Promise<void> {
    socket.on('error', () => {});
    socket.end('554 no service here\r\n');
    return new Promise((resolve) => socket.once('close', () => resolve()));
  }
}

class RefusingController extends Controller {
  override factory(): SMTP {
    return new RefusingSMTP(this.handler, {});
  }
}

async function sendOne(c: RawClient, body = 'Subject: t\r\n\r\nhello\r\n'): Promise<void> {
  assert.equal((await c.cmd('MAIL FROM:<a@example.com>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<b@example.com>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send(body + '.\r\n');
  assert.equal((await c.reply()).code, 250);
}

describe('Controller', () => {
  test('start, serve one message, stop', async () => {
    const handler = new Recorder();
    const controller = new Controller(handler, { hostname: '127.0.0.1', port: 0 });
    await controller.start();
    try {
      assert.ok(controller.server !== null);
      const c = await greeted(controller.port);
      await sendOne(c);
      assert.equal((await c.cmd('QUIT')).code, 221);
      await c.waitClosed();
      assert.equal(handler.messages.length, 1);
      assert.equal(handler.messages[0]!.content.toString(), 'Subject: t\r\n\r\nhello\r\n');
    } finally {
      await controller.stop();
    }
    assert.equal(controller.server, null);
    assert.notEqual(await tryConnect(controller.port), 'connected');
  });

  test('port: 0 reports the bound port', async () => {
    const controller = new Controller(new Sink(), { hostname: '127.0.0.1', port: 0 });
    assert.equal(controller.port, 0);
    await controller.start();
    try {
      assert.ok(Number.isInteger(controller.port) && controller.port > 0 && controller.port < 65536);
      const address = controller.server!.address() as net.AddressInfo;
      assert.equal(controller.port, address.port);
      assert.equal(await tryConnect(controller.port), 'connected');
    } finally {
      await controller.stop();
    }
  });

  test('default port is 8025 before start', () => {
    assert.equal(new Controller(new Sink()).port, 8025);
  });

  test('no hostname: one port on both loopbacks, 127.0.0.1 and ::1 (where IPv6 works); stop() frees both', async () => {
    const controller = new Controller(new Sink(), { port: 0 });
    await controller.start();
    const port = controller.port;
    const hosts = (await getLocalhost()) === '::1' ? ['127.0.0.1', '::1'] : ['127.0.0.1'];
    try {
      for (const host of hosts) {
        const c = await RawClient.connect(port, host);
        try {
          assert.equal((await c.reply()).code, 220, host);
          assert.equal((await c.cmd('EHLO client.example')).code, 250, host);
        } finally {
          c.close();
        }
      }
    } finally {
      await controller.stop();
    }
    for (const host of hosts) {
      const free = await new Promise<boolean>((resolve) => {
        const s = net.createServer();
        s.once('error', () => resolve(false));
        s.listen(port, host, () => s.close(() => resolve(true)));
      });
      assert.ok(free, `${host}:${port} still bound after stop()`);
    }
  });

  test("default hostname is getLocalhost(): '::1' when IPv6 loopback works, else '127.0.0.1'", async () => {
    // Our own probe, independent of getLocalhost().
    const ipv6 = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(0, '::1', () => s.close(() => resolve(true)));
    });
    const expected = await getLocalhost();
    assert.equal(expected, ipv6 ? '::1' : '127.0.0.1');
    const controller = new Controller(new Sink(), { port: 0 });
    await controller.start();
    try {
      assert.equal(controller.hostname, expected);
      const address = controller.server!.address() as net.AddressInfo;
      assert.equal(address.address, expected);
      const c = await RawClient.connect(controller.port, expected);
      try {
        assert.equal((await c.reply()).code, 220);
      } finally {
        c.close();
      }
    } finally {
      await controller.stop();
    }
  });

  test('start() resolves only once a 220 greeting is readable', async () => {
    SlowSMTP.delay = 400;
    const controller = new SlowController(new Sink(), { hostname: '127.0.0.1', port: 0, readyTimeout: 5000 });
    const t0 = Date.now();
    await controller.start();
    const elapsed = Date.now() - t0;
    try {
      assert.ok(elapsed >= 350, `start() resolved after ${elapsed} ms, before the greeting (400 ms)`);
      const c = await RawClient.connect(controller.port);
      try {
        const greeting = await c.reply();
        assert.equal(greeting.code, 220);
        assert.match(greeting.text, /^220 slow\.example /);
      } finally {
        c.close();
      }
    } finally {
      await controller.stop();
    }
  });

  test('start() rejects when the greeting is not 220, and frees the port', async () => {
    const controller = new RefusingController(new Sink(), { hostname: '127.0.0.1', port: 0, readyTimeout: 3000 });
    await assert.rejects(controller.start(), /554|greeting/);
    assert.equal(controller.server, null);
    await bindAndClose(controller.port);
  });

  test('readyTimeout: a server that never greets makes start() reject in about readyTimeout; the port is free', async () => {
    const controller = new MuteController(new Sink(), { hostname: '127.0.0.1', port: 0, readyTimeout: 300 });
    const t0 = Date.now();
    await assert.rejects(controller.start(), /not ready|timeout|300/i);
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 280, `rejected after ${elapsed} ms, before readyTimeout`);
    assert.ok(elapsed < 2500, `rejected after ${elapsed} ms, long after readyTimeout (300 ms)`);
    assert.equal(controller.server, null);
    assert.ok(controller.port > 0);
    await bindAndClose(controller.port);
  });

  test('TSMTPD_CONTROLLER_TIMEOUT (seconds) is used when readyTimeout is not given', async () => {
    const saved = process.env.TSMTPD_CONTROLLER_TIMEOUT;
    process.env.TSMTPD_CONTROLLER_TIMEOUT = '0.4';
    try {
      const controller = new MuteController(new Sink(), { hostname: '127.0.0.1', port: 0 });
      const t0 = Date.now();
      await assert.rejects(controller.start());
      const elapsed = Date.now() - t0;
      assert.ok(elapsed >= 380, `rejected after ${elapsed} ms, before 0.4 s`);
      assert.ok(elapsed < 3000, `rejected after ${elapsed} ms: env not used (default is 5 s)`);
      await bindAndClose(controller.port);

      // An explicit readyTimeout wins over the environment.
      const explicit = new MuteController(new Sink(), { hostname: '127.0.0.1', port: 0, readyTimeout: 1200 });
      const t1 = Date.now();
      await assert.rejects(explicit.start());
      const elapsed2 = Date.now() - t1;
      assert.ok(elapsed2 >= 1150, `explicit readyTimeout 1200 ignored: rejected after ${elapsed2} ms`);
    } finally {
      if (saved === undefined) delete process.env.TSMTPD_CONTROLLER_TIMEOUT;
      else process.env.TSMTPD_CONTROLLER_TIMEOUT = saved;
    }
  });

  test('start() on a port in use rejects with EADDRINUSE; a later start on a free port works', async () => {
    const blocker = await listenOn(0);
    const busyPort = (blocker.address() as net.AddressInfo).port;
    const controller = new Controller(new Sink(), { hostname: '127.0.0.1', port: busyPort });
    try {
      await assert.rejects(controller.start(), (error: NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException }) => {
        assert.equal(error.code ?? error.cause?.code, 'EADDRINUSE');
        return true;
      });
      assert.equal(controller.server, null);
      // The blocker still owns its port and still works.
      assert.equal(await tryConnect(busyPort), 'connected');
      // The same controller starts on a free port.
      controller.port = 0;
      await controller.start();
      assert.notEqual(controller.port, busyPort);
      const c = await greeted(controller.port);
      await sendOne(c);
      c.close();
    } finally {
      await controller.stop();
      await closeServer(blocker);
    }
    // And a fresh controller starts on the port once it is free.
    const again = await startServer(new Sink(), { port: busyPort });
    try {
      assert.equal(again.port, busyPort);
    } finally {
      await again.stop();
    }
  });

  test('start() twice without stop() is refused', async () => {
    await using controller = await startServer(new Sink());
    await assert.rejects(controller.start(), /already/);
    assert.equal(await tryConnect(controller.port), 'connected');
  });

  test('stop() says 421 on every open connection, closes them, frees the port; stop() twice is fine', async () => {
    const controller = await startServer(new Recorder(), { stopTimeout: 1000 });
    const port = controller.port;
    const idle = await RawClient.connect(port);
    assert.equal((await idle.reply()).code, 220);
    const greetedClient = await greeted(port);
    const midData = await greeted(port);
    assert.equal((await midData.cmd('MAIL FROM:<a@example.com>')).code, 250);
    assert.equal((await midData.cmd('RCPT TO:<b@example.com>')).code, 250);
    assert.equal((await midData.cmd('DATA')).code, 354);
    midData.send('Subject: half\r\n\r\npart of a body\r\n');
    const t0 = Date.now();
    try {
      await controller.stop();
      const elapsed = Date.now() - t0;
      assert.ok(elapsed < 3000, `stop() took ${elapsed} ms`);
      for (const [name, c] of [
        ['idle', idle],
        ['greeted', greetedClient],
      ] as const) {
        const r = await c.reply();
        assert.equal(r.code, 421, `${name} client: ${r.text}`);
        await c.waitClosed(3000);
      }
      // Mid-DATA, the 421 may come or not, but the connection must be closed.
      await midData.waitClosed(3000);
      // The port can be bound again at once.
      await bindAndClose(port);
      assert.equal(controller.server, null);
      await controller.stop(); // a second stop() is a no-op
    } finally {
      for (const c of [idle, greetedClient, midData]) c.close();
    }
  });

  test('stop() cuts a client that ignores the 421 and never closes, within about stopTimeout', async () => {
    const controller = await startServer(new Sink(), { stopTimeout: 300 });
    // A client that does not read (paused) and never ends its side.
    const socket = net.connect({ port: controller.port, host: '127.0.0.1' });
    socket.on('error', () => {});
    let closed = false;
    socket.once('close', () => (closed = true));
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.pause();
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    try {
      await Promise.race([
        controller.stop(),
        new Promise((_, reject) => setTimeout(() => reject(new Error('stop() hung on a silent client')), 4000)),
      ]);
      assert.ok(Date.now() - t0 < 4000);
      await bindAndClose(controller.port);
      socket.resume();
      for (let i = 0; i < 30 && !closed; i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(closed, 'client connection still open after stop()');
    } finally {
      socket.destroy();
    }
  });

  test('stop() before start() is fine', async () => {
    const controller = new Controller(new Sink(), { hostname: '127.0.0.1', port: 0 });
    await controller.stop();
    assert.equal(controller.server, null);
  });

  test('`await using` stops the controller at block end', async () => {
    let port = 0;
    let kept: Controller | null = null;
    {
      await using controller = new Controller(new Sink(), { hostname: '127.0.0.1', port: 0 });
      await controller.start();
      port = controller.port;
      kept = controller;
      assert.equal(await tryConnect(port), 'connected');
    }
    assert.equal(kept!.server, null);
    assert.equal(await tryConnect(port), 'ECONNREFUSED');
    await bindAndClose(port);
  });

  test('serverHostname appears in the greeting and the EHLO reply', async () => {
    await using controller = await startServer(new Sink(), { serverHostname: 'mx.test.example' });
    const c = await RawClient.connect(controller.port);
    try {
      const greeting = await c.reply();
      assert.equal(greeting.code, 220);
      assert.match(greeting.text, /^220 mx\.test\.example\b/);
      const ehlo = await c.cmd('EHLO client.example');
      assert.equal(ehlo.code, 250);
      assert.match(ehlo.lines[0]!, /^250[- ]mx\.test\.example\b/);
    } finally {
      c.close();
    }
  });

  test('options reach the engine (dataSizeLimit advertised as SIZE)', async () => {
    await using controller = await startServer(new Sink(), { dataSizeLimit: 1234 });
    const c = await greeted(controller.port);
    try {
      const ehlo = await c.cmd('EHLO client.example');
      assert.ok(ehlo.lines.some((l) => /^250[- ]SIZE 1234$/.test(l)), ehlo.text);
    } finally {
      c.close();
    }
  });
});

describe('UnixSocketController', () => {
  async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
    const dir = await mkdtemp(join(tmpdir(), 'tsmtpd-unix-'));
    try {
      await fn(dir);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  test('start, deliver a message over the socket, stop removes the socket file', () =>
    withDir(async (dir) => {
      const path = join(dir, 'smtp.sock');
      const handler = new Recorder();
      const controller = new UnixSocketController(handler, { unixSocket: path, serverHostname: 'unix.example' });
      await controller.start();
      try {
        assert.ok(lstatSync(path).isSocket());
        const c = await RawClient.connectPath(path);
        try {
          const greeting = await c.reply();
          assert.equal(greeting.code, 220);
          assert.match(greeting.text, /^220 unix\.example\b/);
          assert.equal((await c.cmd('EHLO client.example')).code, 250);
          await sendOne(c, 'Subject: over unix\r\n\r\nbody\r\n');
          assert.equal((await c.cmd('QUIT')).code, 221);
          await c.waitClosed();
        } finally {
          c.close();
        }
        assert.equal(handler.messages.length, 1);
        assert.equal(handler.messages[0]!.content.toString(), 'Subject: over unix\r\n\r\nbody\r\n');
        assert.deepEqual(handler.messages[0]!.rcptTos, ['b@example.com']);
      } finally {
        await controller.stop();
      }
      assert.equal(existsSync(path), false, 'stop() left the socket file');
      await controller.stop(); // twice is fine
    }));

  test('mode: 0o600 sets the socket file mode', () =>
    withDir(async (dir) => {
      const path = join(dir, 'mode.sock');
      await using controller = new UnixSocketController(new Sink(), { unixSocket: path, mode: 0o600 });
      await controller.start();
      assert.equal((await stat(path)).mode & 0o777, 0o600);
      const c = await RawClient.connectPath(path);
      try {
        assert.equal((await c.reply()).code, 220);
      } finally {
        c.close();
      }
    }));

  test('a stale socket file left at the path is replaced', () =>
    withDir(async (dir) => {
      const path = join(dir, 'stale.sock');
      // A process that binds the path and dies without cleaning up leaves a stale socket file.
      const r = spawnSync(
        process.execPath,
        ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`],
        { timeout: 10000 },
      );
      assert.equal(r.signal, 'SIGKILL', r.stderr?.toString());
      assert.ok(lstatSync(path).isSocket(), 'setup: no stale socket file');
      const handler = new Recorder();
      const controller = new UnixSocketController(handler, { unixSocket: path });
      await controller.start();
      try {
        const c = await RawClient.connectPath(path);
        try {
          assert.equal((await c.reply()).code, 220);
          assert.equal((await c.cmd('EHLO client.example')).code, 250);
          await sendOne(c);
        } finally {
          c.close();
        }
        assert.equal(handler.messages.length, 1);
      } finally {
        await controller.stop();
      }
      assert.equal(existsSync(path), false);
    }));

  test('a live socket (another running server) at the path is not taken over: start() rejects', () =>
    withDir(async (dir) => {
      const path = join(dir, 'live.sock');
      const first = new UnixSocketController(new Sink(), { unixSocket: path, serverHostname: 'first.example' });
      await first.start();
      try {
        const second = new UnixSocketController(new Sink(), { unixSocket: path, serverHostname: 'second.example' });
        let started = false;
        try {
          await second.start();
          started = true;
        } catch (error) {
          assert.equal((error as NodeJS.ErrnoException).code, 'EADDRINUSE');
        } finally {
          await second.stop();
        }
        assert.equal(started, false, 'start() unlinked the socket file of a running server and took its path');
        // The first server still owns the path.
        assert.ok(existsSync(path), 'the live server lost its socket file');
        const c = await RawClient.connectPath(path);
        try {
          assert.match((await c.reply()).text, /^220 first\.example\b/);
        } finally {
          c.close();
        }
      } finally {
        await first.stop();
      }
    }));

  test("stop() removes only its own socket file, not one another server put at the path since", () =>
    withDir(async (dir) => {
      const path = join(dir, 'moved.sock');
      const controller = new UnixSocketController(new Sink(), { unixSocket: path });
      await controller.start();
      // Someone removes our file and another server listens on the same path.
      await rm(path);
      const other = net.createServer((s) => s.end('220 other.example\r\n'));
      await new Promise<void>((resolve) => other.listen(path, () => resolve()));
      try {
        await controller.stop();
        assert.ok(existsSync(path), "stop() deleted another server's socket file");
        const c = await RawClient.connectPath(path);
        try {
          assert.match((await c.reply()).text, /^220 other\.example/);
        } finally {
          c.close();
        }
      } finally {
        await closeServer(other);
      }
    }));

  test('a regular file at the path is NOT deleted; start() rejects', () =>
    withDir(async (dir) => {
      const path = join(dir, 'precious.txt');
      await writeFile(path, 'do not delete me\n');
      const controller = new UnixSocketController(new Sink(), { unixSocket: path, readyTimeout: 2000 });
      await assert.rejects(controller.start());
      assert.equal(controller.server, null);
      assert.equal(await readFile(path, 'utf8'), 'do not delete me\n');
      await controller.stop();
      assert.equal(await readFile(path, 'utf8'), 'do not delete me\n', 'stop() deleted a regular file');
    }));
});
