/**
 * Pure header work for Authentication-Results (RFC 8601): finding a header's authserv-id,
 * removing the copies that forge ours (§5), and putting our header in front of the message so
 * that no client byte can extend it. Works on the raw bytes (latin1 keeps every octet).
 */
import { lineEnding, tracePrefix } from '../handlers/headers.js';

/** One header field as it sits in the message: name, and the byte range of all its lines. */
interface Field {
  name: string;
  start: number;
  end: number;
  /** The value unfolded (after the colon), latin1. */
  value: string;
}

/** Where the header block ends: the offset of the empty line's first byte, or the length when there is none. */
function headerEnd(text: string): number {
  if (text.startsWith('\r\n') || text.startsWith('\n')) return 0;
  const crlf = text.indexOf('\r\n\r\n');
  const lf = text.indexOf('\n\n');
  const ends = [crlf < 0 ? -1 : crlf + 2, lf < 0 ? -1 : lf + 1].filter((n) => n >= 0);
  return ends.length === 0 ? text.length : Math.min(...ends);
}

/** The header fields of the block, in order; lines that are no field (and orphan continuations) are skipped. */
function fields(text: string, end: number): Field[] {
  const out: Field[] = [];
  let i = 0;
  while (i < end) {
    let next = text.indexOf('\n', i);
    next = next < 0 || next >= end ? end : next + 1;
    // A field runs on while the next line starts with white space (RFC 5322 §2.2.3 folding).
    while (next < end && (text[next] === ' ' || text[next] === '\t')) {
      const more = text.indexOf('\n', next);
      next = more < 0 || more >= end ? end : more + 1;
    }
    const line = text.slice(i, next);
    // Obsolete syntax (RFC 5322 §4.5.8) allows white space before the colon: a forger may use it.
    const m = /^([\x21-\x39\x3b-\x7e]+)[ \t]*:/.exec(line);
    if (m !== null) out.push({ name: m[1]!.toLowerCase(), start: i, end: next, value: line.slice(m[0].length).replace(/\r?\n/g, '') });
    i = next;
  }
  return out;
}

/** Drops RFC 5322 comments (nested, with quoted-pairs) and folds white space, outside quoted strings. */
function withoutComments(value: string): string {
  let out = '';
  let depth = 0;
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c === '\\' && (quoted || depth > 0)) {
      if (depth === 0) out += c + (value[i + 1] ?? '');
      i++;
    } else if (quoted) {
      out += c;
      if (c === '"') quoted = false;
    } else if (c === '(') depth++;
    else if (c === ')' && depth > 0) depth--;
    else if (depth === 0) {
      if (c === '"') quoted = true;
      out += c;
    }
  }
  return out.trim();
}

/** A name compared as a domain: case-insensitive, without a trailing dot. */
function normalizeId(id: string): string {
  return id.toLowerCase().replace(/\.$/, '');
}

/**
 * The authserv-id of an Authentication-Results value (RFC 8601 §2.2: `[CFWS] authserv-id
 * [CFWS authres-version] ...`, authserv-id a token or quoted-string), or null when none.
 */
export function authservIdOf(value: string): string | null {
  const v = withoutComments(value);
  if (v.startsWith('"')) {
    const m = /^"((?:[^"\\]|\\.)*)"/.exec(v);
    return m === null ? null : m[1]!.replace(/\\(.)/g, '$1');
  }
  const m = /^[^\s;]+/.exec(v);
  return m === null ? null : m[0];
}

/**
 * RFC 8601 §5: removes every Authentication-Results header whose authserv-id is ours, so the
 * reader sees only the verdicts we made. Other authserv-ids are left (they are other servers' and
 * say nothing in our name). Returns the message and how many were removed.
 */
export function removeForgedAuthResults(message: Buffer, authservId: string): { message: Buffer; removed: number } {
  const text = message.toString('latin1');
  const end = headerEnd(text);
  const ours = normalizeId(authservId);
  const cut: Array<[number, number]> = [];
  for (const f of fields(text, end)) {
    if (f.name !== 'authentication-results') continue;
    const id = authservIdOf(f.value);
    if (id !== null && normalizeId(id) === ours) cut.push([f.start, f.end]);
  }
  if (cut.length === 0) return { message, removed: 0 };
  const parts: Buffer[] = [];
  let at = 0;
  for (const [s, e] of cut) {
    parts.push(message.subarray(at, s));
    at = e;
  }
  parts.push(message.subarray(at));
  return { message: Buffer.concat(parts), removed: cut.length };
}

/**
 * Our header in front of the message, ended by the message's own line ending. The client's bytes
 * stay as they are: when they could continue our header (white space, a bare CR, no header block
 * at all), the trace headers' empty line keeps ours ours (see handlers/headers.ts).
 */
export function prependHeader(message: Buffer, header: string): Buffer {
  const eol = lineEnding(message);
  return Buffer.concat([tracePrefix(header.replace(/\r\n/g, eol) + eol, message, eol), message]);
}

/**
 * Makes a header value safe to write: folded lines keep their fold, any other control character
 * (CR, LF, NUL, ESC...) becomes a space, so nothing a DNS record or a client supplied can end our
 * header or start another.
 */
export function safeHeader(text: string): string {
  return text
    .split(/\r?\n/)
    .map((line, i) => {
      const clean = line.replace(/[\x00-\x08\x0a-\x1f\x7f]/g, ' ');
      return i === 0 || /^[ \t]/.test(clean) ? clean : ` ${clean}`;
    })
    .join('\r\n');
}
