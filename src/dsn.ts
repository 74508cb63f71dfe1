/**
 * Pure parsing of the Delivery Status Notification parameters of RFC 3461 §4: RET and ENVID on
 * MAIL FROM, NOTIFY and ORCPT on RCPT TO, with RFC 6533 §3's `utf-8` ORCPT address type. Values
 * come in as the engine's parameter parser left them (keyword upper-cased, value as sent) and
 * leave typed, or as a DsnError that carries the reply to send. No sockets, no state.
 */
import { parsePath } from './parse.js';
import { decodeXtextBytes, encodeXtext } from './xtext.js';

export { decodeXtext, decodeXtextBytes, encodeXtext } from './xtext.js';

export type DsnRet = 'FULL' | 'HDRS';
export type DsnNotifyCondition = 'SUCCESS' | 'FAILURE' | 'DELAY';
/** `'NEVER'`, or the conditions asked for, each once, in the order the client gave them. */
export type DsnNotify = 'NEVER' | readonly DsnNotifyCondition[];

/** RFC 3461 §4.2 ORCPT: `addr-type ";" xtext`. */
export interface DsnOrcpt {
  /** The address type as sent (`rfc822`, `utf-8`, or another registered atom); compare it case-insensitively. */
  readonly addrType: string;
  /** The original recipient, decoded (for `utf-8`: with RFC 6533's `\x{...}` escapes undone). */
  readonly address: string;
  /** The encoded value after `;`, as received: what a relay passes on unchanged. */
  readonly encoded: string;
}

/** MAIL FROM's DSN parameters, typed. */
export interface DsnMailOptions {
  ret?: DsnRet;
  /** Decoded from xtext. */
  envid?: string;
}

/** RCPT TO's DSN parameters, typed. */
export interface DsnRcptOptions {
  notify?: DsnNotify;
  orcpt?: DsnOrcpt;
}

/**
 * A DSN parameter the server must refuse: 501 for a bad value or a repeated parameter
 * (RFC 5321 §4.2.2 "syntax error in parameters"), 555 for a parameter the command does not take
 * (RFC 5321 §4.1.1.11).
 */
export class DsnError extends Error {
  override name = 'DsnError';
  readonly code: 501 | 555;
  readonly enhanced: string;
  constructor(code: 501 | 555, message: string, enhanced = '5.5.4') {
    super(message);
    this.code = code;
    this.enhanced = enhanced;
  }
  /** The reply line: `501 5.5.4 Error: ...`. */
  get reply(): string {
    return `${this.code} ${this.enhanced} Error: ${this.message}`;
  }
}

/** RFC 3461 §4.4: at most 100 characters (counted decoded, as Postfix does). */
export const MAX_ENVID = 100;
/** RFC 3461 §4.2: the original recipient address, decoded, at most 500 characters. */
export const MAX_ORCPT = 500;

const MAIL_KEYWORDS = new Set(['RET', 'ENVID']);
const RCPT_KEYWORDS = new Set(['NOTIFY', 'ORCPT']);
const CONDITIONS = new Set<string>(['SUCCESS', 'FAILURE', 'DELAY']);
/** RFC 5322 §3.2.3 atom = 1*atext. */
const ATOM = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+$/;
/** "printable (graphic and white space) characters from the US-ASCII repertoire" (§4.2, §4.4). */
const PRINTABLE = /^[\x20-\x7e]*$/;
/** RFC 6533 §3 QCHAR: printable ASCII but `\`, `+`, `=`; QUCHAR adds UTF-8 (only with SMTPUTF8). */
const QCHARS = /^[\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]+$/;
const QUCHARS = /^[\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e\u0080-\uffff]+$/;
/** RFC 6533 §3 EmbeddedUnicodeChar `\x{HEXPOINT}`: 2 to 6 hex digits. */
const EMBEDDED = /\\x\{([0-9A-Fa-f]{2,6})\}/g;

