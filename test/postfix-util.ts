/**
 * A private Postfix instance for tests (interop.test.ts, xforward-postfix.test.ts), and the
 * process helpers around it (lmtp-postfix.test.ts runs smtp-source with them): every program runs under a hard time limit, and a missing tool
 * skips the test except under CI=true, where it fails.
 */
import { type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasCommand } from './tls-util.js';

/** The tool, or skip (fail under CI) when it is missing. */
export function need(t: TestContext, ...tools: string[]): boolean {
  for (const tool of tools) {
    if (hasCommand(tool)) continue;
    if (process.env.CI) assert.fail(`${tool} missing: CI must install it (.ci/run)`);
    t.skip(`${tool} not installed`);
    return false;
  }
  return true;
}

export interface Run {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** stdout and stderr together, in the order they arrived (a verbose log split over both). */
  output: string;
  timedOut: boolean;
}

/**
 * Runs a program with stdin `input` and a hard time limit (SIGKILL); never rejects. Each of
 * stdout, stderr and output keeps its last `keep` characters.
 */
export function run(
  cmd: string,
  args: string[],
  input = '',
  ms = 20000,
  env: NodeJS.ProcessEnv = process.env,
  keep = 20000,
): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    let output = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout = (stdout + d).slice(-keep);
      output = (output + d).slice(-keep);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-keep);
      output = (output + d).slice(-keep);
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, ms);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, stdout, stderr: stderr + String(error), output: output + String(error), timedOut });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, output, timedOut });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  });
}

export function assertRan(r: Run, what: string): void {
  assert.ok(
    r.code === 0 && !r.timedOut,
    `${what} ${r.timedOut ? 'timed out' : `exited ${r.code ?? r.signal}`}\n--- stdout\n${r.stdout.slice(-3000)}\n--- stderr\n${r.stderr.slice(-3000)}`,
  );
}

export const POSTFIX_SERVICES = `# service type  private unpriv  chroot  wakeup  maxproc command
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`;


/**
 * A private Postfix instance: config, queue and log in one temp dir, main.cf's `settings` over
 * the defaults below, `services` appended to the basic master.cf.
 */
export class PostfixInstance {
  readonly dir: string;
  readonly conf: string;
  readonly log: string;
  private started = false;

  constructor(settings: Record<string, string>, services = '') {
    this.dir = mkdtempSync(join(tmpdir(), 'tsmtpd-postfix-'));
    // The postfix user must reach the queue below it (mkdtemp makes the directory 0700).
    chmodSync(this.dir, 0o755);
    this.conf = join(this.dir, 'conf');
    this.log = join(this.dir, 'maillog');
    mkdirSync(this.conf);
    mkdirSync(join(this.dir, 'queue'));
    const main = {
      compatibility_level: '3.6',
      queue_directory: join(this.dir, 'queue'),
      data_directory: join(this.dir, 'data'),
      maillog_file: this.log,
      maillog_file_prefixes: this.dir,
      myhostname: 'postfix-client.tsmtpd.test',
      mydomain: 'tsmtpd.test',
      myorigin: '$myhostname',
      mydestination: '',
      local_recipient_maps: '',
      alias_maps: '',
      alias_database: '',
      inet_interfaces: 'loopback-only',
      inet_protocols: 'ipv4',
      mynetworks: '127.0.0.0/8',
      smtputf8_enable: 'no',
      biff: 'no',
      // No retry back-off games in a test: a failure shows at once in the log.
      smtp_connect_timeout: '10s',
      ...settings,
    };
    writeFileSync(join(this.conf, 'main.cf'), Object.entries(main).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n');
    writeFileSync(join(this.conf, 'master.cf'), POSTFIX_SERVICES + services);
  }

  /** The last lines of the instance's log, for failure messages. */
  tail(n = 40): string {
    return existsSync(this.log) ? readFileSync(this.log, 'utf8').split('\n').slice(-n).join('\n') : '(no maillog)';
  }

  async postfix(command: string): Promise<Run> {
    // Postfix prints its errors to stderr only when that is a terminal; the log has the rest.
    return run('postfix', ['-c', this.conf, command], '', 20000);
  }

  /** Why a postfix command failed: it prints to stderr only on a terminal, so ask again under script(1). */
  private async why(command: string): Promise<string> {
    if (!hasCommand('script')) return '(script(1) not installed to show the reason)';
    const r = await run('script', ['-qec', `postfix -c '${this.conf}' ${command}`, '/dev/null'], '', 20000);
    return r.stdout + r.stderr;
  }

  async start(): Promise<void> {
    const check = await this.postfix('check');
    if (check.code !== 0) assert.fail(`postfix check failed: ${await this.why('check')}\n${this.tail()}`);
    const r = await this.postfix('start');
    this.started = true;
    if (r.code !== 0) assert.fail(`postfix start failed: ${await this.why('status')}\n${this.tail()}`);
  }

  async submit(input: string, from: string, to: string): Promise<void> {
    // Postfix's sendmail: -C config_dir, -f envelope sender, -i (a lone "." is no end), -t off.
    const r = await run('sendmail', ['-C', this.conf, '-i', '-f', from, to], input, 15000);
    assertRan(r, 'postfix sendmail');
  }

  async flush(): Promise<void> {
    await run('postqueue', ['-c', this.conf, '-f'], '', 10000);
  }

  /** Stops the instance (bounded) and removes the directory. */
  async destroy(): Promise<void> {
    try {
      if (this.started) {
        const pidFile = join(this.dir, 'queue', 'pid', 'master.pid');
        const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : NaN;
        await this.postfix('stop');
        // The master takes a moment to end its children; wait for it, then kill what we started.
        const deadline = Date.now() + 8000;
        while (Number.isInteger(pid) && pid > 0 && existsSync(`/proc/${pid}`) && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 100));
        }
        if (Number.isInteger(pid) && pid > 0 && existsSync(`/proc/${pid}`)) {
          await this.postfix('abort');
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
      }
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

export function needPostfix(t: TestContext): boolean {
  if (!need(t, 'postfix', 'postconf', 'sendmail', 'postqueue')) return false;
  const mail = (() => {
    try {
      return execFileSync('postconf', ['-d', 'mail_version'], { encoding: 'utf8', timeout: 5000 });
    } catch {
      return '';
    }
  })();
  if (!/mail_version = \d/.test(mail)) {
    if (process.env.CI) assert.fail('postconf does not work: is Postfix installed?');
    t.skip('Postfix not usable');
    return false;
  }
  if (process.getuid?.() !== 0) {
    if (process.env.CI) assert.fail('the Postfix test runs a Postfix instance and needs root');
    t.skip('the Postfix test needs root (postfix start)');
    return false;
  }
  return true;
}
