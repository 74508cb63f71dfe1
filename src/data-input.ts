/**
 * A DATA body as it arrives (RFC 5321 §4.1.1.4): the reader that finds its end and unstuffs it,
 * and beside it the watch on its longest line (§4.5.3.1.6). When a body has both a line too long
 * and too many octets, the limit crossed first decides, as aiosmtpd's does: so the line watch
 * stops the reader at the first octet past the line limit, to see whether the size went first.
 */
import { DataReader, type DataReaderOptions } from './framing.js';
import { LineLengthWatch } from './line-limit.js';

export class DataInput {
  readonly #reader: DataReader;
  readonly #lineWatch: LineLengthWatch | null;
  /** The line limit was crossed before the size limit. */
  lineTooLong = false;

  constructor(options: DataReaderOptions, lineLimit: number) {
    this.#reader = new DataReader(options);
    this.#lineWatch = lineLimit > 0 ? new LineLengthWatch(lineLimit) : null;
  }

  get size(): number {
    return this.#reader.size;
  }

  get overflowed(): boolean {
    return this.#reader.overflowed;
  }

  content(): Buffer {
    return this.#reader.content();
  }

  /** Returns null while the body goes on; then the bytes that followed its end (possibly none). */
  push(chunk: Buffer): Buffer | null {
    const reader = this.#reader;
    const past = this.#lineWatch?.see(chunk) ?? -1;
    if (past < 0) return reader.push(chunk);
    const head = reader.push(chunk.subarray(0, past));
    if (head !== null) return Buffer.concat([head, chunk.subarray(past)]); // the body ended first: no long line in it
    if (!reader.overflowed) this.lineTooLong = true;
    return reader.push(chunk.subarray(past));
  }
}
