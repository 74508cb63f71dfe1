/**
 * Pure byte framing over Buffers: command lines, and the DATA body (RFC 5321 §4.1.1.4, §4.5.2).
 * No sockets, no timers: the engine pushes what arrived and takes out what is complete.
 */

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const CRLF_DOT = Buffer.from('\r\n.');
const EMPTY = Buffer.alloc(0);
const CR_BUF = Buffer.from('\r');

/** A command line that exceeded the buffer limit; its bytes were dropped up to its LF. */
export const LINE_TOO_LONG = Symbol('line too long');
/** A line that ended with a bare LF (not CRLF): never executed (RFC 5321 §2.3.8). */
export const BARE_LF = Symbol('bare LF');

export type FramedLine = Buffer | typeof LINE_TOO_LONG | typeof BARE_LF;

/**
 * Splits input into command lines. Only CRLF ends a line; a bare LF ends the garbage before it
 * (so a client that forgot the CR gets an error reply instead of silence). A line longer than
 * `maxLine` bytes is never held in memory: the rest is skipped up to its LF.
 */
export class CommandFramer {
  private buf: Buffer = EMPTY;
  /** Input is being dropped up to the next LF; `buf` is empty meanwhile. */
  private skipping = false;
  /** A skipped line has ended: next() reports it before the lines that followed it. */
  private skipped = false;

  constructor(readonly maxLine: number) {}

  push(chunk: Buffer): void {
    if (this.skipping) {
      // Discarded input is neither kept nor copied: only the LF that ends it is looked for.
      const lf = chunk.indexOf(LF);
      if (lf < 0) return;
      this.skipping = false;
      this.skipped = true;
      chunk = chunk.subarray(lf + 1);
    }
    if (this.buf.length === 0) {
      this.buf = chunk;
      return;
    }
    // An unfinished line that this chunk does not finish and that is already too long: dropped
    // before it is joined, so a line trickled in small chunks is never copied past the limit.
    if (this.buf.length + chunk.length > this.maxLine && chunk.indexOf(LF) < 0 && this.buf.indexOf(LF) < 0) {
      this.buf = EMPTY;
      this.skipping = true;
      return;
    }
    this.buf = Buffer.concat([this.buf, chunk]);
  }

  /** The next complete line without its CRLF, a marker, or null when more input is needed. */
  next(): FramedLine | null {
    if (this.skipped) {
      this.skipped = false;
      return LINE_TOO_LONG;
    }
    const buf = this.buf;
    const lf = buf.indexOf(LF);
    if (lf < 0) {
      if (buf.length > this.maxLine) {
        this.skipping = true;
        this.buf = EMPTY;
      }
      return null;
    }
    this.buf = lf + 1 === buf.length ? EMPTY : buf.subarray(lf + 1);
    if (lf + 1 > this.maxLine) return LINE_TOO_LONG;
    if (lf === 0 || buf[lf - 1] !== CR) return BARE_LF;
    return buf.subarray(0, lf - 1);
  }

  /** Takes out everything not yet framed (the start of a body, or bytes to discard). */
  takeRest(): Buffer {
    const rest = this.buf;
    this.buf = EMPTY;
    this.skipping = this.skipped = false;
    return rest;
  }

  get buffered(): number {
    return this.buf.length;
  }

  /** Whether input is being dropped now, up to the LF of a line that was too long. */
  get discarding(): boolean {
    return this.skipping;
  }
}

/** Where the reader stands relative to a possible terminator `CRLF . CRLF`. */
const enum At {
  /** Inside a line. */
  Text,
  /** Right after CRLF (or at the very start of the body): a dot here is special. */
  LineStart,
  /** A dot at line start was withheld: stuffing or the terminator. */
  Dot,
  /** `.` and CR at line start were withheld. */
  DotCR,
}

/** Past the first few pieces, segments shorter than this are copied into a staging buffer. */
const SMALL_SEGMENT = 4096;
/** Pieces a body may have before its short segments are staged (a body in a few reads needs no copy before the join). */
const FEW_PIECES = 8;
/** The largest staging buffer; a smaller one while the body is small, so a short body holds no 64 KiB. */
const STAGE_SIZE = 65_536;

/**
 * Collects a message body under a size limit, from DATA or from BDAT chunks: past the limit
 * nothing more is kept (the caller keeps reading and dropping), so memory stays bounded.
 *
 * Segments are kept as views of the socket's reads and joined once, when the body is taken: one
 * copy per byte (none for a body in one segment). Node gives every read its own ArrayBuffer and
 * never reuses it, so a view stays valid. A view keeps its whole read alive, so only a segment
 * covering at least half of its read is kept as a view (memory stays within twice the body), and
 * past the first few pieces small ones (a dot-stuffed body splits into one segment per line, a
 * trickling client sends tiny reads) are copied into a staging buffer, so a body is never a
 * million tiny Buffer objects: those bytes are copied twice. The staging buffer grows with the
 * body, up to 64 KiB, so a short body does not hold a large one.
 */
export class Body {
  private pieces: Buffer[] = [];
  private stage: Buffer | null = null;
  private staged = 0;
  private length = 0;
  /** Body bytes seen, kept or not. */
  size = 0;
  overflowed = false;

  constructor(
    /** Bytes beyond which nothing is kept; 0 means no limit. */
    readonly sizeLimit: number,
    /** Receives each segment as it is found, instead of the body keeping it. */
    private readonly onSegment?: (segment: Buffer) => void,
  ) {}

