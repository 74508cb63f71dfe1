/**
 * Behind a real HAProxy (Debian package haproxy), in TCP mode on loopback: with `send-proxy`
 * (v1) and `send-proxy-v2` the handler sees the client's own address in session.peer, not
 * HAProxy's. The client binds a chosen loopback address (127.0.0.0/8 all reaches lo on Linux),
 * so "the real client" and "the proxy" differ. HAProxy runs in the foreground as a child
 * process (`-db`) and is killed in `finally`; never a daemon. Missing haproxy: skipped, or a
 * failure under CI (.ci/run installs it).
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { Controller } from '../src/controller.js';
import type { SMTPServer } from '../src/handler.js';
import type { Logger } from '../src/options.js';
import type { ProxyData } from '../src/proxy-protocol.js';
import type { Envelope, Session } from '../src/session.js';
import { CliProcess, ROOT, freePort } from './cli-util.js';
import { PeerRecorder, Probe, needTool, pool, removeDir, startHAProxy, startHAProxyAnywhere, tempDir, transaction, until } from './scale-util.js';

const quiet: Logger = { debugEnabled: false, debug() {}, info() {}, warn() {}, error() {} };

/** Also records each EHLO (HAProxy's smtpchk health checks say EHLO haproxy-check.example). */
class Recorder extends PeerRecorder {
  ehlos: Array<{ hostname: string; proxyData: ProxyData | null; peer: string }> = [];
  handleEHLO(_server: SMTPServer, session: Session, _envelope: Envelope, hostname: string, responses: string[]): string[] {
    this.ehlos.push({ hostname, proxyData: session.proxyData, peer: session.peer.address });
    return responses;
  }
}

function config(front: number, back: number, server: string, extra: { frontend?: string[]; backend?: string[] } = {}): string {
  return [
    'global',
    '    maxconn 512',
    'defaults',
    '    mode tcp',
    '    timeout connect 2s',
    '    timeout client 15s',
    '    timeout server 15s',
    'frontend smtp_in',
    `    bind 127.0.0.1:${front}`,
    ...(extra.frontend ?? []),
    '    default_backend tsmtpd',
    'backend tsmtpd',
    ...(extra.backend ?? []),
    `    server s1 127.0.0.1:${back} ${server}`,
    '',
  ].join('\n');
}

async function withTsmtpd<T>(fn: (controller: Controller, handler: Recorder) => Promise<T>): Promise<T> {
  const handler = new Recorder();
  const controller = new Controller(handler, { hostname: '127.0.0.1', port: 0, proxyProtocolTimeout: 3000, logger: quiet });
  await controller.start();
  try {
    return await fn(controller, handler);
  } finally {
    await controller.stop();
  }
}

describe('the same message through HAProxy, v1 and v2: the handler sees the real client', () => {
  for (const [label, server, version] of [
    ['send-proxy (v1)', 'send-proxy', 1],
    ['send-proxy-v2', 'send-proxy-v2', 2],
    ['send-proxy-v2 with CRC32C and a unique id', 'send-proxy-v2 proxy-v2-options crc32c,unique-id', 2],
  ] as const) {
    test(label, async (t) => {
      if (!needTool(t, 'haproxy')) return;
      const dir = await tempDir('haproxy');
      try {
        await withTsmtpd(async (controller, handler) => {
          const uniqueId = server.includes('unique-id') ? ['    unique-id-format %ci:%cp'] : [];
          const haproxy = await startHAProxyAnywhere(dir, (port) => config(port, controller.port, server, { frontend: uniqueId }));
          const front = haproxy.front;
          try {
            for (const localAddress of ['127.0.0.2', '127.0.0.3']) {
              const p = await Probe.connect(front, { localAddress });
              try {
                const end = await transaction(p, { body: 'Subject: through haproxy\r\n\r\nhello\r\n' });
                assert.equal(end.code, 250, end.text);
                const seen = handler.seen.at(-1)!;
                assert.deepEqual(
                  seen.peer,
                  { address: localAddress, port: p.socket.localPort, family: 'IPv4' },
                  `the handler saw ${JSON.stringify(seen.peer)}; haproxy output: ${haproxy.output()}`,
                );
                const d = seen.proxyData!;
                assert.equal(d.version, version);
                assert.equal(d.command, 'PROXY');
                assert.equal(d.family, 'TCP4');
                assert.equal(d.dstAddress, '127.0.0.1');
                assert.equal(d.dstPort, front);
                if (server.includes('crc32c')) assert.equal(d.crc32cValid, true);
                if (uniqueId.length > 0) assert.equal(d.uniqueId?.toString(), `${localAddress}:${p.socket.localPort}`);
                assert.deepEqual(handler.messages.at(-1)!.peer, seen.peer);
                assert.match(handler.messages.at(-1)!.content.toString(), /Subject: through haproxy/);
              } finally {
                p.close();
              }
            }
          } finally {
            await haproxy.stop();
          }
        });
      } finally {
        await removeDir(dir);
      }
    });
  }

  test('nodemailer through HAProxy (send-proxy-v2), from 127.0.0.4, 20 messages in parallel', async (t) => {
    if (!needTool(t, 'haproxy')) return;
    const dir = await tempDir('haproxy-nm');
    try {
      await withTsmtpd(async (controller, handler) => {
        const haproxy = await startHAProxyAnywhere(dir, (port) => config(port, controller.port, 'send-proxy-v2'));
        const front = haproxy.front;
        try {
          const transport = nodemailer.createTransport({
            host: '127.0.0.1',
            port: front,
            secure: false,
            ignoreTLS: true,
            localAddress: '127.0.0.4',
            connectionTimeout: 5000,
            greetingTimeout: 5000,
            socketTimeout: 10000,
          } as Parameters<typeof nodemailer.createTransport>[0]);
          try {
            await pool(
              Array.from({ length: 20 }, (_, i) => i),
              20,
              (i) => transport.sendMail({ from: 'a@example.com', to: 'b@example.com', subject: `m${i}`, text: `message ${i}` }),
            );
          } finally {
            transport.close();
          }
          assert.equal(handler.messages.length, 20);
          for (const m of handler.messages) assert.equal(m.peer.address, '127.0.0.4');
        } finally {
          await haproxy.stop();
        }
      });
    } finally {
      await removeDir(dir);
    }
  });

  test("HAProxy's SMTP health checks (v2: a LOCAL header; v1: HAProxy's own addresses) are answered", async (t) => {
    if (!needTool(t, 'haproxy')) return;
    const dir = await tempDir('haproxy-check');
    try {
      for (const [server, expected] of [
        ['send-proxy-v2 check inter 200ms', 'LOCAL'],
        ['send-proxy check inter 200ms', 'TCP4'],
      ] as const) {
        await withTsmtpd(async (controller, handler) => {
          const haproxy = await startHAProxyAnywhere(dir, (port) =>
            config(port, controller.port, server, { backend: ['    option smtpchk EHLO haproxy-check.example'] }),
          );
          try {
            const checked = await until(() => handler.ehlos.some((e) => e.hostname === 'haproxy-check.example'), 5000);
            assert.ok(checked, `no health check arrived; haproxy output: ${haproxy.output()}`);
            const check = handler.ehlos.find((e) => e.hostname === 'haproxy-check.example')!;
            if (expected === 'LOCAL') assert.equal(check.proxyData?.command, 'LOCAL');
            else assert.equal(check.proxyData?.family, 'TCP4'); // v1 has no LOCAL: it names HAProxy's own connection
            assert.equal(check.peer, '127.0.0.1', 'a health check keeps the proxy as the peer');
            // The server is up for HAProxy: traffic flows.
            const p = await Probe.connect(haproxy.front, { localAddress: '127.0.0.5' });
            try {
              assert.equal((await transaction(p)).code, 250);
              assert.equal(handler.seen.at(-1)!.peer.address, '127.0.0.5');
            } finally {
              p.close();
            }
            assert.doesNotMatch(haproxy.output(), /is DOWN/, haproxy.output());
          } finally {
            await haproxy.stop();
          }
        });
      }
    } finally {
      await removeDir(dir);
    }
  });
});

