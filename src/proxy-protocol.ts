/**
 * PROXY protocol v1 (text) and v2 (binary) header parsing, after HAProxy's proxy-protocol.txt.
 *
 * Pure: Buffers in, values out; no sockets, no timers. The caller feeds everything received so far
 * on a connection (from its first byte) to `parseProxyHeader` and gets one of three answers:
 *
 * - `incomplete`: the bytes so far are a prefix of a header that could still be valid; read more.
 *   Never returned for input at least as long as the version's maximum header size, so a caller
 *   that buffers at most `PROXY_V2_MAX` bytes can never be stalled by the parser.
 * - `ok`: `length` bytes form a valid header; anything after them is the client's SMTP traffic.
 * - `invalid`: the bytes cannot begin a valid header. Decided as early as possible: a v1 line is
 *   rejected at the first byte that no valid header could have there; a v2 header at the first bad
 *   signature byte, version, command, family or length field, and otherwise once it is complete.
 *
 * Strictness, beyond the text of the spec, where it leaves room:
 * - v1: exactly one space between fields; IPv4 as a dotted quad without leading zeros; IPv6 in the
 *   RFC 4291 textual form (with an optional trailing dotted quad, no zone id); ports decimal
 *   0..65535 without leading zeros; CR and LF only as the final CRLF. `PROXY UNKNOWN` may be
 *   followed by a space and anything else (but CR or LF) up to the CRLF, which is ignored.
 * - v2: only the seven family/protocol bytes the spec lists (0x00, 0x11, 0x12, 0x21, 0x22, 0x31,
 *   0x32) are accepted with PROXY; with LOCAL the byte is ignored as the spec says (reported as
 *   `UNKNOWN` when it is none of those). The TLV area must parse exactly, recursively for the SSL
 *   TLV; a singleton TLV type (every known type but NOOP) appearing twice is invalid, as are a
 *   CRC32C TLV that is not 4 bytes or does not match, a UNIQUE_ID over 128 bytes, an SSL TLV
 *   shorter than 5 bytes, and an AUTHORITY or SSL CN that is not valid UTF-8.
 *
 * Addresses are returned as strings: IPv4 dotted quad, IPv6 in the same canonical form Node
 * gives `socket.remoteAddress` (lowercase, longest zero run compressed, `::ffff:a.b.c.d` for
 * IPv4-mapped), UNIX paths up to their first NUL. LOCAL headers carry no addresses (null).
 */

export interface ProxyTLV {
  type: number;
  value: Buffer;
}

export interface ProxyData {
  version: 1 | 2;
  /** v1 is always PROXY (a `PROXY UNKNOWN` line has family 'UNKNOWN'). */
  command: 'PROXY' | 'LOCAL';
  family: 'TCP4' | 'TCP6' | 'UNIX' | 'UNKNOWN' | 'UDP4' | 'UDP6';
  srcAddress: string | null;
  dstAddress: string | null;
  srcPort: number | null;
  dstPort: number | null;
  /** Every top-level v2 TLV, raw, in order (the SSL TLV's value still holds its sub-TLVs). */
  tlvs: ProxyTLV[];
  alpn?: Buffer;
  authority?: string;
  uniqueId?: Buffer;
  netns?: string;
  ssl?: {
    client: number;
    verify: number;
    version?: string;
    cipher?: string;
    sigAlg?: string;
    keyAlg?: string;
    cn?: string;
  };
  /** Present when a CRC32C TLV was present; a mismatch makes the header invalid, so always true. */
  crc32cValid?: boolean;
}

export type ProxyParse =
  | { status: 'incomplete' }
  | { status: 'ok'; data: ProxyData; length: number }
  | { status: 'invalid'; reason: string };

/** The longest v1 header, CRLF included (HAProxy's spec). */
export const PROXY_V1_MAX = 107;

/**
 * The longest v2 header we accept: the 16-byte fixed part plus 4096 bytes of addresses and TLVs.
 * The protocol allows 16 + 65535, but nothing real comes near it: the largest address block is
 * 216 bytes (UNIX) and HAProxy's standard TLVs at their largest (ALPN and AUTHORITY under 256
 * bytes each, UNIQUE_ID at most 128, an SSL TLV with version, cipher, algorithms and a CN,
 * CRC32C, NETNS) sum to well under 2 KB, leaving room for cloud load balancers' custom TLVs
 * (AWS 0xEA, Azure 0xEE, GCP 0xE0) and `set-proxy-v2-tlv-fmt`. Capping it bounds what a peer
 * can make the server buffer before any SMTP is spoken, and lets a caller keep a fixed-size buffer.
 */
