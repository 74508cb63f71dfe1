/**
 * The trace headers aiosmtpd's handlers add to a message (X-Peer, X-MailFrom, X-RcptTo), in one
 * place, so Mailbox, Message and Proxy write them the same way: first in the message, folded to
 * RFC 5322's line limits, with nothing in them that a reader could take for a line break, and
 * never followed by a client line that a reader could take for their continuation.
 */
import { formatClient, type Envelope, type Session } from '../session.js';

/** The bytes received; `content` is only a fallback for envelopes built by hand. */
export function bodyOf(envelope: Envelope): Buffer {
  if (envelope.originalContent !== null) return envelope.originalContent;
  const content = envelope.content ?? '';
  return typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
}

/**
 * What RFC 5322 (§2.2, §3.2.5) and RFC 6532 leave out of a header field body: C0 controls (CR
 * and LF among them, and HT, so a value stays single-spaced), DEL, the C1 controls (NEL, U+0085,
 * ends a line for some readers), U+2028 and U+2029 (line and paragraph separators), and lone
 * surrogates (no UTF-8 exists for them). A PROXY header's UNIX path may hold any of these.
 */
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u2028\u2029]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * A header-safe value: every character of UNSAFE shown as `\xHH` or `\uHHHH`, so the value
 * stays one logical line and still tells what was there.
 */
export function clean(value: string): string {
  return value.replace(UNSAFE, (ch) => {
    const code = ch.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/** The message's own line ending, so added headers do not mix CRLF and LF in one header block. */
export function lineEnding(body: Buffer): '\r\n' | '\n' {
  return body.includes('\r\n') ? '\r\n' : '\n';
}

/** RFC 5322 §2.1.1: a line SHOULD be at most 78 octets and MUST be at most 998, CRLF excluded. */
const SOFT_LINE = 78;
const HARD_LINE = 998;

/**
 * `name: value` folded (RFC 5322 §2.2.3) before a space, so unfolding gives `value` back. A word
 * with no space in it that would pass 998 octets on its line is cut (unfolding then shows a
 * space there): no value of an envelope comes near it, but a handler may set anything.
 */
export function foldHeader(name: string, value: string, eol: string): string {
  // Split only at a space followed by a non-space: every continuation line then starts with
  // " " and a visible character, never consists of white space alone (§3.2.2).
  const words = clean(value).split(/ (?=[^ ])/);
  let out = `${name}:`;
  let line = Buffer.byteLength(out);
  let first = true;
  for (const word of words) {
    const size = Buffer.byteLength(word);
    if (!first && line + 1 + size > SOFT_LINE) {
      out += eol;
      line = 0;
    }
    if (line + 1 + size <= HARD_LINE) {
      out += ` ${word}`;
      line += 1 + size;
    } else {
      for (const piece of cut(word, HARD_LINE - 1 - line, HARD_LINE - 1)) {
        if (line > 0 && line + 1 + Buffer.byteLength(piece) > HARD_LINE) {
          out += eol;
          line = 0;
        }
        out += ` ${piece}`;
        line += 1 + Buffer.byteLength(piece);
      }
    }
    first = false;
  }
  return out + eol;
}

/** `word` in pieces of at most `room` octets (the first) and `max` (the rest), whole code points. */
function cut(word: string, room: number, max: number): string[] {
  const pieces: string[] = [];
  let piece = '';
  let size = 0;
  let limit = Math.max(room, 1);
  for (const ch of word) {
    const n = Buffer.byteLength(ch);
    if (size + n > limit && piece !== '') {
      pieces.push(piece);
      piece = '';
      size = 0;
      limit = max;
    }
    piece += ch;
    size += n;
  }
  if (piece !== '') pieces.push(piece);
  return pieces;
}

/** The values of X-Peer, X-MailFrom and X-RcptTo, header-safe and unfolded. */
export function traceValues(
  session: Session,
  envelope: Envelope,
  recipients: readonly string[] = envelope.rcptTos,
): { peer: string; mailFrom: string; rcptTo: string } {
  return {
    peer: clean(formatClient(session)),
    mailFrom: clean(envelope.mailFrom ?? ''),
    rcptTo: clean(recipients.join(', ')),
  };
}

/** `X-Peer: <client>` (the XFORWARD-forwarded client, if any), folded and ended by `eol`. */
export function peerHeader(session: Session, eol: string): string {
  return foldHeader('X-Peer', formatClient(session), eol);
}

/**
 * `X-Peer`, `X-MailFrom` and `X-RcptTo` lines, each ended by `eol`. `recipients` defaults to
 * every envelope recipient. X-RcptTo is folded after each comma, so a thousand recipients make
 * a thousand short lines, not one of 19,000 octets.
 */
export function traceHeaders(
  session: Session,
  envelope: Envelope,
  eol: string,
  recipients: readonly string[] = envelope.rcptTos,
): string {
  const values = traceValues(session, envelope, recipients);
  return (
    foldHeader('X-Peer', values.peer, eol) +
    foldHeader('X-MailFrom', values.mailFrom, eol) +
    foldHeader('X-RcptTo', values.rcptTo, eol)
  );
}

/** An RFC 5322 field name and its colon (§3.6.8: printable ASCII except the colon). */
const FIELD_START = /^[\x21-\x39\x3b-\x7e]+:/;

/**
 * Whether the client's bytes need an empty line between our headers and them. They do unless
 * they begin with a header field (then ours are followed by a field, never by a continuation) or
 * with an empty line (the client sent no headers). Anything else, a line starting with a space
 * or a tab above all, would be read as a continuation of our last header, which is how a client
 * would forge it; such bytes cannot start a header section (RFC 5322 §2.2, §3.5), so after the
 * empty line they are the body, byte for byte.
 */
export function needsSeparator(body: Buffer): boolean {
  if (body.length === 0) return false;
  if (body[0] === 0x0a || (body[0] === 0x0d && body[1] === 0x0a)) return false;
  return !FIELD_START.test(body.subarray(0, 1000).toString('latin1'));
}

/** Our header lines and, when the body needs it, the empty line that keeps them ours. */
export function tracePrefix(headers: string, body: Buffer, eol: string): Buffer {
  return Buffer.from(needsSeparator(body) ? headers + eol : headers, 'utf8');
}

/**
 * The received bytes with X-Peer, X-MailFrom and X-RcptTo prepended (aiosmtpd's
 * prepare_message, kept as bytes). Prepended rather than appended to the header block so ours come
 * first and win over copies the client forged; the body itself is left byte for byte.
 */
export function prepareMessage(session: Session, envelope: Envelope): Buffer {
  const body = bodyOf(envelope);
  const eol = lineEnding(body);
  return Buffer.concat([tracePrefix(traceHeaders(session, envelope, eol), body, eol), body]);
}
