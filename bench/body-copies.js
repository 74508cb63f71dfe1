// Copies per body byte on the buffered DATA path: a body of SIZES MiB (default 1 10 30), fed to
// DataReader in 64 KiB socket-sized reads, counting every byte Buffer#copy and Buffer.concat move.
//   node bench/body-copies.js                measures dist/
//   TSMTPD_DIST=/tmp/old-dist node bench/body-copies.js   measures another build (e.g. main's)
// DOTS=1 makes every 20th line dot-stuffed (each such line splits the body into another segment).
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const DIST = path.resolve(process.env.TSMTPD_DIST ?? new URL('../dist', import.meta.url).pathname);
const { DataReader } = await import(pathToFileURL(path.join(DIST, 'framing.js')).href);
const sizes = (process.env.SIZES ?? '1 10 30').split(/\s+/).filter(Boolean).map(Number);
const READ = 65_536;

function makeBody(size, dots) {
  const line = Buffer.from('x'.repeat(76) + '\r\n');
  const stuffed = Buffer.from('..' + 'x'.repeat(74) + '\r\n');
  const out = Buffer.alloc(size + 5);
  let off = 0;
  for (let n = 0; off < size; n++) off += (dots && n % 20 === 19 ? stuffed : line).copy(out, off, 0, Math.min(78, size - off));
  out.write('\r\n.\r\n', size);
  return out.subarray(0, size + 5);
}

let moved = 0;
const copy = Buffer.prototype.copy;
const concat = Buffer.concat;
Buffer.prototype.copy = function (target, targetStart, sourceStart = 0, sourceEnd = this.length) {
  const n = copy.call(this, target, targetStart, sourceStart, sourceEnd);
  moved += n;
  return n;
};
Buffer.concat = function (list, total) {
  const out = concat.call(Buffer, list, total);
  moved += out.length;
  return out;
};

console.log(`body copies per byte (${DIST}${process.env.DOTS ? ', every 20th line dot-stuffed' : ''})`);
for (const mib of sizes) {
  const input = makeBody(mib * 1024 * 1024, process.env.DOTS === '1');
  // Every read gets its own ArrayBuffer, as a socket's do.
  const reads = [];
  for (let off = 0; off < input.length; off += READ) reads.push(Buffer.from(input.subarray(off, off + READ)));
  const reader = new DataReader({ sizeLimit: 0 });
  moved = 0;
  let rest = null;
  for (const r of reads) if ((rest = reader.push(r)) !== null) break;
  const content = reader.content();
  if (rest === null) throw new Error('terminator not found');
  console.log(`  ${String(mib).padStart(3)} MiB: ${(moved / content.length).toFixed(2)} copies per byte (${content.length} bytes kept)`);
}
Buffer.prototype.copy = copy;
Buffer.concat = concat;