export const PROXY_V2_MAX = 16 + 4096;

/** The 12-byte v2 signature. */
export const PROXY_V2_SIGNATURE: Buffer = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);

export const PP2_TYPE_ALPN = 0x01;
export const PP2_TYPE_AUTHORITY = 0x02;
export const PP2_TYPE_CRC32C = 0x03;
export const PP2_TYPE_NOOP = 0x04;
export const PP2_TYPE_UNIQUE_ID = 0x05;
export const PP2_TYPE_SSL = 0x20;
export const PP2_SUBTYPE_SSL_VERSION = 0x21;
export const PP2_SUBTYPE_SSL_CN = 0x22;
export const PP2_SUBTYPE_SSL_CIPHER = 0x23;
export const PP2_SUBTYPE_SSL_SIG_ALG = 0x24;
export const PP2_SUBTYPE_SSL_KEY_ALG = 0x25;
export const PP2_TYPE_NETNS = 0x30;

// ---- CRC32C (Castagnoli, reflected polynomial 0x82F63B78) -------------------------------------

const CRC32C_TABLE: Uint32Array = (() => {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[i] = c >>> 0;
  }
  return table;
})();

/** Feeds bytes into a running (pre-inverted) CRC32C state. */
function crc32cUpdate(state: number, buf: Uint8Array, start: number, end: number): number {
  let c = state;
  for (let i = start; i < end; i++) c = CRC32C_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return c;
}

/** CRC32C of `buf` (as used by the PP2_TYPE_CRC32C TLV). CRC32C("123456789") is 0xE3069283. */
export function crc32c(buf: Uint8Array): number {
  return ~crc32cUpdate(0xffffffff, buf, 0, buf.length) >>> 0;
}

// ---- entry point ------------------------------------------------------------------------------

export function parseProxyHeader(buf: Buffer): ProxyParse {
  if (buf.length === 0) return INCOMPLETE;
  const first = buf[0];
  if (first === 0x50 /* P */) return parseV1(buf);
  if (first === 0x0d /* CR */) return parseV2(buf);
  return invalid('not a PROXY header (first byte is neither "P" nor CR)');
}

const INCOMPLETE: ProxyParse = Object.freeze({ status: 'incomplete' }) as ProxyParse;

function invalid(reason: string): ProxyParse {
  return { status: 'invalid', reason };
}

// ---- v1 ---------------------------------------------------------------------------------------

const V1_SIGNATURE = 'PROXY ';

type Scan = 'valid' | 'prefix' | 'invalid';

function parseV1(buf: Buffer): ProxyParse {
  const n = Math.min(buf.length, PROXY_V1_MAX);
  for (let i = 0; i < V1_SIGNATURE.length && i < n; i++) {
    if (buf[i] !== V1_SIGNATURE.charCodeAt(i)) return invalid('PROXY v1: bad signature');
  }
  // The line ends at the first CR, which must be followed by LF; a bare LF is never accepted.
  let cr = -1;
  for (let i = V1_SIGNATURE.length; i < n; i++) {
    const c = buf[i];
    if (c === 0x0d) {
      cr = i;
      break;
    }
    if (c === 0x0a) return invalid('PROXY v1: LF without CR');
  }
  if (cr < 0) {
    // The CR must sit at index PROXY_V1_MAX - 2 at the latest.
    if (buf.length >= PROXY_V1_MAX - 1) return invalid('PROXY v1: no CRLF within 107 bytes');
    if (buf.length <= V1_SIGNATURE.length) return INCOMPLETE;
    const r = v1Body(buf.toString('latin1', V1_SIGNATURE.length, buf.length), false);
    return typeof r === 'string' ? invalid(r) : INCOMPLETE;
  }
  if (cr > PROXY_V1_MAX - 2) return invalid('PROXY v1: no CRLF within 107 bytes');
  const r = v1Body(buf.toString('latin1', V1_SIGNATURE.length, cr), true);
  if (typeof r === 'string') return invalid(r);
  if (cr + 1 >= buf.length) return INCOMPLETE; // CR seen, LF not yet
  if (buf[cr + 1] !== 0x0a) return invalid('PROXY v1: CR without LF');
  return { status: 'ok', data: r as ProxyData, length: cr + 2 };
}

