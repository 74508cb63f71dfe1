/**
 * Apache htpasswd files as an authenticator for SMTP AUTH PLAIN and LOGIN.
 *
 * Hashes understood (what `htpasswd` writes):
 *  - bcrypt `$2y$` / `$2a$` / `$2b$` (`htpasswd -B`), checked with bcryptjs;
 *  - Apache MD5 `$apr1$` (`htpasswd -m`, its default), implemented here on node:crypto;
 *  - `{SHA}` base64 SHA-1 (`htpasswd -s`; unsalted and weak, accepted for old files).
 *
 * Refused on purpose (the password never matches): plain text (`htpasswd -p`), whose file would
 * be a list of clear passwords, and crypt(3) DES (`htpasswd -d`), which silently truncates
 * passwords to 8 characters. SHA-256/512 crypt (`$5$`, `$6$`: `htpasswd -2` / `-5`) is not
 * implemented and never matches either.
 *
 * CRAM-MD5 cannot be served from a file of hashes (the server needs the clear password), so the
 * authenticator fails it; offer PLAIN/LOGIN, over TLS.
 *
 * Nothing here logs, and no error message contains a password or a hash.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import bcrypt from 'bcryptjs';
import type { Authenticator } from './auth.js';

/** A line of an htpasswd file that is not `user:hash`. Carries the 1-based line number. */
export class HtpasswdSyntaxError extends Error {
  override name = 'HtpasswdSyntaxError';
  constructor(
    readonly line: number,
    reason: string,
  ) {
    super(`line ${line}: ${reason}`);
  }
}

/**
 * Parses an htpasswd file: one `user:hash` per line. Blank lines and lines starting with `#` are
 * skipped, CRLF and surrounding white space are tolerated, and (as Apache does) fields after a
 * second `:` are ignored and the first line for a user wins. Throws HtpasswdSyntaxError naming
 * the line (never its content) when a line has no user or no hash.
 */
export function parseHtpasswd(text: string): Map<string, string> {
  const users = new Map<string, string>();
  const lines = text.replace(/^\uFEFF/, '').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon < 0) throw new HtpasswdSyntaxError(i + 1, 'expected user:hash');
    const user = line.slice(0, colon);
    const end = line.indexOf(':', colon + 1);
    const hash = line.slice(colon + 1, end < 0 ? undefined : end);
    if (user === '' || /\s/.test(user)) throw new HtpasswdSyntaxError(i + 1, 'missing or invalid user name');
    if (hash === '' || /\s/.test(hash)) throw new HtpasswdSyntaxError(i + 1, 'missing or invalid hash');
    if (!users.has(user)) users.set(user, hash);
  }
  return users;
}

/** Reads and parses an htpasswd file, with a one-line message naming the file on failure. */
export async function loadHtpasswd(path: string): Promise<Map<string, string>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new Error(`cannot read auth file ${path}: ${(error as Error).message}`);
  }
  try {
    return parseHtpasswd(text);
  } catch (error) {
    if (error instanceof HtpasswdSyntaxError) throw new Error(`bad auth file ${path} ${error.message}`);
    throw error;
  }
}

const BCRYPT = /^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$/;
const APR1 = /^\$apr1\$([^$]{0,8})\$([./0-9A-Za-z]{22})$/;
const SHA1 = /^\{SHA\}([A-Za-z0-9+/]{27}=)$/;

export type HashKind = 'bcrypt' | 'apr1' | 'sha1';

/** Which supported scheme a stored hash uses, or null (plain text, DES crypt, anything else). */
export function hashKind(hash: string): HashKind | null {
  const m = BCRYPT.exec(hash);
  if (m !== null) {
    const cost = Number(m[1]);
    return cost >= 4 && cost <= 31 ? 'bcrypt' : null;
  }
  if (APR1.test(hash)) return 'apr1';
  if (SHA1.test(hash)) return 'sha1';
  return null;
}

const ITOA64 = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

function to64(value: number, chars: number): string {
  let out = '';
  for (let i = 0; i < chars; i++, value >>>= 6) out += ITOA64[value & 0x3f];
  return out;
}

const md5 = (...parts: Buffer[]): Buffer => {
  const h = createHash('md5');
  for (const p of parts) h.update(p);
  return h.digest();
};

/**
 * Apache's MD5 crypt (`$apr1$`, Poul-Henning Kamp's md5crypt with another magic string).
 * The salt is cut at 8 characters or a `$`. Returns the whole `$apr1$salt$hash` string.
 */
export function apr1Crypt(password: string, salt: string): string {
  salt = salt.replace(/^\$apr1\$/, '');
  const dollar = salt.indexOf('$');
  salt = (dollar < 0 ? salt : salt.slice(0, dollar)).slice(0, 8);
  const pw = Buffer.from(password, 'utf8');
  const sl = Buffer.from(salt, 'utf8');
  const magic = Buffer.from('$apr1$');

  const alternate = md5(pw, sl, pw);
  const ctx = createHash('md5').update(pw).update(magic).update(sl);
  for (let n = pw.length; n > 0; n -= 16) ctx.update(alternate.subarray(0, Math.min(n, 16)));
  for (let n = pw.length; n > 0; n >>>= 1) ctx.update(n & 1 ? Buffer.of(0) : pw.subarray(0, 1));
  let final = ctx.digest();

  for (let i = 0; i < 1000; i++) {
    const round = createHash('md5');
    round.update(i & 1 ? pw : final);
    if (i % 3) round.update(sl);
    if (i % 7) round.update(pw);
    round.update(i & 1 ? final : pw);
    final = round.digest();
  }

  const f = final;
  const encoded =
    to64((f[0]! << 16) | (f[6]! << 8) | f[12]!, 4) +
    to64((f[1]! << 16) | (f[7]! << 8) | f[13]!, 4) +
    to64((f[2]! << 16) | (f[8]! << 8) | f[14]!, 4) +
    to64((f[3]! << 16) | (f[9]! << 8) | f[15]!, 4) +
    to64((f[4]! << 16) | (f[10]! << 8) | f[5]!, 4) +
    to64(f[11]!, 2);
  return `$apr1$${salt}$${encoded}`;
}

