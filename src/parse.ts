/**
 * Pure parsers for SMTP command lines and their arguments.
 *
 * Grammar: RFC 5321 §4.1.2 (command argument syntax) and §4.1.3 (address literals), extended by
 * RFC 6531 §3.3 (SMTPUTF8: UTF8-non-ascii in atext, qtextSMTP, sub-domain and esmtp-value) when
 * the caller says UTF-8 is allowed. Deliberately not RFC 5322's looser header syntax: no comments,
 * no folding whitespace, no obsolete forms (DESIGN.md §3).
 *
 * Strings come in already decoded (UTF-8 → JS string); invalid input bytes show up as U+FFFD or
 * lone surrogates, and both are refused. No I/O, no state, no imports: safe to fuzz.
 */

export interface ParsedPath {
  /** The mailbox without brackets, source route dropped; '' for the null path `<>`. */
  address: string;
  /** The rest of the argument after the path, spaces trimmed (the ESMTP parameters); may be ''. */
  params: string;
}

/** 'utf8': the address is valid but non-ASCII while UTF-8 is not allowed (reply 553 5.6.7). */
export type PathError = 'syntax' | 'utf8';

export interface EsmtpParam {
  /** Upper-cased. */
  keyword: string;
  /** null when the parameter has no `=value`. */
  value: string | null;
}

export interface PathOptions {
  /** Accept the null reverse-path `<>` (MAIL FROM, RFC 5321 §4.1.1.2). */
  allowNull: boolean;
  /** Accept the domain-less `<Postmaster>` (RCPT TO only, RFC 5321 §4.1.1.3). */
  allowPostmaster: boolean;
  /** SMTPUTF8 in effect for this transaction (RFC 6531 §3.3). */
  utf8: boolean;
}

// ---- limits (RFC 5321 §4.5.3.1) ----

/** §4.5.3.1.1: local-part at most 64 octets. */
const MAX_LOCAL_PART = 64;
/** §4.5.3.1.2: domain at most 255 octets. */
const MAX_DOMAIN = 255;
/** RFC 1035 §2.3.4 (by way of RFC 5321 §2.3.5): label at most 63 octets. */
const MAX_LABEL = 63;
/** §4.5.3.1.3: a path is at most 256 octets "including the punctuation", i.e. the angle brackets
 *  (erratum 1690), so at most 254 octets between them. */
const MAX_PATH_INSIDE = 254;

// ---- character classes ----
// Non-ASCII ranges below are UTF-16 code units \u0080-\uffff; utf8Octets() has already refused
// lone surrogates, C1 controls and U+FFFD, so what the regexes see is well-formed RFC 6531
// UTF8-non-ascii.

/** Dot-string = Atom *("." Atom), Atom = 1*atext (RFC 5321 §4.1.2, atext from RFC 5322 §3.2.3;
 *  RFC 6531 §3.3 adds UTF8-non-ascii to atext). `\w` is ALPHA / DIGIT / "_". */