const V1_PROTOCOLS = ['TCP4', 'TCP6', 'UNKNOWN'];

/**
 * Checks the part of a v1 line after "PROXY " (without the CRLF). `complete` says the line ended;
 * otherwise `body` is what has arrived so far and must be a prefix of some valid line. Returns
 * an error message, `null` for a viable prefix, or the data of a complete valid line.
 */
function v1Body(body: string, complete: boolean): ProxyData | null | string {
  const fields = body.split(' ');
  const proto = fields[0]!;
  if (proto === 'UNKNOWN') {
    // Anything may follow after a space; CR and LF cannot occur here (the caller stopped there).
    if (!complete) return null;
    return v1Data('UNKNOWN', null, null, null, null);
  }
  if (fields.length === 1 && !complete) {
    return V1_PROTOCOLS.some((p) => p.startsWith(proto)) ? null : 'PROXY v1: unknown protocol';
  }
  if (proto !== 'TCP4' && proto !== 'TCP6') return 'PROXY v1: unknown protocol';
  if (fields.length > 5) return 'PROXY v1: too many fields';
  if (complete && fields.length < 5) return 'PROXY v1: missing fields';
  const v6 = proto === 'TCP6';
  const last = fields.length - 1;
  let src: string | null = null;
  let dst: string | null = null;
  const ports: number[] = [];
  for (let i = 1; i < fields.length; i++) {
    const f = fields[i]!;
    const partial = !complete && i === last;
    if (i <= 2) {
      let state: Scan;
      let text: string | null = null;
      if (v6) {
        const r = scanIPv6(f);
        state = r.state;
        if (r.bytes) text = formatIPv6(r.bytes);
      } else {
        state = scanIPv4(f);
        text = f;
      }
      if (state === 'invalid' || (state === 'prefix' && !partial)) {
        return f === '' ? 'PROXY v1: empty field' : `PROXY v1: bad ${v6 ? 'IPv6' : 'IPv4'} address`;
      }
      if (i === 1) src = text;
      else dst = text;
    } else {
      const state = scanPort(f);
      if (state === 'invalid' || (state === 'prefix' && !partial)) {
        return f === '' ? 'PROXY v1: empty field' : 'PROXY v1: bad port';
      }
      ports.push(Number(f));
    }
  }
  if (!complete) return null;
  return v1Data(proto, src, dst, ports[0]!, ports[1]!);
}

function v1Data(
  family: 'TCP4' | 'TCP6' | 'UNKNOWN',
  srcAddress: string | null,
  dstAddress: string | null,
  srcPort: number | null,
  dstPort: number | null,
): ProxyData {
  return { version: 1, command: 'PROXY', family, srcAddress, dstAddress, srcPort, dstPort, tlvs: [] };
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

/** Decimal 0..65535 without leading zeros. '' is a prefix; a valid number is never merely one. */
function scanPort(s: string): Scan {
  if (s === '') return 'prefix';
  if (s.length > 5) return 'invalid';
  for (let i = 0; i < s.length; i++) if (!isDigit(s.charCodeAt(i))) return 'invalid';
  if (s.length > 1 && s.charCodeAt(0) === 0x30) return 'invalid';
  return Number(s) <= 65535 ? 'valid' : 'invalid';
}

/** Dotted quad, each octet 0..255 without leading zeros. */
function scanIPv4(s: string): Scan {
  const parts = s.split('.');
  if (parts.length > 4) return 'invalid';
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (p === '') {
      if (i < parts.length - 1) return 'invalid';
      continue;
    }
    if (p.length > 3) return 'invalid';
    for (let k = 0; k < p.length; k++) if (!isDigit(p.charCodeAt(k))) return 'invalid';
    if (p.length > 1 && p.charCodeAt(0) === 0x30) return 'invalid';
    if (Number(p) > 255) return 'invalid';
  }
  return parts.length === 4 && parts[3] !== '' ? 'valid' : 'prefix';
}

function isH16(p: string): boolean {
  if (p.length < 1 || p.length > 4) return false;
  for (let i = 0; i < p.length; i++) if (!isHex(p.charCodeAt(i))) return false;
  return true;
}

/**
 * IPv6 in RFC 4291 §2.2 textual form: eight 1-4 digit hex groups, at most one "::" standing for
 * one or more zero groups, optionally ending in a dotted quad worth two groups. Also decides
 * whether an unfinished token can still become one. `bytes` is set when the state is 'valid'.
 */
