/**
 * The message body on its way out after DATA: normalized (every bare CR and bare LF becomes CRLF)
 * and dot-stuffed chunk by chunk, so nothing in it can end the DATA early upstream. Pure.
 */

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const CRLF = Buffer.from('\r\n');
const DOT_BUF = Buffer.from('.');
const END_OF_DATA = Buffer.from('.\r\n');
const EMPTY = Buffer.alloc(0);

/**
 * Turns message bytes into what goes on the wire after DATA: every bare CR and bare LF becomes
 * CRLF, a line that starts with a dot gets a second one (RFC 5321 §4.5.2), and end() adds the
 * final CRLF (when the message lacks one) and `.` CRLF. Chunks may split anywhere, a CRLF pair
 * included: the output is the same as for the whole message at once.
 */
export class DataEncoder {
  private atLineStart = true;
  private pendingCR = false;

  push(chunk: Buffer): Buffer {
    const len = chunk.length;
    if (len === 0) return EMPTY;
    const out: Buffer[] = [];
    let pos = 0;
    if (this.pendingCR) {
      this.pendingCR = false;
      out.push(CRLF);
      this.atLineStart = true;
      if (chunk[0] === LF) pos = 1;
    }
    let start = pos;
    let cr = chunk.indexOf(CR, pos);
    let lf = chunk.indexOf(LF, pos);
    while (pos < len) {
      if (this.atLineStart) {
        this.atLineStart = false;
        if (chunk[pos] === DOT) {
          if (pos > start) out.push(chunk.subarray(start, pos));
          out.push(DOT_BUF);
          start = pos;
        }
      }
      if (cr !== -1 && cr < pos) cr = chunk.indexOf(CR, pos);
      if (lf !== -1 && lf < pos) lf = chunk.indexOf(LF, pos);
      const brk = cr === -1 ? lf : lf === -1 ? cr : Math.min(cr, lf);
      if (brk === -1) break;
      if (brk > start) out.push(chunk.subarray(start, brk));
      if (chunk[brk] === CR) {
        if (brk + 1 === len) {
          // A CR at the end of a chunk: the next chunk tells whether it was half of a CRLF.
          this.pendingCR = true;
          start = pos = len;
          break;
        }
        pos = chunk[brk + 1] === LF ? brk + 2 : brk + 1;
      } else {
        pos = brk + 1;
      }
      out.push(CRLF);
      start = pos;
      this.atLineStart = true;
    }
    if (start < len) out.push(chunk.subarray(start));
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }

  /** The end of the message: the last line's CRLF if it has none, then `.` CRLF. */
  end(): Buffer {
    const parts: Buffer[] = [];
    if (this.pendingCR) {
      this.pendingCR = false;
      parts.push(CRLF);
      this.atLineStart = true;
    }
    if (!this.atLineStart) parts.push(CRLF);
    parts.push(END_OF_DATA);
    this.atLineStart = true;
    return Buffer.concat(parts);
  }
}

/** A whole message as it goes on the wire after DATA, terminator included. */
export function encodeData(message: Buffer): Buffer {
  const encoder = new DataEncoder();
  return Buffer.concat([encoder.push(message), encoder.end()]);
}

/** Every bare CR and every bare LF becomes CRLF; CRLF pairs stay. Returns `data` itself when nothing changes. */
export function toCRLF(data: Buffer): Buffer {
  const parts: Buffer[] = [];
  let start = 0;
  let cr = data.indexOf(CR);
  let lf = data.indexOf(LF);
  while (cr !== -1 || lf !== -1) {
    if (cr !== -1 && (lf === -1 || cr < lf)) {
      if (data[cr + 1] === LF) {
        // CRLF: that LF is the next one, skip the pair.
        lf = data.indexOf(LF, cr + 2);
        cr = data.indexOf(CR, cr + 2);
        continue;
      }
      parts.push(data.subarray(start, cr), CRLF);
      start = cr + 1;
      cr = data.indexOf(CR, start);
    } else {
      parts.push(data.subarray(start, lf), CRLF);
      start = lf + 1;
      lf = data.indexOf(LF, start);
    }
  }
  if (parts.length === 0) return data;
  parts.push(data.subarray(start));
  return Buffer.concat(parts);
}
