/** The `tsmtpd` command line (dist/cli.js) as a child process: options, handlers, signals, setuid. */
import { test, describe, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { getLocalhost } from '../src/controller.js';
import { RawClient } from './helpers.js';
import { CLI, CliProcess, ROOT, canBind, canConnect, freePort, nodeBinaryFor, runCli } from './cli-util.js';

const execFileP = promisify(execFile);
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };

/** Connects, reads the greeting, says EHLO; returns the client and the EHLO reply. */
async function ehlo(port: number, host = '127.0.0.1'): Promise<{ c: RawClient; ehloLines: string[] }> {
  const c = await RawClient.connect(port, host);
  const greeting = await c.reply();
  assert.equal(greeting.code, 220, greeting.text);
  const r = await c.cmd('EHLO client.example');
  assert.equal(r.code, 250, r.text);
  return { c, ehloLines: r.lines };
}

/** MAIL/RCPT/DATA/body; returns the reply to the body. */
async function send(c: RawClient, body: string, from = 'a@example.com', to = 'b@example.com') {
  assert.equal((await c.cmd(`MAIL FROM:<${from}>`)).code, 250);
  assert.equal((await c.cmd(`RCPT TO:<${to}>`)).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send(body + '.\r\n');
  return c.reply();
}

/** Starts the CLI with args, waits for 'listening on', runs fn, kills the child. */
async function withCli(
  args: string[],
  fn: (p: CliProcess) => Promise<void>,
  options: Parameters<typeof runCli>[1] = {},
): Promise<void> {
  const p = new CliProcess(args, options);
  try {
    await p.listening();
    await fn(p);
  } finally {
    await p.stop();
  }
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'tsmtpd-cli-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function assertOneLineNoStack(stderr: string, what: string): void {
  const lines = stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `${what}: expected exactly one line on stderr, got ${JSON.stringify(stderr)}`);
  assert.doesNotMatch(stderr, /^\s+at /m, `${what}: stack trace on stderr`);
  assert.doesNotMatch(stderr, /node:internal|Error: .*\n/, `${what}: stack trace on stderr`);
}

const PY_MAILDIR = `
import json, mailbox, sys
md = mailbox.Maildir(sys.argv[1], factory=None, create=False)
out = []
for key, m in md.items():
    out.append({'subdir': m.get_subdir(), 'from': m['X-MailFrom'], 'rcpt': m['X-RcptTo'],
                'peer': m['X-Peer'], 'subject': m['Subject'], 'body': m.get_payload()})
print(json.dumps(out))
`;

async function readMaildir(dir: string): Promise<
  Array<{ subdir: string; from: string; rcpt: string; peer: string; subject: string; body: string }>
> {
  const { stdout } = await execFileP('python3', ['-c', PY_MAILDIR, dir], { timeout: 15000 });
  return JSON.parse(stdout);
}

function hasCommand(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore', timeout: 5000 });
    return true;
  } catch {
    return false;
  }
}

describe('info options', () => {
  test("-v prints 'tsmtpd <version>' (package.json's) and exits 0", async () => {
    for (const flag of ['-v', '--version']) {
      const r = await runCli([flag]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `tsmtpd ${pkg.version}\n`);
      assert.equal(r.stderr, '');
    }
  });

  test('-h prints usage with every option and exits 0', async () => {
    for (const flag of ['-h', '--help']) {
      const r = await runCli([flag]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^usage: tsmtpd /);
      for (const option of [
        '-h, --help',
        '-v, --version',
        '-n, --nosetuid',
        '-c CLASSPATH, --class CLASSPATH',
        '-s SIZE, --size SIZE',
        '-u, --smtputf8',
        '-d, --debug',
        '-l [HOST:PORT], --listen [HOST:PORT]',
        'classargs',
      ]) {
        assert.ok(r.stdout.includes(option), `help lacks ${option}`);
      }
    }
  });

  test(
    '-h lists the TLS, AUTH, LMTP and scaling options',
    async () => {
      const r = await runCli(['-h']);
      for (const option of ['--tlscert', '--tlskey', '--no-requiretls', '--smtpscert', '--smtpskey', '--auth-file', '--auth-required', '--lmtp', '--unix', '--unix-mode', '--workers', '--proxy-protocol']) {
        assert.ok(r.stdout.includes(option), `help lacks ${option}`);
      }
    },
  );
});

