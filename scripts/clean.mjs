// Removes build outputs before a build, so a file deleted from src/ or test/ leaves no stale
// .js or .d.ts behind (a stale test would still run; a stale .d.ts would still ship).
import { rmSync } from 'node:fs';

for (const dir of process.argv.slice(2)) rmSync(dir, { recursive: true, force: true });