const DOT_STRING =
  /^[\w!#$%&'*+\-/=?^`{|}~\u0080-\uffff]+(?:\.[\w!#$%&'*+\-/=?^`{|}~\u0080-\uffff]+)*$/;

/** Quoted-string = DQUOTE *QcontentSMTP DQUOTE; qtextSMTP = %d32-33 / %d35-91 / %d93-126
 *  (+ UTF8-non-ascii, RFC 6531), quoted-pairSMTP = "\" %d32-126. Unanchored at the end: the
 *  match length tells where the local part stops, so `"a"b@c` (mixed forms) is caught. */
const QUOTED_STRING = /^"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\uffff]|\\[\x20-\x7e])*"/;

/** sub-domain = Let-dig [Ldh-str] (§4.1.2): no leading or trailing hyphen. RFC 6531 §3.3 allows a
 *  U-label here; we accept any non-ASCII letter in the LDH positions rather than run IDNA2008. */
const SUB_DOMAIN =
  /^[A-Za-z0-9\u0080-\uffff](?:[A-Za-z0-9\-\u0080-\uffff]*[A-Za-z0-9\u0080-\uffff])?$/;

/** Snum = 1*3DIGIT, value 0..255 (§4.1.3); IPv4-address-literal = Snum 3("." Snum). */
const IPV4 =
  /^(?:(?:25[0-5]|2[0-4]\d|[01]?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|[01]?\d?\d)$/;

/** IPv6-hex = 1*4HEXDIG (§4.1.3). */
const IPV6_HEX = /^[0-9A-Fa-f]{1,4}$/;

/** Standardized-tag = Ldh-str; dcontent = %d33-90 / %d94-126 (§4.1.3). */
const STANDARDIZED_TAG = /^[A-Za-z0-9-]*[A-Za-z0-9]$/;
const DCONTENT = /^[\x21-\x5a\x5e-\x7e]+$/;

/** esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") (§4.1.2). */
const ESMTP_KEYWORD = /^[A-Za-z0-9][A-Za-z0-9-]*$/;
/** esmtp-value = 1*(%d33-60 / %d62-126): printable ASCII except "=" (§4.1.2); RFC 6531 §3.3 adds
 *  UTF8-non-ascii. */
const ESMTP_VALUE = /^[\x21-\x3c\x3e-\x7e]+$/;
const ESMTP_VALUE_UTF8 = /^[\x21-\x3c\x3e-\x7e\u0080-\uffff]+$/;

/** A command verb: a letter, then letters, digits or "-" (extension verbs), 20 at most. */
const VERB = /^[A-Za-z][A-Za-z0-9-]{0,19}$/;

/** `FROM:` / `TO:` with no space before the colon (§4.1.1.2, §4.1.1.3). Case-insensitive without
 *  the `u` flag, so no non-ASCII letter folds onto an ASCII one. */
const FROM_COLON = /^FROM:/i;
const TO_COLON = /^TO:/i;

const POSTMASTER = /^postmaster$/i;
const SIZE_DIGITS = /^\d{1,20}$/;

// ---- helpers ----

/**
 * UTF-8 length in octets of `s`, or -1 when `s` holds a character no path or parameter may carry:
 * C0 controls and DEL (the §4.1.2 grammar is printable ASCII, plus SP inside quoted strings), C1
 * controls, U+2028/U+2029 (line breaks in disguise), lone surrogates (not encodable, RFC 3629) and
 * U+FFFD (what a decoder leaves for invalid bytes: RFC 6531 wants valid UTF-8 only).
 */
function utf8Octets(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) {
      if (c < 0x20 || c === 0x7f) return -1;
      n += 1;
    } else if (c < 0x800) {
      if (c < 0xa0) return -1;
      n += 2;
    } else if (c >= 0xd800 && c <= 0xdfff) {
      const d = s.charCodeAt(i + 1); // NaN past the end fails the test below
      if (c > 0xdbff || !(d >= 0xdc00 && d <= 0xdfff)) return -1;
      i++;
      n += 4;
    } else {
      if (c === 0xfffd || c === 0x2028 || c === 0x2029) return -1;
      n += 3;
    }
  }
  return n;
}

/** Unicode separators (Z*) and format characters (Cf) other than ASCII SP. */
const INVISIBLE = /(?! )[\p{Z}\p{Cf}]/u;

/** Trims SP (only SP: RFC 5321 separates with SP, a tab is junk for the callee to refuse). */
function trimSP(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && s.charCodeAt(a) === 32) a++;
  while (b > a && s.charCodeAt(b - 1) === 32) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

/** Index of the ">" closing a path opened just before `i`, or -1 when there is none or a "<"
 *  comes first (nested brackets). ">" and "<" are qtextSMTP, so quoted strings are skipped. */
function closingBracket(s: string, i: number): number {
  let quoted = false;
  for (; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (quoted) {
      if (c === 92 /* \ */) i++;
      else if (c === 34 /* " */) quoted = false;
    } else if (c === 34) quoted = true;
    else if (c === 62 /* > */) return i;
    else if (c === 60 /* < */) return -1;
  }
  return -1;
}

/** Domain = sub-domain *("." sub-domain), within the §4.5.3.1.2 / RFC 1035 lengths. */
function isDomain(d: string): boolean {
  if (d.length === 0 || utf8Octets(d) > MAX_DOMAIN) return false;
  for (const label of d.split('.')) {
    if (!SUB_DOMAIN.test(label) || utf8Octets(label) > MAX_LABEL) return false;
  }
  return true;
}

/**
 * IPv6-addr (§4.1.3): eight 16-bit groups, at most one "::" standing for the missing ones, and an
 * optional trailing IPv4 dotted quad counting as two. Like node's net.isIPv6 (minus zone ids,
 * which the grammar has no room for), "::" may stand for a single group, which RFC 5321's prose
 * and RFC 5952 discourage but deployed stacks accept.
 */