/** True for a keyword this module parses on that command. */
export function isDsnKeyword(command: 'MAIL' | 'RCPT', keyword: string): boolean {
  return (command === 'MAIL' ? MAIL_KEYWORDS : RCPT_KEYWORDS).has(keyword.toUpperCase());
}

function bad(keyword: string): DsnError {
  return new DsnError(501, `bad ${keyword} parameter syntax`);
}

/** RET=FULL|HDRS (§4.3), case-insensitive as every ESMTP keyword value of fixed spelling. */
export function parseRet(value: string | null): DsnRet {
  const v = value?.toUpperCase();
  if (v !== 'FULL' && v !== 'HDRS') throw bad('RET');
  return v;
}

/** ENVID=xtext (§4.4): decoded, printable US-ASCII, at most MAX_ENVID characters. */
export function parseEnvid(value: string | null): string {
  const bytes = value === null || value === '' ? null : decodeXtextBytes(value);
  if (bytes === null) throw bad('ENVID');
  const text = bytes.toString('latin1');
  if (!PRINTABLE.test(text)) throw bad('ENVID');
  if (text.length > MAX_ENVID) throw new DsnError(501, `ENVID longer than ${MAX_ENVID} characters`);
  return text;
}

/** NOTIFY=NEVER, or a comma list of SUCCESS, FAILURE, DELAY (§4.1); NEVER combines with nothing and no condition comes twice. */
export function parseNotify(value: string | null): DsnNotify {
  if (value === null || value === '') throw bad('NOTIFY');
  const items = value.toUpperCase().split(',');
  if (items.length === 1 && items[0] === 'NEVER') return 'NEVER';
  const out: DsnNotifyCondition[] = [];
  for (const item of items) {
    if (!CONDITIONS.has(item) || out.includes(item as DsnNotifyCondition)) throw bad('NOTIFY');
    out.push(item as DsnNotifyCondition);
  }
  return out;
}

/** A mailbox by RFC 5321 §4.1.2 (RFC 6531's with utf8): no source route, no null path, `Postmaster` allowed. */
function isMailbox(address: string, utf8: boolean): boolean {
  const parsed = parsePath(`<${address}>`, { allowNull: false, allowPostmaster: true, utf8 });
  return typeof parsed !== 'string' && parsed.params === '' && parsed.address === address;
}

/** RFC 6533 §3: undoes `\x{...}`; null for a malformed escape, a surrogate or a value past U+10FFFF. */
function decodeUtf8Addr(text: string, unitext: boolean): string | null {
  let failed = false;
  const rest = text.replace(EMBEDDED, '');
  if (rest !== '' && !(unitext ? QUCHARS : QCHARS).test(rest)) return null;
  const decoded = text.replace(EMBEDDED, (_m, hex: string) => {
    const cp = Number.parseInt(hex, 16);
    // The 2-digit form is for ASCII; longer forms may not pad with zeros.
    if ((hex.length > 2 && hex[0] === '0') || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) failed = true;
    return failed ? '' : String.fromCodePoint(cp);
  });
  return failed ? null : decoded;
}

export interface OrcptOptions {
  /** SMTPUTF8 is in effect for the transaction: the `utf-8` type may carry UTF-8 itself (RFC 6533 utf-8-addr-unitext). */
  utf8?: boolean;
}

/**
 * ORCPT=addr-type;xtext (§4.2). `rfc822` must hold a mailbox (ASCII); `utf-8` (RFC 6533) one
 * under RFC 6531; another type is kept as printable text, unchecked, for a relay to pass on.
 */