function equalStrings(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Does the password match an htpasswd hash? Supports bcrypt (`$2y$`, `$2a$`, `$2b$`), `$apr1$`
 * and `{SHA}`; any other stored value (plain text, DES crypt, SHA-crypt, garbage) gives false.
 * Never throws. Comparisons are constant-time (bcryptjs compares its own result safely).
 */
export async function verifyPassword(password: string, hash: string): Promise<boolean> {
  switch (hashKind(hash)) {
    case 'bcrypt':
      try {
        // `$2y$` (PHP/Apache's name) is the same algorithm as `$2b$`.
        return await bcrypt.compare(password, hash.replace(/^\$2y\$/, '$2b$'));
      } catch {
        return false;
      }
    case 'apr1':
      return equalStrings(apr1Crypt(password, APR1.exec(hash)![1]!), hash);
    case 'sha1': {
      const expected = Buffer.from(SHA1.exec(hash)![1]!, 'base64');
      const actual = createHash('sha1').update(password, 'utf8').digest();
      return expected.length === actual.length && timingSafeEqual(expected, actual);
    }
    case null:
      return false;
  }
}

/**
 * A hash nobody's password matches, costing what checking a real user of this file costs: bcrypt
 * at the file's highest cost when it has bcrypt entries, else `$apr1$`, else `{SHA}`.
 */
function dummyHash(users: Map<string, string>): string {
  let cost = 0;
  const kinds = new Set<HashKind>();
  for (const hash of users.values()) {
    const kind = hashKind(hash);
    if (kind === null) continue;
    kinds.add(kind);
    if (kind === 'bcrypt') cost = Math.max(cost, Number(hash.slice(4, 6)));
  }
  if (cost > 0 || kinds.size === 0) {
    const salt = ITOA64.slice(10, 31) + '.';
    return `$2b$${String(cost || 5).padStart(2, '0')}$${salt}${'x'.repeat(31)}`;
  }
  if (kinds.has('apr1')) return apr1Crypt(randomBytes(16).toString('hex'), 'dummysal');
  return `{SHA}${createHash('sha1').update(randomBytes(16)).digest('base64')}`;
}

interface Loaded {
  users: Map<string, string>;
  dummy: string;
  /** Device, inode, size, mtime and ctime of the file as read (for reloadOnChange). */
  signature: string;
}

async function signatureOf(path: string): Promise<string> {
  try {
    const s = await stat(path, { bigint: true });
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  } catch (error) {
    throw new Error(`cannot read auth file ${path}: ${(error as Error).message}`);
  }
}

async function load(path: string): Promise<Loaded> {
  const signature = await signatureOf(path);
  const users = await loadHtpasswd(path);
  return { users, dummy: dummyHash(users), signature };
}

export interface HtpasswdOptions {
  /**
   * Check the file's inode, size and times before each authentication and re-read it when they
   * changed. While a changed file cannot be read or parsed, authentications fail (454, logged by
   * the server) rather than trust the old contents.
   */
  reloadOnChange?: boolean;
}

export type HtpasswdAuthenticator = Authenticator & {
  /** Re-reads the file. On failure the old contents stay in use and the promise rejects. */
  reload(): Promise<void>;
};

/**
 * An authenticator for PLAIN and LOGIN checking an htpasswd file, read on first use and cached.
 * Success gives `{ success: true, authData: login }`; wrong passwords, unknown users, unsupported
 * hashes and a PLAIN authzid other than the login give `{ success: false }`, after the same work
 * (an unknown user is checked against a dummy hash, so timing does not reveal who exists).
 * CRAM-MD5 gives false: the file holds hashes, not the clear passwords CRAM-MD5 needs.
 * If the file cannot be read the authenticator throws (the server answers 454).
 */
export function htpasswdAuthenticator(path: string, options: HtpasswdOptions = {}): HtpasswdAuthenticator {
  let current: Loaded | null = null;
  let pending: Promise<Loaded> | null = null;
  // Loads may overlap (reload() during a first use): the newest one started wins.
  let started = 0;
  let applied = 0;

  const fresh = async (): Promise<Loaded> => {
    const mine = ++started;
    const loaded = await load(path);
    if (mine > applied) {
      applied = mine;
      current = loaded;
    }
    return current!;
  };
  const shared = (): Promise<Loaded> => {
    pending ??= fresh().finally(() => {
      pending = null;
    });
    return pending;
  };

  const get = async (): Promise<Loaded> => {
    if (current === null) return shared();
    // Fail closed: if the changed file is bad, this throws and the old contents are not used.
    if (options.reloadOnChange === true && (await signatureOf(path)) !== current.signature) return shared();
    return current;
  };

  const authenticate: Authenticator = async (_server, _session, _envelope, _mechanism, data) => {
    if (data.mechanism !== 'PLAIN' && data.mechanism !== 'LOGIN') return false;
    const { users, dummy } = await get();
    const hash = users.get(data.login);
    const known = hash !== undefined && hashKind(hash) !== null;
    const ok = await verifyPassword(data.password, known ? hash : dummy);
    // RFC 4616: without an authorization policy, a user may only act as itself.
    const authzOk = data.authzid === undefined || data.authzid === data.login;
    return known && ok && authzOk ? { success: true, authData: data.login } : { success: false };
  };

  return Object.assign(authenticate, {
    async reload(): Promise<void> {
      await fresh();
    },
  });
}
