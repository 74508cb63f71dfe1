/**
 * A `-c Sink` server, and `import 'tsmtpd'`, do not load what they do not use: mailauth
 * (--auth-results, withAuthResults) and the NATS client (-c JetStream) cost ~350 ms CPU and ~25 MiB
 * at start. A resolve hook in the child lists every module it loads.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { CliProcess } from './cli-util.js';

const HOOK = `import { register } from 'node:module';
register('data:text/javascript,' + encodeURIComponent(
  "export async function resolve(s, c, n) { const r = await n(s, c); process.stderr.write('LOADED ' + r.url + '\\\\n'); return r; }"));
`;

async function loadedBy(args: string[]): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), 'tsmtpd-lazy-'));
  const hook = join(dir, 'hook.mjs');
  await writeFile(hook, HOOK);
  const p = new CliProcess(args, { env: { ...process.env, NODE_OPTIONS: `--import ${pathToFileURL(hook).href}` } });
  try {
    await p.listening(20000);
    return [...p.stderr.matchAll(/^LOADED (\S+)$/gm)].map((m) => m[1]!);
  } finally {
    await p.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

test('-c Sink loads neither mailauth nor the NATS client nor the other built-ins', async () => {
  const loaded = await loadedBy(['-n', '-c', 'Sink', '-l', '127.0.0.1:0']);
  assert.ok(loaded.some((url) => url.endsWith('/dist/handlers/sink.js')), `the hook saw the modules: ${loaded.length}`);
  const heavy = loaded.filter((url) => /\/node_modules\/(?:mailauth|@nats-io)\/|\/dist\/handlers\/(?:jetstream|proxy|debugging)\.js$|\/dist\/authres\//.test(url));
  assert.deepEqual(heavy, []);
});

test('import of the package loads neither mailauth nor the NATS client until they are used', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tsmtpd-lazy-'));
  try {
    const hook = join(dir, 'hook.mjs');
    await writeFile(hook, HOOK);
    const index = pathToFileURL(join(fileURLToPath(new URL('.', import.meta.url)), '../../dist/index.js')).href;
    const code = `const t = await import(${JSON.stringify(index)}); if (typeof t.withAuthResults !== 'function' || typeof t.JetStream !== 'function') process.exit(3);`;
    const { stderr } = await promisify(execFile)(process.execPath, ['--import', pathToFileURL(hook).href, '--input-type=module', '-e', code], { timeout: 30_000 });
    const loaded = [...stderr.matchAll(/^LOADED (\S+)$/gm)].map((m) => m[1]!);
    assert.ok(loaded.some((url) => url.endsWith('/dist/index.js')), `the hook saw the modules: ${loaded.length}`);
    assert.deepEqual(loaded.filter((url) => /\/node_modules\/(?:mailauth|@nats-io)\//.test(url)), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