function scanIPv6(s: string): { state: Scan; bytes?: Uint8Array } {
  const bad = { state: 'invalid' as const };
  if (s === '' || s === ':') return { state: 'prefix' };
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (!isHex(c) && c !== 0x3a /* : */ && c !== 0x2e /* . */) return bad;
  }
  const dbl = s.indexOf('::');
  if (dbl >= 0 && s.indexOf('::', dbl + 1) >= 0) return bad; // two "::", or ":::"
  const head = dbl >= 0 ? s.slice(0, dbl) : s;
  const tail = dbl >= 0 ? s.slice(dbl + 2) : null;
  const headParts = head === '' ? [] : head.split(':');
  const tailParts = tail === null || tail === '' ? [] : tail.split(':');
  // The piece being written last, if any (none when the text ends with "::").
  const all = [...headParts, ...tailParts];
  const lastPiece = dbl >= 0 ? (tailParts.length > 0 ? tailParts[tailParts.length - 1]! : null) : all[all.length - 1]!;
  const inner = lastPiece === null ? all : all.slice(0, -1);
  for (const p of inner) if (!isH16(p)) return bad;
  let groups = inner.length;
  let lastState: Scan;
  let v4 = false;
  if (lastPiece === null) {
    lastState = 'valid';
  } else if (lastPiece.includes('.')) {
    v4 = true;
    lastState = scanIPv4(lastPiece);
    if (lastState === 'invalid') return bad;
    groups += 2;
  } else if (lastPiece === '') {
    lastState = 'prefix'; // the text ends with a single ':'; a group (or a second ':') must follow
  } else {
    if (!isH16(lastPiece)) return bad;
    lastState = 'valid';
    groups += 1;
  }
  const maxGroups = dbl >= 0 ? 7 : 8;
  if (lastState === 'valid' && (dbl >= 0 ? groups <= 7 : groups === 8)) {
    const headWords = ipv6Words(headParts);
    const tailWords = ipv6Words(tailParts);
    const zeros = new Array<number>(8 - headWords.length - tailWords.length).fill(0);
    const words = [...headWords, ...zeros, ...tailWords];
    const bytes = new Uint8Array(16);
    for (let i = 0; i < 8; i++) {
      bytes[2 * i] = words[i]! >> 8;
      bytes[2 * i + 1] = words[i]! & 0xff;
    }
    return { state: 'valid', bytes };
  }
  // Not (yet) valid: can it still be completed?
  if (v4) {
    // Nothing can follow a dotted quad, so its group count is final.
    return (dbl >= 0 ? groups <= 7 : groups === 8) ? { state: 'prefix' } : bad;
  }
  // More groups can be appended (one is required after a trailing single ':').
  const need = lastPiece === '' ? 1 : 0;
  return groups + need <= maxGroups ? { state: 'prefix' } : bad;
}

/** The 16-bit words of checked IPv6 pieces (a dotted quad gives two). */
function ipv6Words(pieces: string[]): number[] {
  const words: number[] = [];
  for (const p of pieces) {
    if (p.includes('.')) {
      const o = p.split('.').map(Number);
      words.push((o[0]! << 8) | o[1]!, (o[2]! << 8) | o[3]!);
    } else {
      words.push(parseInt(p, 16));
    }
  }
  return words;
}

/**
 * IPv6 text as Node reports socket addresses (libuv's inet_ntop, after BIND's): lowercase hex,
 * the first longest run of two or more zero groups as "::", and a dotted quad for IPv4-mapped
 * (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) addresses.
 */
