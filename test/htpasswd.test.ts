import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import type { AuthData } from '../src/auth.js';
import {
  apr1Crypt,
  hashKind,
  htpasswdAuthenticator,
  loadHtpasswd,
  parseHtpasswd,
  verifyPassword,
  type HtpasswdAuthenticator,
} from '../src/htpasswd.js';

const has = (tool: string): boolean => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
const HTPASSWD = has('htpasswd');
const OPENSSL = has('openssl');

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} failed: ${r.stderr}`);
  return r.stdout.trim();
}
/** `htpasswd -nb<flags> user password` → the hash. */
function htpasswdHash(flags: string[], password: string): string {
  const line = run('htpasswd', ['-nb', ...flags, 'u', password]);
  return line.slice(line.indexOf(':') + 1);
}

/** bcrypt as `htpasswd -B` writes it (`$2y$`), with or without htpasswd. */
function bcryptHash(password: string, cost = 4): string {
  if (HTPASSWD) return htpasswdHash(['-B', '-C', String(cost)], password);
  return bcrypt.hashSync(password, cost).replace(/^\$2b\$/, '$2y$');
}
function apr1Hash(password: string): string {
  if (HTPASSWD) return htpasswdHash(['-m'], password);
  if (OPENSSL) return run('openssl', ['passwd', '-apr1', password]);
  return apr1Crypt(password, randomBytes(6).toString('base64').replace(/\+/g, '.'));
}
const shaHash = (password: string): string => `{SHA}${createHash('sha1').update(password, 'utf8').digest('base64')}`;

/** Computed once with `openssl passwd -apr1 -salt SALT PASSWORD`. */
const APR1_VECTORS: [password: string, hash: string][] = [
  ['', '$apr1$x.Y/z9$7Gdh4gj3DG5NERYpay5e7.'],
  ['a', '$apr1$x.Y/z9$PUE8LoHeJdJxw6tdORGVQ1'],
  ['passwordpassword', '$apr1$x.Y/z9$JPsFSdG1gBHtda1v9plcy0'],
  ['this is a rather long password, 40 bytes', '$apr1$x.Y/z9$ilsxGbGDQ3BoK0Rp8ryo21'],
  ['pässwörd€', '$apr1$x.Y/z9$hvihZku.s1SinDuwohBhR.'],
  ['hello world', '$apr1$abcdefgh$CZx3qOBL3IJw7t4yUwt4J.'],
];

const plain = (login: string, password: string, authzid?: string): AuthData =>
  authzid === undefined ? { mechanism: 'PLAIN', login, password } : { mechanism: 'PLAIN', login, password, authzid };
const loginData = (login: string, password: string): AuthData => ({ mechanism: 'LOGIN', login, password });
const cram = (login: string): AuthData => ({
  mechanism: 'CRAM-MD5',
  login,
  challenge: '<1.2@example.com>',
  digest: '0'.repeat(32),
});
const auth = (a: HtpasswdAuthenticator, data: AuthData) =>
  Promise.resolve(a(null as never, null as never, null as never, data.mechanism, data));

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tsmtpd-htpasswd-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});
let fileCount = 0;
async function file(text: string): Promise<string> {
  const path = join(dir, `users${++fileCount}`);
  await writeFile(path, text);
  return path;
}

describe('apr1Crypt', () => {
  it('matches openssl passwd -apr1 on known vectors', () => {
    for (const [password, hash] of APR1_VECTORS) {
      assert.equal(apr1Crypt(password, hash.split('$')[2]!), hash, JSON.stringify(password));
    }
  });

  it('cuts the salt at 8 characters or a $, and accepts a whole hash as salt', () => {
    assert.equal(apr1Crypt('hello world', 'abcdefghijkl'), '$apr1$abcdefgh$CZx3qOBL3IJw7t4yUwt4J.');
    assert.equal(apr1Crypt('hello world', '$apr1$abcdefgh$whatever'), '$apr1$abcdefgh$CZx3qOBL3IJw7t4yUwt4J.');
  });

  it('agrees with openssl on random passwords', { skip: !OPENSSL && !process.env.CI && 'openssl not installed' }, () => {
    for (let i = 0; i < 5; i++) {
      const password = randomBytes(1 + i * 7).toString('base64');
      const salt = randomBytes(6).toString('base64').replace(/\+/g, '.');
      assert.equal(apr1Crypt(password, salt), run('openssl', ['passwd', '-apr1', '-salt', salt, password]));
    }
  });
});

describe('verifyPassword', () => {
  it('checks bcrypt $2y$ as htpasswd -B writes it', async () => {
    const hash = bcryptHash('s3cret: pässword');
    assert.match(hash, /^\$2y\$04\$/);
    assert.equal(await verifyPassword('s3cret: pässword', hash), true);
    assert.equal(await verifyPassword('s3cret: passwörd', hash), false);
    assert.equal(await verifyPassword('', hash), false);
  });

  it('checks bcrypt $2a$ and $2b$', async () => {
    const b = bcrypt.hashSync('secret', 4);
    assert.match(b, /^\$2b\$/);
    const a = b.replace(/^\$2b\$/, '$2a$');
    for (const hash of [a, b]) {
      assert.equal(await verifyPassword('secret', hash), true, hash.slice(0, 4));
      assert.equal(await verifyPassword('Secret', hash), false, hash.slice(0, 4));
    }
  });

  it('checks $apr1$ MD5', async () => {
    const hash = apr1Hash('secret');
    assert.match(hash, /^\$apr1\$/);
    assert.equal(await verifyPassword('secret', hash), true);
    assert.equal(await verifyPassword('secreT', hash), false);
    for (const [password, vector] of APR1_VECTORS) {
      assert.equal(await verifyPassword(password, vector), true);
      assert.equal(await verifyPassword(password + 'x', vector), false);
    }
  });

  it('checks {SHA}', async () => {
    const hash = HTPASSWD ? htpasswdHash(['-s'], 'secret') : shaHash('secret');
    assert.equal(hash, '{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=');
    assert.equal(await verifyPassword('secret', hash), true);
    assert.equal(await verifyPassword('secret ', hash), false);
  });

  it('refuses plain text, DES crypt, SHA-crypt and garbage without throwing', async () => {
    const refused = [
      'secret', // htpasswd -p
      'Z035oLF6nSBXk', // htpasswd -d, crypt(3) DES of "secret"
      '$6$aEEZ/98uOK.jRBq.$c/kYscfVwY47OCKTGBZ0j/GPmd.uZzr.FCOtW5LZ.ZcNmHdIbjG8CMMZBWHEOm1wkZMKMGvuEzRtb6q8KvKKr/',
      '',
      '$2y$05$short',
      '$2y$99$' + 'a'.repeat(53),
      '$apr1$abc',
      '{SHA}not base64!',
      '{SHA}' + Buffer.alloc(19).toString('base64'),
    ];
    for (const hash of refused) {
      assert.equal(await verifyPassword('secret', hash), false, hash);
      assert.equal(hashKind(hash), null, hash);
    }
  });
});

describe('parseHtpasswd', () => {
  it('skips comments and blank lines, tolerates CRLF and white space', () => {
    const text = [
      '\uFEFF# users',
      '',
      'alice:$apr1$x.Y/z9$PUE8LoHeJdJxw6tdORGVQ1',
      '   ',
      '  # indented comment',
      '  bob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=  ',
      'carol:$2y$05$abc:extra:fields',
      'alice:second-alice-ignored',
      '',
    ].join('\r\n');
    assert.deepEqual(
      parseHtpasswd(text),
      new Map([
        ['alice', '$apr1$x.Y/z9$PUE8LoHeJdJxw6tdORGVQ1'],
        ['bob', '{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ='],
        ['carol', '$2y$05$abc'],
      ]),
    );
    assert.equal(parseHtpasswd('').size, 0);
    assert.equal(parseHtpasswd('# only\n\n').size, 0);
  });

  it('throws on a malformed line, naming its number but not its content', () => {
    const secretHash = '$2y$05$SECRETSECRETSECRETSECRETSECRETSECRETSECRETSECRETSECRE';
    for (const [bad, reason] of [
      [`nocolon${secretHash}`, /expected user:hash/],
      [`:${secretHash}`, /user/],
      ['dave:', /hash/],
      [`dave:${secretHash} trailing`, /hash/],
      [`da ve:${secretHash}`, /user/],
    ] as const) {
      const text = `alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\r\n# comment\r\n${bad}\r\n`;
      assert.throws(
        () => parseHtpasswd(text),
        (error: Error) => {
          assert.match(error.message, /^line 3: /);
          assert.match(error.message, reason);
          assert.ok(!error.message.includes('SECRET'), error.message);
          assert.ok(!error.message.includes('5en6G6'), error.message);
          assert.ok(!error.message.includes('nocolon'), error.message);
          return true;
        },
      );
    }
  });
});