// Four at a time: each case starts a Node process, and forty at once on a loaded 2-core machine
// took longer than the exit bound.
describe('usage errors: exit 2, one line on stderr, no stack trace', { concurrency: 4 }, () => {
  // [what, argv, what stderr must say: the option and the problem]
  const cases: Array<[string, string[], RegExp]> = [
    ['-l 127.0.0.1:notaport', ['-n', '-l', '127.0.0.1:notaport'], /-l\/--listen: .*port/],
    ['-l 127.0.0.1:99999', ['-n', '-l', '127.0.0.1:99999'], /-l\/--listen: .*port/],
    ['-l 127.0.0.1: (empty port)', ['-n', '-l', '127.0.0.1:'], /-l\/--listen: .*port/],
    ['-l "[::1" (unclosed bracket)', ['-n', '-l', '[::1'], /-l\/--listen: '\[::1': unbalanced brackets/],
    ['-l [localhost]:25', ['-n', '-l', '[localhost]:25'], /-l\/--listen: .*IPv6/],
    ['-l a:b:25 (not IPv6)', ['-n', '-l', 'a:b:25'], /-l\/--listen: .*'a:b' is not an IPv6 address/],
    ['-l an unresolvable host', ['-n', '-l', 'nosuchhost.invalid:2525'], /-l\/--listen: cannot resolve host 'nosuchhost.invalid'/],
    ['-s abc', ['-n', '-s', 'abc'], /-s\/--size: expected a whole number of bytes/],
    ['-s -5', ['-n', '-s', '-5'], /-s\/--size: expected a whole number of bytes .*'-5'/],
    ['-s without a value', ['-n', '-s'], /-s\/--size: expected one argument/],
    ['-c NoSuchHandler', ['-n', '-c', 'NoSuchHandler'], /-c\/--class: unknown handler class/],
    ['-c ./missing.js:X', ['-n', '-c', './missing.js:X'], /-c\/--class: cannot load module/],
    ['-c node:fs:readFileSync (a function, not a class)', ['-n', '-c', 'node:fs:readFileSync'], /-c\/--class: 'node:fs:readFileSync' is not a handler class/],
    ['-c node:fs:constants (an object)', ['-n', '-c', 'node:fs:constants'], /-c\/--class: .* is not a handler class/],
    ['-c Mailbox without a dir', ['-n', '-c', 'Mailbox'], /directory for the maildir is required/],
    ['-c Mailbox with two dirs', ['-n', '-c', 'Mailbox', '/tmp/a', '/tmp/b'], /Too many arguments for Mailbox/],
    ['-c Sink with an argument', ['-n', '-c', 'Sink', 'extra'], /Sink usage/],
    ['-c Debugging with a bad stream', ['-n', '-c', 'Debugging', 'stdnowhere'], /Debugging usage: \[stdout\|stderr\]/],
    ['--unix in a directory that does not exist', ['-n', '--unix', '/nonexistent-tsmtpd/dir/s.sock'], /--unix: cannot use \/nonexistent-tsmtpd\/dir\/s\.sock: directory \/nonexistent-tsmtpd\/dir does not exist/],
    ['--unix under a regular file', ['-n', '--unix', '/etc/passwd/s.sock'], /--unix: .*\/etc\/passwd is not a directory/],
    ['--unix-mode 999', ['-n', '--unix', '/tmp/x.sock', '--unix-mode', '999'], /--unix-mode: expected an octal mode/],
    ['--xclient-allow 999.1.1.1', ['-n', '--xclient-allow', '999.1.1.1'], /--xclient-allow: '999\.1\.1\.1' is not an IP address/],
    ['--xclient-allow 10.0.0.0/99', ['-n', '--xclient-allow', '10.0.0.0/99'], /--xclient-allow: .*prefix length must be 0 to 32/],
    ['--xclient-allow with an empty entry', ['-n', '--xclient-allow', '127.0.0.1,'], /--xclient-allow: '' is not an IP address/],
    ['--xforward-allow 999.1.1.1', ['-n', '--xforward-allow', '999.1.1.1'], /--xforward-allow: '999\.1\.1\.1' is not an IP address/],
    ['--xforward-allow ::1/129', ['-n', '--xforward-allow', '::1/129'], /--xforward-allow: .*prefix length must be 0 to 128/],
    ['--workers 0', ['-n', '--workers', '0'], /--workers: expected a number of processes/],
    ['--shutdown-timeout soon', ['-n', '--shutdown-timeout', 'soon'], /--shutdown-timeout: expected seconds/],
    ['--proxy-protocol=x', ['-n', '--proxy-protocol=x'], /--proxy-protocol: expected seconds/],
    ['--tlscert without --tlskey', ['-n', '--tlscert', '/etc/hostname'], /--tlscert and --tlskey/],
    ['--auth-required without --auth-file', ['-n', '--auth-required'], /--auth-required needs --auth-file/],
    ['unknown long option --bogus', ['-n', '--bogus'], /--bogus/],
    ['unknown short option -x', ['-n', '-x'], /-x/],
    ['usage error without -n too', ['-s', 'abc'], /-s\/--size/],
  ];
  for (const [name, args, says] of cases) {
    test(name, async () => {
      const r = await runCli(args);
      assert.equal(r.code, 2, `exit ${r.code}, stderr ${JSON.stringify(r.stderr)}`);
      assertOneLineNoStack(r.stderr, name);
      assert.match(r.stderr, /^tsmtpd: error: /);
      assert.match(r.stderr, says);
      assert.equal(r.stdout, '');
    });
  }

  // A directory that cannot be made is a clean exit 2, never a hang: Node 20's recursive mkdir
  // loops forever when a parent refuses new entries with ENOENT, as /proc does.
  const unmakeable: Array<[string, (dir: string) => Promise<string>]> = [
    ['under /proc', async () => '/proc/tsmtpd-no-such-maildir'],
    ['under a regular file', async (dir) => {
      await writeFile(join(dir, 'file'), '');
      return join(dir, 'file', 'Maildir');
    }],
  ];
  for (const [name, where] of unmakeable) {
    test(`-c Mailbox with a directory that cannot be made (${name}): exit 2, at once`, () =>
      withTempDir(async (dir) => {
        const t0 = Date.now();
        const r = await runCli(['-n', '-c', 'Mailbox', await where(dir), '-l', `127.0.0.1:${await freePort()}`]);
        assert.equal(r.code, 2, `exit ${r.code}, stderr ${JSON.stringify(r.stderr)}`);
        assertOneLineNoStack(r.stderr, name);
        assert.match(r.stderr, /^tsmtpd: error: handler setup failed: (ENOENT|ENOTDIR)/);
        assert.ok(Date.now() - t0 < 10_000, `took ${Date.now() - t0} ms`);
      }));
  }

  test('-c MODULE:EXPORT with a missing export', () =>
    withTempDir(async (dir) => {
      await writeFile(join(dir, 'h.mjs'), 'export class Other {}\n');
      const r = await runCli(['-n', '-c', './h.mjs:Missing'], { cwd: dir });
      assert.equal(r.code, 2, r.stderr);
      assertOneLineNoStack(r.stderr, 'missing export');
      assert.match(r.stderr, /Missing/);
    }));
});