export function parseOrcpt(value: string | null, options: OrcptOptions = {}): DsnOrcpt {
  const semi = value === null ? -1 : value.indexOf(';');
  if (value === null || semi < 1) throw bad('ORCPT');
  const addrType = value.slice(0, semi);
  const encoded = value.slice(semi + 1);
  if (!ATOM.test(addrType) || encoded === '') throw bad('ORCPT');
  let address: string | null;
  if (addrType.toLowerCase() === 'utf-8') {
    address = decodeUtf8Addr(encoded, options.utf8 === true);
    if (address !== null && !isMailbox(address, true)) address = null;
  } else {
    const bytes = decodeXtextBytes(encoded);
    address = bytes === null ? null : bytes.toString('latin1');
    if (address !== null && !PRINTABLE.test(address)) address = null;
    if (address !== null && addrType.toLowerCase() === 'rfc822' && !isMailbox(address, false)) address = null;
  }
  if (address === null) throw bad('ORCPT');
  if (address.length > MAX_ORCPT) throw new DsnError(501, `ORCPT longer than ${MAX_ORCPT} characters`);
  return { addrType, address, encoded };
}

/** One ESMTP parameter as the engine's parser gives it (keyword upper-cased, null without `=`). */
export interface DsnParam {
  keyword: string;
  value: string | null;
}

/** For each option of T, the parser of its keyword's value (the keyword is the option's name upper-cased). */
type DsnParsers<T> = { readonly [K in keyof T]-?: (value: string | null) => NonNullable<T[K]> };

/**
 * The loop both commands share: a keyword of the other command is a 555, one given twice a 501,
 * one of `parsers` is parsed into its option, and any other is left to the caller.
 */
function pickDsn<T extends object>(
  params: readonly DsnParam[],
  foreign: ReadonlySet<string>,
  foreignCommand: string,
  parsers: DsnParsers<T>,
): T {
  const out: Partial<Record<keyof T, unknown>> = {};
  for (const { keyword, value } of params) {
    const k = keyword.toUpperCase();
    if (foreign.has(k)) throw new DsnError(555, `${k} is a ${foreignCommand} parameter`);
    const option = k.toLowerCase();
    if (!Object.hasOwn(parsers, option)) continue;
    const key = option as keyof T;
    if (out[key] !== undefined) throw new DsnError(501, `${k} given twice`);
    out[key] = parsers[key](value);
  }
  return out as T;
}

/**
 * Picks RET and ENVID out of MAIL FROM's parameters. NOTIFY or ORCPT there is a 555 (they are
 * RCPT parameters); a parameter given twice is a 501. Other parameters are left to the caller.
 */
export function parseMailDsn(params: readonly DsnParam[]): DsnMailOptions {
  return pickDsn<DsnMailOptions>(params, RCPT_KEYWORDS, 'RCPT TO', { ret: parseRet, envid: parseEnvid });
}

/** Picks NOTIFY and ORCPT out of RCPT TO's parameters, as parseMailDsn does for MAIL FROM. */
export function parseRcptDsn(params: readonly DsnParam[], options: OrcptOptions = {}): DsnRcptOptions {
  return pickDsn<DsnRcptOptions>(params, MAIL_KEYWORDS, 'MAIL FROM', {
    notify: parseNotify,
    orcpt: (value) => parseOrcpt(value, options),
  });
}

/** The MAIL FROM parameters for a relay: ` RET=... ENVID=...` (with the leading space), or ''. */
export function formatMailDsn(options: DsnMailOptions): string {
  let out = '';
  if (options.ret !== undefined) out += ` RET=${options.ret}`;
  if (options.envid !== undefined) out += ` ENVID=${encodeXtext(options.envid)}`;
  return out;
}

/** The RCPT TO parameters for a relay: ` NOTIFY=... ORCPT=...`, or ''. ORCPT goes on as received (§4.2 says not to re-encode it). */
export function formatRcptDsn(options: DsnRcptOptions): string {
  let out = '';
  if (options.notify !== undefined) out += ` NOTIFY=${options.notify === 'NEVER' ? 'NEVER' : options.notify.join(',')}`;
  if (options.orcpt !== undefined) out += ` ORCPT=${options.orcpt.addrType};${options.orcpt.encoded}`;
  return out;
}
