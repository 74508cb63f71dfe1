#!/usr/bin/env node
/**
 * npm's prepack/postpack for tsmtpd. `prepare` builds dist/ when the repository itself is
 * installed (`npm install && npm start`), but in a published package.json npm counts it as an
 * install script, and installing the tarball warns "install scripts not yet covered by
 * allowScripts". So prepack makes a clean build (no stale files, no source maps) and takes
 * `prepare` out of package.json for the tarball; postpack puts the original file back.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';

const MANIFEST = 'package.json';
const SAVED = 'package.json.prepack';

/** Replaces a file by rename, so that a concurrent reader never sees it half-written. */
function replace(path, text) {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

const step = process.argv[2];
if (step === 'prepack') {
  rmSync('dist', { recursive: true, force: true });
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });
  const original = readFileSync(MANIFEST, 'utf8');
  // A pack interrupted before postpack left the original here: keep it, never the stripped copy.
  if (!existsSync(SAVED)) writeFileSync(SAVED, original);
  const manifest = JSON.parse(original);
  delete manifest.scripts.prepare;
  replace(MANIFEST, JSON.stringify(manifest, null, 2) + '\n');
} else if (step === 'postpack') {
  if (existsSync(SAVED)) {
    replace(MANIFEST, readFileSync(SAVED, 'utf8'));
    rmSync(SAVED);
  }
} else {
  console.error('usage: node scripts/pack.mjs prepack|postpack');
  process.exit(2);
}
