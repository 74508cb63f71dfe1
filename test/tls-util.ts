/**
 * Helpers for the TLS and AUTH tests: certificates made at test time with the `openssl` CLI
 * (never committed: they would expire), a raw SMTP client that can upgrade itself with STARTTLS
 * or speak implicit TLS, and tool detection. Every wait is bounded.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import type { TestContext } from 'node:test';
import type { Logger } from '../src/index.js';
import { RawClient, connectSocket, type SMTPReply } from './helpers.js';

const execFileP = promisify(execFile);
const WAIT_MS = 5000;

// ---- tools ------------------------------------------------------------------------------

export function hasCommand(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore', timeout: 5000 });
    return true;
  } catch {
    return false;
  }
}

/**
 * True when `tool` is installed. When it is not: under CI the test fails (CI must have it),
 * elsewhere the test is skipped.
 */
export function needTool(t: TestContext, tool: string): boolean {
  if (hasCommand(tool)) return true;
  if (process.env.CI) assert.fail(`${tool} missing`);
  t.skip(`${tool} not installed`);
  return false;
}

/** Runs a program with a hard time limit; never rejects, returns what it printed. */
export async function run(
  cmd: string,
  args: string[],
  options: { input?: string; timeout?: number; cwd?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = execFileP(cmd, args, { timeout: options.timeout ?? 15000, cwd: options.cwd, maxBuffer: 16 << 20 });
  if (options.input !== undefined) {
    p.child.stdin?.end(options.input);
  } else {
    p.child.stdin?.end();
  }
  try {
    const { stdout, stderr } = await p;
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number | string; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : null, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

// ---- certificates -----------------------------------------------------------------------

export interface KeyPair {
  certPath: string;
  keyPath: string;
  cert: string;
  key: string;
  /** SHA-256 fingerprint as Node's getPeerCertificate().fingerprint256 spells it. */
  fingerprint256: string;
}

export interface Certs {
  dir: string;
  caPath: string;
  ca: string;
  /** Server certificate for localhost / 127.0.0.1 / ::1, signed by the CA. */
  server: KeyPair;
  /** A second server certificate (another key), for reload tests. */
  server2: KeyPair;
  /** A client certificate (CN=test-client), signed by the CA. */
  client: KeyPair;
  cleanup(): void;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], timeout: 15000 });
}

/** Node's fingerprint256 format: upper-case hex pairs joined by ':'. */
export function fingerprintOf(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

function makePair(dir: string, name: string, subject: string, ext: string): KeyPair {
  const keyPath = join(dir, `${name}.key`);
  const csrPath = join(dir, `${name}.csr`);
  const certPath = join(dir, `${name}.crt`);
  const extPath = join(dir, `${name}.ext`);
  writeFileSync(extPath, ext);
  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyPath, '-out', csrPath, '-subj', subject], dir);
  openssl(
    ['x509', '-req', '-in', csrPath, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', String(Date.now() + Math.floor(Math.random() * 1e6)), '-days', '2', '-sha256', '-extfile', extPath, '-out', certPath],
    dir,
  );
  const cert = readFileSync(certPath, 'utf8');
  return { certPath, keyPath, cert, key: readFileSync(keyPath, 'utf8'), fingerprint256: fingerprintOf(cert) };
}

/**
 * Makes a CA, two server certificates (localhost, 127.0.0.1, ::1) and a client certificate in
 * a fresh temporary directory. Call cleanup() when done.
 */