function formatIPv6(b: Uint8Array): string {
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push((b[2 * i]! << 8) | b[2 * i + 1]!);
  let bestBase = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i >= 2 && j - i > bestLen) {
      bestBase = i;
      bestLen = j - i;
    }
    i = j;
  }
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (bestBase >= 0 && i >= bestBase && i < bestBase + bestLen) {
      if (i === bestBase) out += ':';
      continue;
    }
    if (i !== 0) out += ':';
    if (i === 6 && bestBase === 0 && (bestLen === 6 || (bestLen === 5 && w[5] === 0xffff))) {
      out += `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
      return out;
    }
    out += w[i]!.toString(16);
  }
  if (bestBase >= 0 && bestBase + bestLen === 8) out += ':';
  return out;
}

// ---- v2 ---------------------------------------------------------------------------------------

type V2Family = ProxyData['family'];

/** The family/protocol bytes the spec defines, with their address block sizes. */
const V2_FAMILIES: ReadonlyMap<number, { family: V2Family; addrLen: number }> = new Map([
  [0x00, { family: 'UNKNOWN', addrLen: 0 }],
  [0x11, { family: 'TCP4', addrLen: 12 }],
  [0x12, { family: 'UDP4', addrLen: 12 }],
  [0x21, { family: 'TCP6', addrLen: 36 }],
  [0x22, { family: 'UDP6', addrLen: 36 }],
  [0x31, { family: 'UNIX', addrLen: 216 }],
  [0x32, { family: 'UNIX', addrLen: 216 }],
]);

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeUtf8(b: Uint8Array): string | null {
  try {
    return utf8.decode(b);
  } catch {
    return null;
  }
}

function parseV2(buf: Buffer): ProxyParse {
  const sigLen = PROXY_V2_SIGNATURE.length;
  for (let i = 0; i < sigLen && i < buf.length; i++) {
    if (buf[i] !== PROXY_V2_SIGNATURE[i]) return invalid('PROXY v2: bad signature');
  }
  if (buf.length <= 12) return INCOMPLETE;
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) return invalid('PROXY v2: unsupported version');
  const cmd = verCmd & 0x0f;
  if (cmd > 1) return invalid('PROXY v2: unsupported command');
  const local = cmd === 0;
  if (buf.length <= 13) return INCOMPLETE;
  const fam = V2_FAMILIES.get(buf[13]!);
  if (!fam && !local) return invalid('PROXY v2: unsupported address family or protocol');
  if (buf.length < 16) return INCOMPLETE;
  const len = buf.readUInt16BE(14);
  const total = 16 + len;
  if (total > PROXY_V2_MAX) return invalid(`PROXY v2: header longer than ${PROXY_V2_MAX} bytes`);
  if (fam && !local && len < fam.addrLen) return invalid('PROXY v2: address block truncated');
  if (buf.length < total) return INCOMPLETE;

  const data: ProxyData = {
    version: 2,
    command: local ? 'LOCAL' : 'PROXY',
    family: fam ? fam.family : 'UNKNOWN',
    srcAddress: null,
    dstAddress: null,
    srcPort: null,
    dstPort: null,
    tlvs: [],
  };
  // With LOCAL the address block is skipped; so is everything when its family is unknown or it
  // does not fit (the spec has the receiver ignore the family of a LOCAL header).
  let tlvStart = total;
  if (fam && len >= fam.addrLen) {
    tlvStart = 16 + fam.addrLen;
    if (!local) readAddresses(buf, buf[13]!, data);
  }
  const err = parseTLVs(buf, tlvStart, total, data);
  if (err !== null) return invalid(err);
  return { status: 'ok', data, length: total };
}

function readAddresses(buf: Buffer, famByte: number, data: ProxyData): void {
  const af = famByte >> 4;
  if (af === 1) {
    data.srcAddress = `${buf[16]}.${buf[17]}.${buf[18]}.${buf[19]}`;
    data.dstAddress = `${buf[20]}.${buf[21]}.${buf[22]}.${buf[23]}`;
    data.srcPort = buf.readUInt16BE(24);
    data.dstPort = buf.readUInt16BE(26);
  } else if (af === 2) {
    data.srcAddress = formatIPv6(buf.subarray(16, 32));
    data.dstAddress = formatIPv6(buf.subarray(32, 48));
    data.srcPort = buf.readUInt16BE(48);
    data.dstPort = buf.readUInt16BE(50);
  } else if (af === 3) {
    data.srcAddress = unixPath(buf, 16);
    data.dstAddress = unixPath(buf, 16 + 108);
  }
}

/** A sun_path: up to its NUL, or all 108 bytes when it has none. */
function unixPath(buf: Buffer, start: number): string {
  let end = buf.indexOf(0, start);
  if (end < 0 || end > start + 108) end = start + 108;
  return buf.toString('utf8', start, end);
}

const SINGLETON_TLVS = new Set([
  PP2_TYPE_ALPN,
  PP2_TYPE_AUTHORITY,
  PP2_TYPE_CRC32C,
  PP2_TYPE_UNIQUE_ID,
  PP2_TYPE_SSL,
  PP2_TYPE_NETNS,
]);

/** Parses the TLVs in buf[start, end) into `data`; returns an error message or null. */
function parseTLVs(buf: Buffer, start: number, end: number, data: ProxyData): string | null {
  const seen = new Set<number>();
  let crcAt = -1;
  let pos = start;
  while (pos < end) {
    if (end - pos < 3) return 'PROXY v2: truncated TLV';
    const type = buf[pos]!;
    const vlen = buf.readUInt16BE(pos + 1);
    const vstart = pos + 3;
    if (vstart + vlen > end) return 'PROXY v2: truncated TLV';
    if (SINGLETON_TLVS.has(type)) {
      if (seen.has(type)) return `PROXY v2: duplicate TLV 0x${hex2(type)}`;
      seen.add(type);
    }
    const raw = buf.subarray(vstart, vstart + vlen);
    const value = Buffer.from(raw); // a copy: the caller's buffer may be reused
    data.tlvs.push({ type, value });
    switch (type) {
      case PP2_TYPE_ALPN:
        data.alpn = value;
        break;
      case PP2_TYPE_AUTHORITY: {
        const s = decodeUtf8(raw);
        if (s === null) return 'PROXY v2: AUTHORITY is not UTF-8';
        data.authority = s;
        break;
      }
      case PP2_TYPE_CRC32C:
        if (vlen !== 4) return 'PROXY v2: CRC32C TLV is not 4 bytes';
        crcAt = vstart;
        break;
      case PP2_TYPE_UNIQUE_ID:
        if (vlen > 128) return 'PROXY v2: UNIQUE_ID longer than 128 bytes';
        data.uniqueId = value;
        break;
      case PP2_TYPE_SSL: {
        const err = parseSSL(raw, data);
        if (err !== null) return err;
        break;
      }
      case PP2_TYPE_NETNS:
        data.netns = raw.toString('latin1');
        break;
      default:
        break; // NOOP and unknown types: kept raw only
    }
    pos = vstart + vlen;
  }
  if (crcAt >= 0) {
    // CRC32C over the whole header with the checksum field taken as zeros.
    let c = crc32cUpdate(0xffffffff, buf, 0, crcAt);
    c = crc32cUpdate(c, ZERO4, 0, 4);
    c = crc32cUpdate(c, buf, crcAt + 4, end);
    if (~c >>> 0 !== buf.readUInt32BE(crcAt)) return 'PROXY v2: CRC32C mismatch';
    data.crc32cValid = true;
  }
  return null;
}

const ZERO4 = new Uint8Array(4);

function parseSSL(v: Buffer, data: ProxyData): string | null {
  if (v.length < 5) return 'PROXY v2: SSL TLV shorter than 5 bytes';
  const ssl: NonNullable<ProxyData['ssl']> = { client: v[0]!, verify: v.readUInt32BE(1) };
  const seen = new Set<number>();
  let pos = 5;
  while (pos < v.length) {
    if (v.length - pos < 3) return 'PROXY v2: truncated SSL sub-TLV';
    const type = v[pos]!;
    const vlen = v.readUInt16BE(pos + 1);
    const vstart = pos + 3;
    if (vstart + vlen > v.length) return 'PROXY v2: truncated SSL sub-TLV';
    const raw = v.subarray(vstart, vstart + vlen);
    if (type >= PP2_SUBTYPE_SSL_VERSION && type <= PP2_SUBTYPE_SSL_KEY_ALG) {
      if (seen.has(type)) return `PROXY v2: duplicate SSL sub-TLV 0x${hex2(type)}`;
      seen.add(type);
    }
    switch (type) {
      case PP2_SUBTYPE_SSL_VERSION:
        ssl.version = raw.toString('latin1');
        break;
      case PP2_SUBTYPE_SSL_CN: {
        const s = decodeUtf8(raw);
        if (s === null) return 'PROXY v2: SSL CN is not UTF-8';
        ssl.cn = s;
        break;
      }
      case PP2_SUBTYPE_SSL_CIPHER:
        ssl.cipher = raw.toString('latin1');
        break;
      case PP2_SUBTYPE_SSL_SIG_ALG:
        ssl.sigAlg = raw.toString('latin1');
        break;
      case PP2_SUBTYPE_SSL_KEY_ALG:
        ssl.keyAlg = raw.toString('latin1');
        break;
      default:
        break; // sub-types this module does not know are skipped
    }
    pos = vstart + vlen;
  }
  data.ssl = ssl;
  return null;
}

function hex2(n: number): string {
  return n.toString(16).toUpperCase().padStart(2, '0');
}