describe('serving', () => {
  test('-n -c Sink -l 127.0.0.1:PORT serves', async () => {
    const port = await freePort();
    await withCli(['-n', '-c', 'Sink', '-l', `127.0.0.1:${port}`], async (p) => {
      assert.match(p.stderr, new RegExp(`listening on 127\\.0\\.0\\.1:${port}\\b`));
      const { c, ehloLines } = await ehlo(port);
      try {
        assert.ok(ehloLines.some((l) => /^250[- ]SIZE 33554432$/.test(l)), `default size: ${ehloLines.join('|')}`);
        assert.ok(!ehloLines.some((l) => /SMTPUTF8/.test(l)), 'SMTPUTF8 advertised without -u');
        const r = await send(c, 'Subject: hi\r\n\r\nhello\r\n');
        assert.equal(r.code, 250, r.text);
        assert.equal((await c.cmd('QUIT')).code, 221);
      } finally {
        c.close();
      }
      assert.equal(p.stdout, '', 'Sink printed something');
    });
  });

  test('long options: --nosetuid --class Sink --listen=127.0.0.1:PORT --size=1000', async () => {
    const port = await freePort();
    await withCli(['--nosetuid', '--class', 'Sink', `--listen=127.0.0.1:${port}`, '--size=1000'], async () => {
      const { c, ehloLines } = await ehlo(port);
      c.close();
      assert.ok(ehloLines.some((l) => /^250[- ]SIZE 1000$/.test(l)), ehloLines.join('|'));
    });
  });

  test('--xforward-allow 127.0.0.1 offers XFORWARD to 127.0.0.1 and obeys it; -h lists it', async () => {
    const help = await runCli(['-h']);
    assert.match(help.stdout, /\[--xforward-allow ADDRS\]/);
    assert.match(help.stdout, /^  --xforward-allow ADDRS$/m);
    const port = await freePort();
    await withCli(['-n', '-c', 'Sink', '-l', `127.0.0.1:${port}`, '--xforward-allow', '10.0.0.0/8,127.0.0.1'], async () => {
      const { c, ehloLines } = await ehlo(port);
      try {
        assert.ok(ehloLines.some((l) => /^250[- ]XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE$/.test(l)), ehloLines.join('|'));
        assert.equal((await c.cmd('XFORWARD ADDR=203.0.113.9 PORT=25')).code, 250);
      } finally {
        c.close();
      }
    });
  });

  test('-s 100 advertises SIZE 100 and a 500-byte message gets 552', async () => {
    const port = await freePort();
    await withCli(['-n', '-c', 'Sink', '-s', '100', '-l', `127.0.0.1:${port}`], async () => {
      const { c, ehloLines } = await ehlo(port);
      try {
        assert.ok(ehloLines.some((l) => /^250[- ]SIZE 100$/.test(l)), ehloLines.join('|'));
        const body = 'Subject: big\r\n\r\n' + ('x'.repeat(98) + '\r\n').repeat(5);
        assert.ok(body.length >= 500);
        const r = await send(c, body);
        assert.equal(r.code, 552, r.text);
        // The session goes on: a small message still gets through.
        const small = await send(c, 'Subject: s\r\n\r\nok\r\n');
        assert.equal(small.code, 250, small.text);
        // SIZE= over the limit is refused at MAIL.
        assert.equal((await c.cmd('MAIL FROM:<a@example.com> SIZE=500')).code, 552);
      } finally {
        c.close();
      }
    });
  });

  test('-u advertises SMTPUTF8 and accepts a UTF-8 address', async () => {
    const port = await freePort();
    await withCli(['-n', '-u', '-c', 'Sink', '-l', `127.0.0.1:${port}`], async () => {
      const { c, ehloLines } = await ehlo(port);
      try {
        assert.ok(ehloLines.some((l) => /^250[- ]SMTPUTF8$/.test(l)), ehloLines.join('|'));
        assert.equal((await c.cmd('MAIL FROM:<jörg@example.com> SMTPUTF8')).code, 250);
        assert.equal((await c.cmd('RCPT TO:<用户@例子.广告>')).code, 250);
        assert.equal((await c.cmd('DATA')).code, 354);
        c.send('Subject: utf8\r\n\r\nGrüße\r\n.\r\n');
        assert.equal((await c.reply()).code, 250);
      } finally {
        c.close();
      }
    });
  });

  test('default handler Debugging prints the message block on stdout', async () => {
    const port = await freePort();
    await withCli(['-n', '-l', `127.0.0.1:${port}`], async (p) => {
      assert.match(p.stderr, /handler Debugging/);
      const { c } = await ehlo(port);
      try {
        const r = await send(c, 'Subject: printed\r\nFrom: a@example.com\r\n\r\nthe body line\r\n');
        assert.equal(r.code, 250, r.text);
        await p.until(() => p.stdout.includes('------------ END MESSAGE ------------'), 'END MESSAGE on stdout', 5000);
        const port2 = c.socket.localPort;
        assert.equal(
          p.stdout,
          [
            '---------- MESSAGE FOLLOWS ----------',
            'Subject: printed',
            'From: a@example.com',
            `X-Peer: 127.0.0.1:${port2}`,
            '',
            'the body line',
            '------------ END MESSAGE ------------',
            '',
          ].join('\n'),
        );
        assert.doesNotMatch(p.stderr, /MESSAGE FOLLOWS/);
      } finally {
        c.close();
      }
    });
  });

  test('-c Debugging stderr prints to stderr', async () => {
    const port = await freePort();
    await withCli(['-n', '-c', 'Debugging', 'stderr', '-l', `127.0.0.1:${port}`], async (p) => {
      const { c } = await ehlo(port);
      try {
        assert.equal((await send(c, 'Subject: to stderr\r\n\r\nbody\r\n')).code, 250);
        await p.until(() => p.stderr.includes('------------ END MESSAGE ------------'), 'END MESSAGE on stderr', 5000);
        assert.match(p.stderr, /---------- MESSAGE FOLLOWS ----------\nSubject: to stderr\nX-Peer: 127\.0\.0\.1:\d+\n\nbody\n------------ END MESSAGE ------------\n/);
        assert.equal(p.stdout, '');
      } finally {
        c.close();
      }
    });
  });

  test('-c Mailbox DIR stores a message that Python mailbox.Maildir reads', () =>
    withTempDir(async (dir) => {
      const maildir = join(dir, 'Maildir');
      const port = await freePort();
      await withCli(['-n', '-c', 'Mailbox', maildir, '-l', `127.0.0.1:${port}`], async () => {
        const { c } = await ehlo(port);
        try {
          const r = await send(c, 'Subject: stored\r\nFrom: anne@example.com\r\n\r\nkept byte for byte\r\n', 'anne@example.com', 'bart@example.com');
          assert.equal(r.code, 250, r.text);
        } finally {
          c.close();
        }
      });
      const files = await readdir(join(maildir, 'new'));
      assert.equal(files.length, 1);
      assert.deepEqual(await readdir(join(maildir, 'tmp')), []);
      const messages = await readMaildir(maildir);
      assert.equal(messages.length, 1);
      const m = messages[0]!;
      assert.equal(m.subdir, 'new');
      assert.equal(m.from, 'anne@example.com');
      assert.equal(m.rcpt, 'bart@example.com');
      assert.match(m.peer, /^127\.0\.0\.1:\d+$/);
      assert.equal(m.subject, 'stored');
      assert.equal(m.body.replace(/\r\n/g, '\n'), 'kept byte for byte\n');
    }));

  test('swaks --server 127.0.0.1:PORT --to b@example.com delivers into the Maildir', async (t: TestContext) => {
    if (!hasCommand('swaks')) {
      t.skip('swaks not installed');
      return;
    }
    await withTempDir(async (dir) => {
      const maildir = join(dir, 'Maildir');
      const port = await freePort();
      await withCli(['-n', '-c', 'Mailbox', maildir, '-l', `127.0.0.1:${port}`], async () => {
        const r = await execFileP('swaks', ['--server', `127.0.0.1:${port}`, '--to', 'b@example.com', '--timeout', '10'], {
          timeout: 15000,
        });
        assert.match(r.stdout, /<- {2}250 [^\n]*\n -> QUIT/);
      });
      const messages = await readMaildir(maildir);
      assert.equal(messages.length, 1);
      assert.equal(messages[0]!.rcpt, 'b@example.com');
      assert.match(messages[0]!.subject, /^test /);
      assert.match(messages[0]!.body, /This is a test mailing/);
    });
  });

  test('-c ./handler.mjs:MyHandler arg1 arg2 loads a user module and passes the args to fromCli', () =>
    withTempDir(async (dir) => {
      await writeFile(
        join(dir, 'handler.mjs'),
        [
          'export class MyHandler {',
          '  constructor(args) { this.args = args; }',
          '  static fromCli(...args) { return new MyHandler(args); }',
          "  handleDATA() { return `250 OK args=${this.args.join(',')}`; }",
          '}',
        ].join('\n'),
      );
      for (const classpath of ['./handler.mjs:MyHandler', `${join(dir, 'handler.mjs')}:MyHandler`]) {
        const port = await freePort();
        await withCli(
          ['-n', '-c', classpath, '-l', `127.0.0.1:${port}`, 'arg1', 'arg2'],
          async () => {
            const { c } = await ehlo(port);
            try {
              const r = await send(c, 'Subject: x\r\n\r\ny\r\n');
              assert.equal(r.code, 250, r.text);
              assert.match(r.text, /OK args=arg1,arg2$/);
            } finally {
              c.close();
            }
          },
          { cwd: dir },
        );
      }
    }));

  test('-s 0 means no size limit', async () => {
    const port = await freePort();
    await withCli(['-n', '-c', 'Sink', '-s', '0', '-l', `127.0.0.1:${port}`], async () => {
      const { c, ehloLines } = await ehlo(port);
      try {
        const size = ehloLines.find((l) => /^250[- ]SIZE\b/.test(l));
        if (size !== undefined) assert.match(size, /^250[- ]SIZE( 0)?$/, 'a limit advertised with -s 0');
        const r = await send(c, 'Subject: big\r\n\r\n' + ('y'.repeat(998) + '\r\n').repeat(200));
        assert.equal(r.code, 250, r.text);
      } finally {
        c.close();
      }
    });
  });

  test('-dd logs every command line on stderr', async () => {
    const port = await freePort();
    await withCli(['-n', '-dd', '-c', 'Sink', '-l', `127.0.0.1:${port}`], async (p) => {
      const { c } = await ehlo(port);
      try {
        assert.equal((await c.cmd('NOOP hello-from-test')).code, 250);
        await p.until(() => p.stderr.includes('NOOP hello-from-test'), 'the NOOP line on stderr', 5000);
        assert.match(p.stderr, /EHLO client\.example/);
      } finally {
        c.close();
      }
    });
  });

  test('Debugging on a closed stdout (tsmtpd | head) does not kill the server', async () => {
    const port = await freePort();
    await withCli(['-n', '-l', `127.0.0.1:${port}`], async (p) => {
      // The reader of our stdout goes away, as `tsmtpd | head -n 5` does after five lines.
      p.child.stdout!.destroy();
      await new Promise((r) => setTimeout(r, 100));
      for (let i = 0; i < 2; i++) {
        const { c } = await ehlo(port);
        try {
          const r = await send(c, `Subject: ${i}\r\n\r\nbody\r\n`);
          assert.ok(r.code === 250 || (r.code >= 400 && r.code < 500), `reply ${r.text}`);
          assert.equal((await c.cmd('QUIT')).code, 221);
        } finally {
          c.close();
        }
        await new Promise((r) => setTimeout(r, 200));
        assert.equal(p.exit, null, `tsmtpd died: ${JSON.stringify(p.exit)} ${p.stderr}`);
      }
    });
  });

  test('-d logs a connection line on stderr', async () => {
    const port = await freePort();
    await withCli(['-n', '-d', '-c', 'Sink', '-l', `127.0.0.1:${port}`], async (p) => {
      const c = await RawClient.connect(port);
      try {
        assert.equal((await c.reply()).code, 220);
        const me = `127.0.0.1:${c.socket.localPort}`;
        await p.until(() => p.stderr.includes(`${me} connected`), `'${me} connected' on stderr`, 5000);
      } finally {
        c.close();
      }
    });
  });
});