function isIPv6(s: string): boolean {
  const gap = s.indexOf('::');
  if (gap >= 0 && s.indexOf('::', gap + 1) >= 0) return false; // two gaps, or ":::"
  const head = gap < 0 ? s : s.slice(0, gap);
  const tail = gap < 0 ? '' : s.slice(gap + 2);
  const parts = head === '' ? [] : head.split(':');
  if (tail !== '') parts.push(...tail.split(':'));
  let groups = parts.length;
  const last = parts[parts.length - 1];
  // The dotted quad may only end the address, never precede the "::".
  if (last !== undefined && last.includes('.') && (gap < 0 || tail !== '')) {
    if (!IPV4.test(last)) return false;
    parts.pop();
    groups++;
  }
  for (const p of parts) if (!IPV6_HEX.test(p)) return false;
  return gap < 0 ? groups === 8 : groups <= 7;
}

/** address-literal = "[" ( IPv4 / "IPv6:" IPv6-addr / General-address-literal ) "]" (§4.1.3). */
function isAddressLiteral(d: string): boolean {
  if (d.length < 3 || d.charCodeAt(0) !== 91 || d.charCodeAt(d.length - 1) !== 93) return false;
  const inner = d.slice(1, -1);
  if (IPV4.test(inner)) return true;
  const colon = inner.indexOf(':');
  if (colon < 0) return false;
  const tag = inner.slice(0, colon);
  const rest = inner.slice(colon + 1);
  // ABNF strings are case-insensitive: "ipv6:" is the IPv6 tag too, never a general literal.
  if (tag.toLowerCase() === 'ipv6') return isIPv6(rest);
  return STANDARDIZED_TAG.test(tag) && DCONTENT.test(rest);
}

/** Mailbox = Local-part "@" ( Domain / address-literal ), or the bare "Postmaster" (§4.1.1.3). */
function isMailbox(m: string, allowPostmaster: boolean): boolean {
  let at: number;
  if (m.charCodeAt(0) === 34 /* " */) {
    const q = QUOTED_STRING.exec(m);
    if (q === null) return false;
    at = q[0].length;
    if (m.charCodeAt(at) !== 64 /* @ */) return false; // `"a"b@c`: mixed quoted and dot-atom
  } else {
    at = m.indexOf('@');
    if (at < 0) return allowPostmaster && POSTMASTER.test(m);
    if (!DOT_STRING.test(m.slice(0, at))) return false;
  }
  if (utf8Octets(m.slice(0, at)) > MAX_LOCAL_PART) return false;
  const domain = m.slice(at + 1);
  return domain.charCodeAt(0) === 91 /* [ */ ? isAddressLiteral(domain) : isDomain(domain);
}

// ---- exports ----

/**
 * Parses the argument of MAIL (after `FROM:`) or RCPT (after `TO:`): a path, then parameters.
 *
 * Accepts `<mailbox>`, `<>` (when allowNull), `<@a.org,@b.org:mailbox>` (the source route of
 * §4.1.2 A-d-l, which §3.3 says to accept and ignore) and, as Postfix and aiosmtpd do, leading
 * spaces and an unbracketed `mailbox` without spaces. Unbalanced or nested brackets, and anything
 * but SP or the end right after the closing ">", are syntax errors.
 *
 * Non-ASCII is judged last: a path that is valid under RFC 6531 but arrives without SMTPUTF8
 * gives 'utf8', so the caller can say which extension is missing; broken ones give 'syntax'.
 */
export function parsePath(arg: string, opts: PathOptions): ParsedPath | PathError {
  let i = 0;
  while (arg.charCodeAt(i) === 32) i++;
  let inside: string;
  let end: number;
  if (arg.charCodeAt(i) === 60 /* < */) {
    const close = closingBracket(arg, i + 1);
    if (close < 0) return 'syntax';
    inside = arg.slice(i + 1, close);
    end = close + 1;
  } else {
    end = arg.indexOf(' ', i);
    if (end < 0) end = arg.length;
    inside = arg.slice(i, end);
    // `a@b>` is half a bracket pair; a bare path carries no brackets at all.
    if (inside === '' || inside.includes('<') || inside.includes('>')) return 'syntax';
  }
  if (end < arg.length && arg.charCodeAt(end) !== 32) return 'syntax'; // `<a@b>>`, `<a@b>X`
  const params = trimSP(arg.slice(end));

  if (inside === '') return opts.allowNull ? { address: '', params } : 'syntax';

  const octets = utf8Octets(inside);
  if (octets < 0 || octets > MAX_PATH_INSIDE) return 'syntax';
  // Non-ASCII may not hide white space or invisible characters (NBSP, U+3000, zero-width and
  // bidi controls): an address that looks like another is a spoofing tool.
  if (octets !== inside.length && INVISIBLE.test(inside)) return 'syntax';

  let mailbox = inside;
  if (inside.charCodeAt(0) === 64 /* @ */) {
    // A-d-l = At-domain *( "," At-domain ) ":" ; At-domain = "@" Domain. No ":" in a Domain,
    // so the first one ends the route.
    const colon = inside.indexOf(':');
    if (colon < 0) return 'syntax';
    for (const hop of inside.slice(0, colon).split(',')) {
      if (hop.charCodeAt(0) !== 64 || !isDomain(hop.slice(1))) return 'syntax';
    }
    mailbox = inside.slice(colon + 1);
  }
  if (!isMailbox(mailbox, opts.allowPostmaster)) return 'syntax';
  // UTF-8 octets outnumber UTF-16 units only when something is non-ASCII.
  if (!opts.utf8 && octets !== inside.length) return 'utf8';
  return { address: mailbox, params };
}

