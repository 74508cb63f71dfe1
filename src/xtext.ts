/**
 * RFC 3461 §4 xtext, shared by DSN (ENVID, ORCPT), AUTH= (RFC 4954 §5) and XCLIENT: `+XX`
 * (two upper-case hex digits) for octets outside 33..126, `+` and `=`; any other printable
 * character may stand for itself or be escaped. Pure, no I/O.
 */
import { isUtf8 } from 'node:buffer';

const HEX = /^[0-9A-F]{2}$/;

/** The octets an xtext stands for, or null when it is no xtext (a bare `+`, lower-case hex, `=`, a control or non-ASCII character). */
export function decodeXtextBytes(text: string): Buffer | null {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 33 || c > 126 || c === 0x3d) return null;
    if (c !== 0x2b) {
      bytes.push(c);
      continue;
    }
    const hex = text.slice(i + 1, i + 3);
    if (!HEX.test(hex)) return null;
    bytes.push(Number.parseInt(hex, 16));
    i += 2;
  }
  return Buffer.from(bytes);
}

/** The xtext decoded as UTF-8 (a name or login may be non-ASCII); null for bad xtext or invalid UTF-8. */
export function decodeXtext(text: string): string | null {
  const buf = decodeXtextBytes(text);
  return buf !== null && isUtf8(buf) ? buf.toString('utf8') : null;
}

/** Encodes a string (as UTF-8) or octets as xtext, escaping only what §4 requires. */
export function encodeXtext(value: string | Buffer): string {
  const buf = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  let out = '';
  for (const b of buf) {
    out += b < 33 || b > 126 || b === 0x2b || b === 0x3d ? `+${b.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(b);
  }
  return out;
}
