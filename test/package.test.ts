/**
 * The package as npm users get it. `npm pack` runs on a copy of the repository (its prepack and
 * postpack run, the working tree that other tests read is left alone); the tarball is installed
 * into fresh projects (dependencies from npm's cache, the registry only for what it lacks) and
 * used from ES modules, CommonJS, strict TypeScript against the shipped .d.ts, and through its bin.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './cli-util.js';

const STEP_TIMEOUT_MS = 120_000;
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * npm and node children get no npm_* variables: `npm test` sets npm_config_local_prefix and
 * others to this repository, and a child npm would then pack or install here instead.
 */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^npm_/i.test(key)));
}

function run(command: string, args: string[], cwd: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (t: string) => (stdout += t));
    child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
    const timer = setTimeout(() => child.kill('SIGKILL'), STEP_TIMEOUT_MS);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function ok(command: string, args: string[], cwd: string): Promise<Run> {
  const r = await run(command, args, cwd);
  assert.equal(r.code, 0, `${command} ${args.join(' ')} in ${cwd} exited ${r.code}\nstderr:\n${r.stderr}\nstdout:\n${r.stdout}`);
  return r;
}

/** The fenced blocks of one language in a markdown file, in order. */
function fenced(file: string, lang: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  return [...text.matchAll(new RegExp('^```' + lang + '\\n([\\s\\S]*?)^```$', 'gm'))].map((m) => m[1]!);
}

const work = mkdtempSync(join(tmpdir(), 'tsmtpd-package-'));
const esm = join(work, 'esm');
const cjs = join(work, 'cjs');
let tarball = '';
let packedFiles: string[] = [];
let installWarnings: string[] = [];

after(() => rmSync(work, { recursive: true, force: true }));