/** The text after `FROM:` / `TO:` (keyword case-insensitive, no space before the colon, as in
 *  §4.1.1.2 "MAIL FROM:" and §4.1.1.3 "RCPT TO:"), or null when the keyword is not there. */
export function afterKeyword(arg: string, keyword: 'FROM' | 'TO'): string | null {
  const re = keyword === 'FROM' ? FROM_COLON : TO_COLON;
  return re.test(arg) ? arg.slice(keyword.length + 1) : null;
}

/**
 * Parses ESMTP parameters (§4.1.2 Mail-parameters / Rcpt-parameters: esmtp-param *(SP
 * esmtp-param)); runs of spaces are tolerated. null on a syntax error: a bad keyword, an empty
 * or bad value, a control character, or a keyword given twice (§4.1.1.11 leaves duplicates
 * undefined; refusing them stops a client steering which copy a handler sees). '' → [].
 */
export function parseParams(text: string, utf8: boolean): EsmtpParam[] | null {
  const out: EsmtpParam[] = [];
  if (text === '') return out;
  const seen = new Set<string>();
  const valueRe = utf8 ? ESMTP_VALUE_UTF8 : ESMTP_VALUE;
  for (const token of text.split(' ')) {
    if (token === '') continue;
    const eq = token.indexOf('=');
    const keyword = eq < 0 ? token : token.slice(0, eq);
    const value = eq < 0 ? null : token.slice(eq + 1);
    if (!ESMTP_KEYWORD.test(keyword)) return null;
    if (value !== null && (!valueRe.test(value) || (utf8 && utf8Octets(value) < 0))) return null;
    const upper = keyword.toUpperCase();
    if (seen.has(upper)) return null;
    seen.add(upper);
    out.push({ keyword: upper, value });
  }
  return out;
}

/** Splits a command line (decoded, CRLF removed) into the upper-cased verb and its argument
 *  (after the first SP, spaces trimmed; '' when none). null when the verb is not 1..20 of
 *  letter, then letters, digits or "-" (§4.1.1: verbs are alphabetic, case-insensitive). */
export function parseCommand(line: string): { verb: string; arg: string } | null {
  const sp = line.indexOf(' ');
  const verb = sp < 0 ? line : line.slice(0, sp);
  if (!VERB.test(verb)) return null;
  return { verb: verb.toUpperCase(), arg: sp < 0 ? '' : trimSP(line.slice(sp + 1)) };
}

/**
 * The HELO/EHLO name: the first SP-separated token of the argument (§4.1.1.1 wants a Domain or
 * address-literal; any printable ASCII token is taken, since real clients send names with
 * underscores and the like, and text after the first token is ignored). null when there is no
 * token or it holds anything outside %d33-126 (controls, NUL, non-ASCII).
 */
export function heloName(arg: string): string | null {
  let i = 0;
  while (arg.charCodeAt(i) === 32) i++;
  let end = arg.indexOf(' ', i);
  if (end < 0) end = arg.length;
  if (end === i) return null;
  for (let j = i; j < end; j++) {
    const c = arg.charCodeAt(j);
    if (c < 33 || c > 126) return null;
  }
  return arg.slice(i, end);
}

/** A SIZE value (RFC 1870 §3: size-value = 1*20DIGIT) as a number; above
 *  Number.MAX_SAFE_INTEGER it is Infinity (too big for any limit anyway). null when malformed. */
export function parseSize(value: string | null): number | null {
  if (value === null || !SIZE_DIGITS.test(value)) return null;
  const n = Number(value);
  return n > Number.MAX_SAFE_INTEGER ? Infinity : n;
}