describe('loadHtpasswd', () => {
  it('reads a file', async () => {
    const path = await file(`alice:${shaHash('pw')}\n`);
    assert.deepEqual(await loadHtpasswd(path), new Map([['alice', shaHash('pw')]]));
  });

  it('fails with one-line messages naming the file', async () => {
    const missing = join(dir, 'missing');
    await assert.rejects(loadHtpasswd(missing), (error: Error) => {
      assert.ok(error.message.startsWith(`cannot read auth file ${missing}: `), error.message);
      assert.match(error.message, /ENOENT/);
      assert.ok(!error.message.includes('\n'));
      return true;
    });
    const bad = await file(`alice:${shaHash('pw')}\n\nbroken-line-${shaHash('pw')}\n`);
    await assert.rejects(loadHtpasswd(bad), (error: Error) => {
      assert.ok(error.message.startsWith(`bad auth file ${bad} line 3: `), error.message);
      assert.ok(!error.message.includes(shaHash('pw')), error.message);
      assert.ok(!error.message.includes('\n'));
      return true;
    });
  });

  it('reads a file made by htpasswd -B -b -c', { skip: !HTPASSWD && !process.env.CI && 'htpasswd not installed' }, async () => {
    const path = join(dir, 'real-htpasswd');
    run('htpasswd', ['-B', '-b', '-c', path, 'alice', 'wonder land']);
    run('htpasswd', ['-b', path, 'bob', 'builder']); // default: $apr1$
    run('htpasswd', ['-s', '-b', path, 'carol', 'c4r0l']);
    const users = await loadHtpasswd(path);
    assert.match(users.get('alice')!, /^\$2y\$05\$/);
    assert.match(users.get('bob')!, /^\$apr1\$/);
    assert.match(users.get('carol')!, /^\{SHA\}/);
    assert.equal(await verifyPassword('wonder land', users.get('alice')!), true);
    assert.equal(await verifyPassword('wonderland', users.get('alice')!), false);
    const a = htpasswdAuthenticator(path);
    assert.deepEqual(await auth(a, plain('alice', 'wonder land')), { success: true, authData: 'alice' });
    assert.deepEqual(await auth(a, loginData('bob', 'builder')), { success: true, authData: 'bob' });
    assert.deepEqual(await auth(a, plain('carol', 'c4r0l')), { success: true, authData: 'carol' });
    assert.deepEqual(await auth(a, plain('bob', 'wonder land')), { success: false });
  });
});