describe('the command line behind HAProxy', () => {
  for (const workers of [1, 2]) {
    test(`tsmtpd --proxy-protocol${workers > 1 ? ' --workers 2' : ''} (Debugging handler): X-Peer is the real client`, async (t) => {
      if (!needTool(t, 'haproxy')) return;
      const dir = await tempDir('haproxy-cli');
      const back = await freePort();
      const front = await freePort();
      const args = ['-n', '-l', `127.0.0.1:${back}`, '--proxy-protocol=3'];
      if (workers > 1) args.push('--workers', String(workers));
      const cli = new CliProcess(args);
      try {
        if (workers > 1) await cli.until(() => /workers listening on/.test(cli.stderr) || cli.exit !== null, 'workers', 10000);
        else await cli.listening();
        assert.equal(cli.exit, null, cli.stderr);
        for (const server of ['send-proxy', 'send-proxy-v2']) {
          const haproxy = await startHAProxy(dir, config(front, back, server), front);
          try {
            const ports = await pool([0, 1, 2, 3], 4, async (i) => {
              const p = await Probe.connect(front, { localAddress: '127.0.0.6' });
              try {
                const end = await transaction(p, { body: `Subject: cli ${server} ${i}\r\n\r\nbody\r\n` });
                assert.equal(end.code, 250, end.text);
                return p.socket.localPort!;
              } finally {
                p.close();
              }
            });
            for (const port of ports) {
              const ok = await cli.until(() => cli.stdout.includes(`X-Peer: 127.0.0.6:${port}\n`), `X-Peer 127.0.0.6:${port}`, 5000).then(
                () => true,
                () => false,
              );
              assert.ok(ok, `no "X-Peer: 127.0.0.6:${port}" in the output (${server}): ${cli.stdout.slice(-2000)}`);
            }
            assert.doesNotMatch(cli.stdout, /X-Peer: 127\.0\.0\.1:/, 'a message was traced to HAProxy instead of the client');
          } finally {
            await haproxy.stop();
          }
        }
        cli.child.kill('SIGTERM');
        assert.deepEqual(await cli.waitExit(8000), { code: 0, signal: null });
      } finally {
        await cli.stop();
        await removeDir(dir);
      }
    });
  }
});

describe('docs/deploying.md', () => {
  test('every ```haproxy block is a configuration haproxy -c accepts', (t) => {
    if (!needTool(t, 'haproxy')) return;
    const text = readFileSync(join(ROOT, 'docs', 'deploying.md'), 'utf8');
    const blocks = [...text.matchAll(/^```haproxy\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
    assert.ok(blocks.length >= 1, 'no ```haproxy block in docs/deploying.md');
    const dir = mkdtempSync(join(tmpdir(), 'tsmtpd-docs-haproxy-'));
    try {
      for (const [i, block] of blocks.entries()) {
        const path = join(dir, `block${i}.cfg`);
        writeFileSync(path, block);
        const r = spawnSync('haproxy', ['-c', '-f', path], { encoding: 'utf8', timeout: 10000 });
        assert.equal(r.status, 0, `block ${i + 1} of docs/deploying.md:\n${block}\n${r.stdout}${r.stderr}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