  add(seg: Buffer): void {
    if (seg.length === 0) return;
    this.size += seg.length;
    if (this.overflowed) return;
    if (this.sizeLimit > 0 && this.size > this.sizeLimit) {
      this.overflowed = true;
      this.pieces = [];
      this.stage = null;
      this.staged = this.length = 0;
      return;
    }
    if (this.onSegment !== undefined) return this.onSegment(seg);
    this.length += seg.length;
    if ((seg.length >= SMALL_SEGMENT || this.pieces.length < FEW_PIECES) && seg.length * 2 >= seg.buffer.byteLength) {
      this.flushStage();
      this.pieces.push(seg);
      return;
    }
    if (this.stage !== null && this.staged + seg.length > this.stage.length) {
      this.flushStage();
      this.stage = null; // what is left of it is shorter than seg
    }
    // Never from the shared pool: a view would keep the pool slab (and others' bytes) alive.
    if (this.stage === null) this.stage = Buffer.allocUnsafeSlow(Math.max(seg.length, Math.min(STAGE_SIZE, Math.max(SMALL_SEGMENT, this.length))));
    seg.copy(this.stage, this.staged);
    this.staged += seg.length;
  }

  /** Ends the staged run as a piece; the rest of the staging buffer takes the next small ones. */
  private flushStage(): void {
    if (this.stage === null || this.staged === 0) return;
    this.pieces.push(this.stage.subarray(0, this.staged));
    this.stage = this.staged < this.stage.length ? this.stage.subarray(this.staged) : null;
    this.staged = 0;
  }

  /** The body. Empty once the limit was passed. */
  content(): Buffer {
    this.flushStage();
    this.stage = null;
    if (this.pieces.length === 0) return EMPTY;
    if (this.pieces.length > 1) this.pieces = [Buffer.concat(this.pieces, this.length)];
    return this.pieces[0]!;
  }
}

export interface DataReaderOptions {
  /** Body bytes (after unstuffing) beyond which nothing is kept; 0 means no limit. */
  sizeLimit: number;
  /** Receives each body segment as it is found, instead of the reader keeping it. */
  onSegment?: (segment: Buffer) => void;
}

/**
 * Reads a DATA body: only CRLF.CRLF ends it, a leading dot of a line is removed (dot-unstuffing),
 * and bare CR or LF are ordinary content, so `\n.\n` or `\r.\r` can never end a message
 * (SMTP smuggling). Past the size limit nothing more is kept, but reading goes on to the end.
 */
export class DataReader {
  private at: At = At.LineStart;
  /** The last byte given out was a CR, so an LF at the start of the next chunk completes CRLF. */
  private lastCR = false;
  readonly body: Body;

  constructor(options: DataReaderOptions) {
    this.body = new Body(options.sizeLimit, options.onSegment);
  }

  get size(): number {
    return this.body.size;
  }

  get overflowed(): boolean {
    return this.body.overflowed;
  }

  content(): Buffer {
    return this.body.content();
  }

  private emit(seg: Buffer): void {
    if (seg.length === 0) return;
    this.lastCR = seg[seg.length - 1] === CR;
    this.body.add(seg);
  }

  /**
   * Feeds input. Returns null while the body goes on; once the terminator is read, returns the
   * bytes that followed it (the next commands, possibly empty).
   */
  push(chunk: Buffer): Buffer | null {
    const len = chunk.length;
    let pos = 0;
    for (;;) {
      // Resolve the withheld states byte by byte; they last at most two bytes.
      if (this.at === At.Dot) {
        if (pos >= len) return null;
        if (chunk[pos] === CR) {
          this.at = At.DotCR;
          pos++;
          continue;
        }
        this.at = At.Text; // stuffed dot: dropped
        this.lastCR = false;
      } else if (this.at === At.DotCR) {
        if (pos >= len) return null;
        if (chunk[pos] === LF) return chunk.subarray(pos + 1);
        this.at = At.Text; // ".\r" then something else: the dot was stuffing, the CR is content
        this.emit(CR_BUF);
      } else if (this.at === At.LineStart) {
        if (pos >= len) return null;
        if (chunk[pos] === DOT) {
          this.at = At.Dot;
          pos++;
          continue;
        }
        this.at = At.Text;
      } else if (this.lastCR && pos < len && chunk[pos] === LF) {
        // CRLF split across chunks.
        this.emit(chunk.subarray(pos, pos + 1));
        pos++;
        this.at = At.LineStart;
        continue;
      }
      // Text: the only thing that matters is the next CRLF followed by a dot.
      const hit = chunk.indexOf(CRLF_DOT, pos);
      if (hit < 0) {
        this.emit(chunk.subarray(pos));
        // A chunk ending in CRLF leaves us at a line start. (A lone LF left here cannot complete
        // a CRLF: that case was taken by the branch above.)
        if (len - pos >= 2 && chunk[len - 2] === CR && chunk[len - 1] === LF) this.at = At.LineStart;
        return null;
      }
      this.emit(chunk.subarray(pos, hit + 2));
      pos = hit + 3;
      this.at = At.Dot;
    }
  }
}

/** Takes exactly `size` bytes of a BDAT chunk (RFC 3030): no unstuffing, no terminator search. */
export class ChunkReader {
  private remaining: number;

  constructor(
    size: number,
    readonly body: Body,
  ) {
    this.remaining = size;
  }

  /** Returns null while the chunk goes on, then the bytes that followed it. */
  push(chunk: Buffer): Buffer | null {
    if (chunk.length < this.remaining) {
      this.body.add(chunk);
      this.remaining -= chunk.length;
      return null;
    }
    this.body.add(chunk.subarray(0, this.remaining));
    const rest = chunk.subarray(this.remaining);
    this.remaining = 0;
    return rest;
  }

  get done(): boolean {
    return this.remaining === 0;
  }
}