describe('htpasswdAuthenticator', () => {
  const users = async (): Promise<string> =>
    file(
      [
        '# test users',
        `alice:${bcryptHash('alice pw')}`,
        `bob:${apr1Hash('bob pw')}`,
        `carol:${shaHash('carol pw')}`,
        'plain:plainpw',
        '',
      ].join('\n'),
    );

  it('accepts the right password on PLAIN and LOGIN, for every hash kind', async () => {
    const a = htpasswdAuthenticator(await users());
    for (const name of ['alice', 'bob', 'carol']) {
      assert.deepEqual(await auth(a, plain(name, `${name} pw`)), { success: true, authData: name });
      assert.deepEqual(await auth(a, loginData(name, `${name} pw`)), { success: true, authData: name });
    }
  });

  it('refuses wrong passwords, unknown users, plain-text entries and other users’ passwords', async () => {
    const a = htpasswdAuthenticator(await users());
    assert.deepEqual(await auth(a, plain('alice', 'bob pw')), { success: false });
    assert.deepEqual(await auth(a, loginData('bob', 'alice pw')), { success: false });
    assert.deepEqual(await auth(a, plain('carol', 'Carol pw')), { success: false });
    assert.deepEqual(await auth(a, plain('Alice', 'alice pw')), { success: false });
    assert.deepEqual(await auth(a, plain('mallory', 'alice pw')), { success: false });
    assert.deepEqual(await auth(a, loginData('mallory', 'x')), { success: false });
    assert.deepEqual(await auth(a, plain('plain', 'plainpw')), { success: false });
  });

  it('honours a PLAIN authzid only when it is the login itself', async () => {
    const a = htpasswdAuthenticator(await users());
    assert.deepEqual(await auth(a, plain('alice', 'alice pw', 'alice')), { success: true, authData: 'alice' });
    assert.deepEqual(await auth(a, plain('alice', 'alice pw', 'bob')), { success: false });
  });

  it('fails CRAM-MD5: the file has no clear passwords', async () => {
    const a = htpasswdAuthenticator(await users());
    assert.equal(await auth(a, cram('alice')), false);
    assert.equal(await auth(a, cram('mallory')), false);
  });

  it('reads the file on first use, and throws a clear error while it cannot', async () => {
    const path = join(dir, 'later');
    const a = htpasswdAuthenticator(path);
    await assert.rejects(auth(a, plain('alice', 'the password')), (error: Error) => {
      assert.ok(error.message.startsWith(`cannot read auth file ${path}: `), error.message);
      assert.ok(!error.message.includes('the password'));
      return true;
    });
    await writeFile(path, `alice:${shaHash('the password')}\n`);
    assert.deepEqual(await auth(a, plain('alice', 'the password')), { success: true, authData: 'alice' });
  });

  it('caches the file until reload()', async () => {
    const path = await file(`alice:${shaHash('old')}\n`);
    const a = htpasswdAuthenticator(path);
    assert.deepEqual(await auth(a, plain('alice', 'old')), { success: true, authData: 'alice' });
    await writeFile(path, `alice:${bcryptHash('new password')}\nbob:${shaHash('bob')}\n`);
    assert.deepEqual(await auth(a, plain('alice', 'old')), { success: true, authData: 'alice' });
    assert.deepEqual(await auth(a, plain('bob', 'bob')), { success: false });
    await a.reload();
    assert.deepEqual(await auth(a, plain('alice', 'old')), { success: false });
    assert.deepEqual(await auth(a, plain('alice', 'new password')), { success: true, authData: 'alice' });
    assert.deepEqual(await auth(a, plain('bob', 'bob')), { success: true, authData: 'bob' });
    // A failed reload rejects and keeps the contents in use.
    await writeFile(path, 'broken\n');
    await assert.rejects(a.reload(), /^Error: bad auth file .* line 1: /);
    assert.deepEqual(await auth(a, plain('bob', 'bob')), { success: true, authData: 'bob' });
  });

  it('with reloadOnChange, picks up a changed file and fails closed while it is broken', async () => {
    const path = await file(`alice:${shaHash('old')}\n`);
    const a = htpasswdAuthenticator(path, { reloadOnChange: true });
    assert.deepEqual(await auth(a, plain('alice', 'old')), { success: true, authData: 'alice' });
    await writeFile(path, `alice:${apr1Hash('new password')}\n`);
    assert.deepEqual(await auth(a, plain('alice', 'old')), { success: false });
    assert.deepEqual(await auth(a, plain('alice', 'new password')), { success: true, authData: 'alice' });
    await writeFile(path, `# being edited\nalice ${apr1Hash('new password')}\n`);
    await assert.rejects(auth(a, plain('alice', 'new password')), /bad auth file .* line 2/);
    await writeFile(path, `alice:${shaHash('fixed')}\n`);
    assert.deepEqual(await auth(a, plain('alice', 'fixed')), { success: true, authData: 'alice' });
    await rm(path);
    await assert.rejects(auth(a, plain('alice', 'fixed')), /cannot read auth file/);
  });

  it('spends comparable time on unknown users (a dummy bcrypt at the file’s cost)', async () => {
    const path = await file(`alice:${bcryptHash('alice pw', 6)}\n`);
    const a = htpasswdAuthenticator(path);
    await auth(a, plain('alice', 'warm up'));
    // CPU time of this process, not wall time: the bcrypt work is what counts, and a busy machine
    // (the suite runs files in parallel) stretches wall time of either side at random.
    const fastest = async (data: AuthData): Promise<number> => {
      let best = Infinity;
      for (let i = 0; i < 5; i++) {
        const start = process.cpuUsage();
        assert.deepEqual(await auth(a, data), { success: false });
        const used = process.cpuUsage(start);
        best = Math.min(best, used.user + used.system);
      }
      return best;
    };
    const known = await fastest(plain('alice', 'wrong'));
    const unknown = await fastest(plain('mallory', 'wrong'));
    assert.ok(unknown > known * 0.3, `unknown user ${unknown} µs vs known user ${known} µs of CPU`);
  });
});
