/**
 * Every ```js and ```ts block of README.md and docs/*.md runs, so the examples cannot rot.
 * Blocks are written inside the repository (build/readme-examples/) so that `from 'tsmtpd'`
 * resolves to this package itself (package.json self-reference → dist/). TypeScript blocks are
 * type-checked with the repository's compiler options and then transpiled and run.
 * A block preceded by `<!-- not-tested -->` on the line right before its fence is skipped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { basename, join, relative } from 'node:path';
import ts from 'typescript';
import { ROOT } from './cli-util.js';

const OUT = join(ROOT, 'build', 'readme-examples');
const RUN_TIMEOUT_MS = 15_000;

interface Block {
  file: string; // relative to ROOT
  line: number; // 1-based line of the opening fence
  lang: 'js' | 'ts';
  code: string;
  skipped: boolean;
}

const LANGS: Record<string, 'js' | 'ts'> = {
  js: 'js',
  javascript: 'js',
  mjs: 'js',
  ts: 'ts',
  typescript: 'ts',
  mts: 'ts',
};

export function extractBlocks(path: string): Block[] {
  const lines = readFileSync(path, 'utf8').split(/\r?\n/);
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([\w+-]*)/.exec(lines[i]!);
    if (open === null) continue;
    const [, indent, fence, info] = open;
    const body: string[] = [];
    let j = i + 1;
    const close = new RegExp(`^\\s*${fence![0] === '`' ? '`' : '~'}{${fence!.length},}\\s*$`);
    for (; j < lines.length && !close.test(lines[j]!); j++) body.push(lines[j]!.slice(indent!.length));
    const lang = LANGS[info!.toLowerCase()];
    if (lang !== undefined) {
      const before = i > 0 ? lines[i - 1]!.trim() : '';
      blocks.push({
        file: relative(ROOT, path),
        line: i + 1,
        lang,
        code: body.join('\n') + '\n',
        skipped: /^<!--\s*not-tested\s*-->$/.test(before),
      });
    }
    i = j; // continue after the closing fence
  }
  return blocks;
}

function markdownFiles(): string[] {
  const files = [join(ROOT, 'README.md')];
  const docs = join(ROOT, 'docs');
  if (existsSync(docs)) {
    for (const name of readdirSync(docs).sort()) if (name.endsWith('.md')) files.push(join(docs, name));
  }
  return files;
}

function stem(block: Block): string {
  return `${block.file.replace(/[^\w.-]+/g, '_').replace(/\.md$/, '')}-L${block.line}`;
}

function run(file: string): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string; timedOut: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [file], { cwd: OUT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (t: string) => (stdout += t));
    child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, RUN_TIMEOUT_MS);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

const blocks = markdownFiles().flatMap(extractBlocks);

/** Type-checks files with the repository's compiler options (strict, NodeNext); errors by file. */
function checkFiles(files: string[]): Map<string, string[]> {
  const config = ts.readConfigFile(join(ROOT, 'tsconfig.json'), ts.sys.readFile);
  assert.equal(config.error, undefined);
  const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, ROOT);
  const options: ts.CompilerOptions = {
    ...parsed.options,
    strict: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    noEmit: true,
    declaration: false,
    sourceMap: false,
    rootDir: OUT,
    outDir: undefined,
  };
  const program = ts.createProgram(files, options);
  const byFile = new Map<string, string[]>(files.map((f) => [f, []]));
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(d.messageText, '\n');
    const where = d.file ? d.file.fileName : '(global)';
    const target = byFile.get(where);
    const pos =
      d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : { line: -1, character: -1 };
    const text = `TS${d.code} at block line ${pos.line + 1}:${pos.character + 1}: ${message}`;
    if (target !== undefined) target.push(text);
    else for (const list of byFile.values()) list.push(`${where}: ${text}`); // global errors fail every block
  }
  return byFile;
}

/** One type-check program over every ```ts block. */
let typeCheck: Promise<Map<string, string[]>> | null = null;
function typeCheckAll(): Promise<Map<string, string[]>> {
  typeCheck ??= (async () => {
    const tsBlocks = blocks.filter((b) => b.lang === 'ts' && !b.skipped);
    const files = tsBlocks.map((b) => join(OUT, `${stem(b)}.ts`));
    await Promise.all(tsBlocks.map((b, i) => writeFile(files[i]!, b.code)));
    return checkFiles(files);
  })();
  return typeCheck;
}

test('README.md has code blocks to test', () => {
  assert.ok(blocks.some((b) => b.file === 'README.md' && b.lang === 'js'), 'no ```js block found in README.md');
  assert.ok(blocks.some((b) => b.file === 'README.md' && b.lang === 'ts'), 'no ```ts block found in README.md');
});

test('the block extractor', () => {
  const sample = join(OUT, 'extractor-sample.md');
  return (async () => {
    await mkdir(OUT, { recursive: true });
    await writeFile(
      sample,
      ['# t', '```js', 'a();', '```', '```sh', 'x', '```', '<!-- not-tested -->', '```ts', 'b();', '```', '```', 'c', '```'].join('\n'),
    );
    const found = extractBlocks(sample);
    assert.deepEqual(
      found.map((b) => [b.line, b.lang, b.code, b.skipped]),
      [
        [2, 'js', 'a();\n', false],
        [9, 'ts', 'b();\n', true],
      ],
    );
    await rm(sample);
  })();
});

test('the type check is live: it reports errors against the package types', async () => {
  await mkdir(OUT, { recursive: true });
  const bad = join(OUT, 'typecheck-sample.ts');
  await writeFile(
    bad,
    [
      "import { Controller, type Handler } from 'tsmtpd';",
      'class H implements Handler {',
      '  handleDATA(): number { return 250; }',
      '}',
      'await using c = new Controller(new H());',
      "const port: number = c.hostname ?? 'x';",
      '',
    ].join('\n'),
  );
  try {
    const errors = checkFiles([bad]).get(bad)!;
    assert.ok(errors.some((e) => e.startsWith('TS2416')), errors.join('\n')); // handleDATA's return type
    assert.ok(errors.some((e) => e.startsWith('TS2322')), errors.join('\n')); // string into number
    assert.ok(!errors.some((e) => e.startsWith('TS2307')), `'tsmtpd' did not resolve: ${errors.join('\n')}`);
  } finally {
    await rm(bad, { force: true });
  }
});

await mkdir(OUT, { recursive: true });

for (const block of blocks) {
  const name = `${block.file}:${block.line} (${block.lang})`;
  test(name, { skip: block.skipped ? 'marked <!-- not-tested -->' : false }, async () => {
    const base = stem(block);
    const mjs = join(OUT, `${base}.mjs`);
    if (block.lang === 'ts') {
      const diagnostics = (await typeCheckAll()).get(join(OUT, `${base}.ts`)) ?? [];
      assert.deepEqual(diagnostics, [], `type errors in ${name}:\n${diagnostics.join('\n')}`);
      const out = ts.transpileModule(block.code, {
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
        fileName: `${base}.ts`,
        reportDiagnostics: true,
      });
      assert.deepEqual(out.diagnostics ?? [], []);
      await writeFile(mjs, out.outputText);
    } else {
      await writeFile(mjs, block.code);
    }
    const r = await run(mjs);
    assert.equal(r.timedOut, false, `${name} did not finish within ${RUN_TIMEOUT_MS} ms; stderr: ${r.stderr}`);
    assert.equal(r.code, 0, `${name} (${basename(mjs)}) exited ${r.code ?? r.signal}; stderr:\n${r.stderr}\nstdout:\n${r.stdout}`);
  });
}