describe('listen addresses', () => {
  /** A port free on both loopbacks (when ::1 exists). */
  async function dualFreePort(ipv6: boolean): Promise<number> {
    for (let i = 0; i < 20; i++) {
      const port = await freePort();
      if (!ipv6 || (await canBind(port, '::1'))) return port;
    }
    throw new Error('no port free on both loopbacks');
  }

  for (const form of [':PORT', 'localhost:PORT']) {
    test(`-l ${form} listens on 127.0.0.1 (and ::1 when available)`, async () => {
      const ipv6 = (await getLocalhost()) === '::1';
      const port = await dualFreePort(ipv6);
      const value = form.replace('PORT', String(port));
      await withCli(['-n', '-c', 'Sink', '-l', value], async (p) => {
        const c4 = await RawClient.connect(port, '127.0.0.1');
        try {
          assert.equal((await c4.reply()).code, 220);
        } finally {
          c4.close();
        }
        if (ipv6) {
          assert.match(p.stderr, new RegExp(`\\[::1\\]:${port}`));
          const c6 = await RawClient.connect(port, '::1');
          try {
            assert.equal((await c6.reply()).code, 220);
          } finally {
            c6.close();
          }
        }
      });
    });
  }

  test('-l [::1]:PORT listens on ::1 only', async (t: TestContext) => {
    if ((await getLocalhost()) !== '::1') {
      t.skip('no IPv6 loopback');
      return;
    }
    let port = 0;
    for (let i = 0; i < 20 && port === 0; i++) {
      const p = await freePort('::1');
      if (await canBind(p, '127.0.0.1')) port = p;
    }
    await withCli(['-n', '-c', 'Sink', '-l', `[::1]:${port}`], async () => {
      assert.ok(await canConnect(port, '::1'));
      assert.equal(await canConnect(port, '127.0.0.1'), false);
    });
  });

  test('a port already in use: exit 1 with one line', async () => {
    const port = await freePort();
    await withCli(['-n', '-c', 'Sink', '-l', `127.0.0.1:${port}`], async () => {
      const r = await runCli(['-n', '-c', 'Sink', '-l', `127.0.0.1:${port}`]);
      assert.equal(r.code, 1, r.stderr);
      assertOneLineNoStack(r.stderr, 'EADDRINUSE');
      assert.match(r.stderr, /EADDRINUSE|in use/);
    });
  });
});