export function makeCerts(): Certs {
  const dir = mkdtempSync(join(tmpdir(), 'tsmtpd-tls-'));
  try {
    openssl(
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-sha256', '-subj', '/CN=tsmtpd test CA',
        '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
      dir,
    );
    const serverExt =
      'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n';
    const clientExt = 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n';
    const server = makePair(dir, 'server', '/CN=localhost', serverExt);
    const server2 = makePair(dir, 'server2', '/CN=localhost', serverExt);
    const client = makePair(dir, 'client', '/CN=test-client', clientExt);
    const caPath = join(dir, 'ca.crt');
    return {
      dir,
      caPath,
      ca: readFileSync(caPath, 'utf8'),
      server,
      server2,
      client,
      cleanup: () => rmSync(dir, { recursive: true, force: true }),
    };
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

/** makeCerts() when openssl is there; null (or a CI failure at first use) otherwise. */
export function makeCertsIfPossible(): Certs | null {
  return hasCommand('openssl') ? makeCerts() : null;
}

/** The certificates, or skip (fail under CI) when openssl is missing. */
export function needCerts(t: TestContext, certs: Certs | null): certs is Certs {
  if (certs !== null) return true;
  if (process.env.CI) assert.fail('openssl missing');
  t.skip('openssl not installed');
  return false;
}

// ---- a raw client that can speak TLS ------------------------------------------------------

/**
 * Sends exact bytes and reads whole replies, over plain TCP, after STARTTLS (upgrade()), or
 * over implicit TLS (connectTLS()). `received` keeps every byte read (for "no greeting" checks).
 */
/** The raw client of helpers.ts, plus implicit TLS and STARTTLS. */
export class TlsRawClient extends RawClient {
  static override connect(port: number, host = '127.0.0.1'): Promise<TlsRawClient> {
    return connectSocket(() => net.connect({ port, host }), 'connect').then((s) => new TlsRawClient(s));
  }

  /** Implicit TLS: the handshake first. Rejects when it fails or takes more than 5 s. */
  static connectTLS(port: number, options: tls.ConnectionOptions = {}, host = '127.0.0.1'): Promise<TlsRawClient> {
    return connectSocket(() => tls.connect({ port, host, rejectUnauthorized: false, ...options }), 'secureConnect').then(
      (s) => new TlsRawClient(s),
    );
  }

  get tlsSocket(): tls.TLSSocket {
    assert.ok(this.socket instanceof tls.TLSSocket, 'not a TLS connection');
    return this.socket as tls.TLSSocket;
  }

  /** The server certificate's SHA-256 fingerprint (TLS connections only). */
  peerFingerprint(): string {
    return this.tlsSocket.getPeerCertificate().fingerprint256;
  }

  /**
   * Wraps the connection in TLS (after the server's 220 to STARTTLS). Whatever was read but not
   * consumed is kept in `buf`, so a test can see plaintext the server should not have sent.
   */
  upgrade(options: tls.ConnectionOptions = {}): Promise<void> {
    const raw = this.socket;
    raw.off('data', this.onData);
    raw.off('close', this.onClose);
    return new Promise((resolve, reject) => {
      const secure = tls.connect({ socket: raw, rejectUnauthorized: false, ...options });
      const timer = setTimeout(() => {
        secure.destroy();
        reject(new Error('TLS handshake timed out'));
      }, WAIT_MS);
      secure.once('secureConnect', () => {
        clearTimeout(timer);
        secure.off('error', fail);
        this.socket = secure;
        this.listen(secure);
        resolve();
      });
      const fail = (e: Error) => {
        clearTimeout(timer);
        secure.destroy();
        this.closed = true;
        reject(e);
      };
      secure.once('error', fail);
    });
  }

  /** Sends a command and asserts the reply code; returns the reply. */
  async expect(text: string, code: number): Promise<SMTPReply> {
    const r = await this.cmd(text);
    assert.equal(r.code, code, `${text}: expected ${code}, got ${JSON.stringify(r.text)}`);
    return r;
  }

  /** True when nothing (not even a partial line) arrives within ms. */
  async silentFor(ms: number): Promise<boolean> {
    if (this.buf.length > 0) return false;
    const deadline = Date.now() + ms;
    while (Date.now() < deadline && !this.closed) {
      await this.waitForChange(deadline - Date.now());
      if (this.buf.length > 0) return false;
    }
    return this.buf.length === 0;
  }
}

/**
 * Connects, reads the greeting, EHLO, STARTTLS (220), upgrades and says EHLO again. Returns the
 * client and the EHLO replies before and after TLS.
 */
export async function startTLSClient(
  port: number,
  options: tls.ConnectionOptions = {},
): Promise<{ c: TlsRawClient; before: SMTPReply; after: SMTPReply }> {
  const c = await TlsRawClient.connect(port);
  try {
    assert.equal((await c.reply()).code, 220);
    const before = await c.expect('EHLO client.example', 250);
    const r = await c.cmd('STARTTLS');
    assert.equal(r.code, 220, r.text);
    await c.upgrade(options);
    const after = await c.expect('EHLO client.example', 250);
    return { c, before, after };
  } catch (error) {
    c.close();
    throw error;
  }
}

/** The EHLO keywords (lines after the first, without the code). */
export function ehloKeywords(reply: SMTPReply): string[] {
  return reply.lines.slice(1).map((l) => l.slice(4));
}

// ---- logging ------------------------------------------------------------------------------

/** A logger that keeps every line at every level. */
export class CapturingLogger implements Logger {
  lines: string[] = [];
  debug(message: string): void {
    this.lines.push(`debug: ${message}`);
  }
  info(message: string): void {
    this.lines.push(`info: ${message}`);
  }
  warn(message: string): void {
    this.lines.push(`warn: ${message}`);
  }
  error(message: string, error?: unknown): void {
    const detail = error instanceof Error ? `${error.message}\n${error.stack ?? ''}` : error === undefined ? '' : String(error);
    this.lines.push(`error: ${message} ${detail}`);
  }
  get text(): string {
    return this.lines.join('\n');
  }
}

export const b64 = (s: string | Buffer): string => Buffer.from(s).toString('base64');

/**
 * Every form in which a password could leak into a log: as is, base64 on its own (LOGIN),
 * inside a PLAIN response, and case-folded (an echoed verb is upper-cased).
 */
export function secretForms(login: string, password: string): string[] {
  const forms = [password, b64(password), b64(`\0${login}\0${password}`), b64(`${login}\0${login}\0${password}`)];
  return [...forms, ...forms.map((f) => f.toUpperCase())];
}

/** Asserts none of the secret forms occurs in text. */
export function assertNoSecret(text: string, forms: string[], where: string): void {
  for (const f of forms) {
    assert.ok(!text.includes(f), `${where}: a password form ${JSON.stringify(f)} appears in ${JSON.stringify(text.slice(0, 4000))}`);
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