before(
  async () => {
    const repo = join(work, 'repo');
    mkdirSync(repo);
    for (const name of ['package.json', 'tsconfig.json', 'README.md', 'LICENSE', 'src', 'docs', 'scripts']) {
      cpSync(join(ROOT, name), join(repo, name), { recursive: true });
    }
    symlinkSync(join(ROOT, 'node_modules'), join(repo, 'node_modules'));
    const manifest = readFileSync(join(repo, 'package.json'), 'utf8');
    const packed = await ok('npm', ['pack', '--json', '--pack-destination', work], repo);
    const info = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as Array<{ filename: string; files: Array<{ path: string }> }>;
    tarball = join(work, info[0]!.filename);
    packedFiles = info[0]!.files.map((f) => f.path).sort();
    assert.equal(readFileSync(join(repo, 'package.json'), 'utf8'), manifest, 'postpack did not restore package.json');
    assert.ok(!existsSync(join(repo, 'package.json.prepack')));

    mkdirSync(esm);
    writeFileSync(join(esm, 'package.json'), JSON.stringify({ name: 'esm-user', version: '1.0.0', private: true, type: 'module' }));
    mkdirSync(cjs);
    await ok('npm', ['init', '-y'], cjs);
    for (const project of [esm, cjs]) {
      const r = await ok('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], project);
      installWarnings.push(...`${r.stdout}\n${r.stderr}`.split('\n').filter((l) => /warn/i.test(l)));
    }
  },
  { timeout: 4 * STEP_TIMEOUT_MS },
);

test('the tarball holds the build, docs, README, LICENSE; no sources, tests or source maps', () => {
  for (const path of ['LICENSE', 'README.md', 'package.json', 'dist/index.js', 'dist/index.d.ts', 'dist/cli.js', 'docs/intro.md', 'docs/typescript.md']) {
    assert.ok(packedFiles.includes(path), `${path} missing from ${packedFiles.join(' ')}`);
  }
  const unwanted = packedFiles.filter((p) => p.endsWith('.map') || /^(src|test|build|scripts)\//.test(p) || p.endsWith('.tgz'));
  assert.deepEqual(unwanted, []);
});

test('every README link into the package points at a file the package ships', () => {
  const links = [...readFileSync(join(ROOT, 'README.md'), 'utf8').matchAll(/\]\(((?:docs\/)[^)#\s]+)/g)].map((m) => m[1]!);
  assert.ok(links.length > 0, 'no docs/ link found in README.md');
  for (const link of links) assert.ok(packedFiles.includes(link), `README links to ${link}, which is not packed`);
});

test('the packed package.json has no install scripts and installing it warns about none', () => {
  const manifest = JSON.parse(readFileSync(join(esm, 'node_modules', 'tsmtpd', 'package.json'), 'utf8')) as {
    scripts?: Record<string, string>;
    engines?: { node?: string };
  };
  for (const script of ['preinstall', 'install', 'postinstall', 'prepare']) {
    assert.equal(manifest.scripts?.[script], undefined, `packed package.json has a ${script} script`);
  }
  assert.equal(manifest.engines?.node, '^20.19.0 || >=22.12.0');
  assert.deepEqual(installWarnings.filter((l) => /script/i.test(l)), []);
});

test('import from an ES module project', async () => {
  writeFileSync(
    join(esm, 'main.js'),
    [
      "import { Controller, Sink, VERSION } from 'tsmtpd';",
      "const controller = new Controller(new Sink(), { hostname: '127.0.0.1', port: 0 });",
      'await controller.start();',
      "console.log('tsmtpd %s port %d', VERSION, controller.port);",
      'await controller.stop();',
      '',
    ].join('\n'),
  );
  const r = await ok(process.execPath, ['main.js'], esm);
  assert.match(r.stdout, /^tsmtpd \S+ port \d+\n$/);
  assert.equal(r.stderr, '');
});

test("require('tsmtpd') from an `npm init -y` CommonJS project (docs/typescript.md's example)", async () => {
  const made = JSON.parse(readFileSync(join(cjs, 'package.json'), 'utf8')) as { type?: string };
  assert.notEqual(made.type, 'module');
  const [example] = fenced('docs/typescript.md', 'cjs');
  assert.ok(example !== undefined, 'no ```cjs block in docs/typescript.md');
  writeFileSync(join(cjs, 'index.js'), example);
  const r = await ok(process.execPath, ['index.js'], cjs);
  assert.match(r.stdout, /^listening on port \d+\n$/);
  assert.equal(r.stderr, '', 'require(esm) printed a warning');
});

test("docs/typescript.md's examples compile with its tsconfig against the .d.ts only, and run", async () => {
  const [tsconfig] = fenced('docs/typescript.md', 'json');
  assert.ok(tsconfig !== undefined, 'no ```json tsconfig in docs/typescript.md');
  const examples = fenced('docs/typescript.md', 'ts');
  assert.ok(examples.length >= 2, 'docs/typescript.md has fewer ts examples than expected');
  const installed = join(esm, 'node_modules', 'tsmtpd');
  const shipped = readdirSync(installed, { recursive: true, encoding: 'utf8' });
  assert.deepEqual(shipped.filter((f) => /(?<!\.d)\.ts$|\.map$/.test(f)), [], 'sources or maps were shipped');
  // Node's types, as a user's `npm install -D @types/node` provides them.
  mkdirSync(join(esm, 'node_modules', '@types'), { recursive: true });
  symlinkSync(join(ROOT, 'node_modules', '@types', 'node'), join(esm, 'node_modules', '@types', 'node'));
  const dir = join(esm, 'ts');
  mkdirSync(dir);
  writeFileSync(join(dir, 'tsconfig.json'), tsconfig);
  examples.forEach((code, i) => writeFileSync(join(dir, `example-${i}.ts`), code));
  // Strict mode really reports what the docs say: `implements` leaves parameters untyped.
  writeFileSync(
    join(dir, 'untyped.ts'),
    "import type { Handler } from 'tsmtpd';\nexport class H implements Handler { handleDATA(server, session, envelope) { return '250 OK'; } }\n",
  );
  const failing = await run(process.execPath, [TSC, '-p', dir], dir);
  assert.equal((failing.stdout.match(/untyped\.ts\(\d+,\d+\): error TS7006/g) ?? []).length, 3, failing.stdout);
  rmSync(join(dir, 'untyped.ts'));
  await ok(process.execPath, [TSC, '-p', dir], dir);
  for (let i = 0; i < examples.length; i++) {
    const r = await ok(process.execPath, [join(dir, `example-${i}.js`)], dir);
    assert.equal(r.stderr, '', `example ${i} wrote to stderr`);
  }
});

test('npx tsmtpd --help in the installed project', async () => {
  const r = await ok('npx', ['tsmtpd', '--help'], cjs);
  assert.match(r.stdout, /^usage: tsmtpd /);
});