describe('signals', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    test(`${signal} makes the process exit 0 within a few seconds and frees the port`, async () => {
      const port = await freePort();
      const p = new CliProcess(['-n', '-c', 'Sink', '-l', `127.0.0.1:${port}`]);
      try {
        await p.listening();
        const c = await RawClient.connect(port);
        assert.equal((await c.reply()).code, 220);
        const t0 = Date.now();
        p.child.kill(signal);
        const exit = await p.waitExit(5000);
        assert.deepEqual(exit, { code: 0, signal: null }, p.stderr);
        assert.ok(Date.now() - t0 < 5000);
        // The open client was told and closed.
        const r = await c.reply(3000).catch(() => null);
        if (r !== null) assert.equal(r.code, 421, r.text);
        await c.waitClosed(3000);
        c.close();
        assert.ok(await canBind(port), 'port still bound after exit');
      } finally {
        await p.stop();
      }
    });
  }
});

describe('setuid', () => {
  const isRoot = process.getuid?.() === 0;

  test('as root without -n: binds, then drops privileges to nobody', async (t: TestContext) => {
    if (!isRoot) {
      t.skip('not running as root');
      return;
    }
    const nobodyUid = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8', timeout: 5000 }).trim());
    // A privileged port when one is free shows that binding happens before the drop.
    let port = 0;
    for (let candidate = 1023; candidate > 1000 && port === 0; candidate--) {
      if (await canBind(candidate)) port = candidate;
    }
    if (port === 0) port = await freePort();
    await withCli(['-c', 'Sink', '-l', `127.0.0.1:${port}`], async (p) => {
      const { c } = await ehlo(port);
      try {
        assert.equal((await send(c, 'Subject: x\r\n\r\ny\r\n')).code, 250);
      } finally {
        c.close();
      }
      const status = readFileSync(`/proc/${p.pid}/status`, 'utf8');
      const uids = /^Uid:\s+(.*)$/m.exec(status)![1]!.trim().split(/\s+/).map(Number);
      assert.deepEqual(uids, [nobodyUid, nobodyUid, nobodyUid, nobodyUid], `Uid line: ${uids.join(' ')}`);
      const gids = /^Gid:\s+(.*)$/m.exec(status)![1]!.trim().split(/\s+/).map(Number);
      assert.ok(!gids.includes(0), `still in group root: Gid ${gids.join(' ')}`);
      const groups = /^Groups:\s*(.*)$/m.exec(status)![1]!.trim().split(/\s+/).filter(Boolean).map(Number);
      assert.ok(!groups.includes(0), `supplementary group root kept: ${groups.join(' ')}`);
      const user = execFileSync('ps', ['-o', 'user=', '-p', String(p.pid)], { encoding: 'utf8', timeout: 5000 }).trim();
      assert.equal(user, 'nobody');
    });
  });

  // The usual case in a container: the Maildir is made by the user the server serves as.
  test('as root without -n: -c Mailbox DIR makes a Maildir nobody owns, and mail is delivered', async (t: TestContext) => {
    if (!isRoot) {
      t.skip('not running as root');
      return;
    }
    await withTempDir(async (dir) => {
      await chmod(dir, 0o1777); // a parent nobody may create in, as /tmp
      const mailDir = join(dir, 'Maildir');
      const port = await freePort();
      await withCli(['-c', 'Mailbox', mailDir, '-l', `127.0.0.1:${port}`], async () => {
        const { c } = await ehlo(port);
        try {
          assert.equal((await send(c, 'Subject: root\r\n\r\nbody\r\n')).code, 250);
        } finally {
          c.close();
        }
      });
      const nobodyUid = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8', timeout: 5000 }).trim());
      for (const sub of ['', 'tmp', 'new', 'cur']) assert.equal(statSync(join(mailDir, sub)).uid, nobodyUid, `owner of ${sub || 'Maildir'}`);
      const delivered = await readdir(join(mailDir, 'new'));
      assert.equal(delivered.length, 1);
      assert.match(readFileSync(join(mailDir, 'new', delivered[0]!), 'utf8'), /Subject: root/);
    });
  });

  test('as root without -n: a Maildir nobody cannot write is refused at start (exit 2, one line naming nobody and -n)', async (t: TestContext) => {
    if (!isRoot) {
      t.skip('not running as root');
      return;
    }
    await withTempDir(async (dir) => {
      await chmod(dir, 0o755);
      // What a root run with -n leaves behind: root's, mode 0700; and a root-owned 0755 one.
      const privateDir = join(dir, 'private');
      const readOnly = join(dir, 'readonly');
      for (const sub of ['tmp', 'new', 'cur']) {
        await mkdir(join(privateDir, sub), { recursive: true, mode: 0o700 });
        await mkdir(join(readOnly, sub), { recursive: true, mode: 0o755 });
      }
      await chmod(privateDir, 0o700);
      for (const mailDir of [privateDir, readOnly, join(dir, 'unmade')]) {
        const port = await freePort();
        const r = await runCli(['-c', 'Mailbox', mailDir, '-l', `127.0.0.1:${port}`]);
        assert.equal(r.code, 2, `${mailDir}: exit ${r.code}: ${r.stderr}`);
        assertOneLineNoStack(r.stderr, mailDir);
        assert.match(r.stderr, /as user nobody.*EACCES.*run with -n/);
        assert.ok(await canBind(port), 'bound the port although it refused to run');
      }
    });
  });

  test('not root and without -n: exits 1 with a message mentioning -n', async (t: TestContext) => {
    // As root, run the CLI as nobody to see the non-root path.
    const options = isRoot ? { uid: 65534, gid: 65534, env: { ...process.env, HOME: '/' } } : {};
    if (isRoot) {
      const nobody = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8', timeout: 5000 }).trim());
      options.uid = nobody;
      options.gid = Number(execFileSync('id', ['-g', 'nobody'], { encoding: 'utf8', timeout: 5000 }).trim());
      const node = nodeBinaryFor(options.uid, options.gid);
      if (node instanceof Error) {
        t.skip(`nobody cannot run node: ${node.message}`);
        return;
      }
    }
    assert.ok(existsSync(CLI));
    const port = await freePort();
    const r = await runCli(['-c', 'Sink', '-l', `127.0.0.1:${port}`], options);
    assert.equal(r.code, 1, `exit ${r.code}: ${r.stderr}`);
    assert.match(r.stderr, /(^|\s)-n\b/);
    assertOneLineNoStack(r.stderr, 'setuid refusal');
    assert.ok(await canBind(port), 'bound the port although it refused to run');
  });
});
