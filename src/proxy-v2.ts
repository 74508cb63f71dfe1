/** PROXY protocol v2: the binary header, its address block and TLVs (SSL sub-TLVs, CRC32C). Pure. */
import { crc32cUpdate } from './crc32c.js';
import { formatIPv6 } from './ip-text.js';
import { INCOMPLETE, PROXY_V2_MAX, PROXY_V2_SIGNATURE, invalid, type ProxyData, type ProxyParse } from './proxy-data.js';

const PP2_TYPE_ALPN = 0x01;
const PP2_TYPE_AUTHORITY = 0x02;
const PP2_TYPE_CRC32C = 0x03;
const PP2_TYPE_UNIQUE_ID = 0x05;
const PP2_TYPE_SSL = 0x20;
const PP2_SUBTYPE_SSL_VERSION = 0x21;
const PP2_SUBTYPE_SSL_CN = 0x22;
const PP2_SUBTYPE_SSL_CIPHER = 0x23;
const PP2_SUBTYPE_SSL_SIG_ALG = 0x24;
const PP2_SUBTYPE_SSL_KEY_ALG = 0x25;
const PP2_TYPE_NETNS = 0x30;

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

export function parseV2(buf: Buffer): ProxyParse {
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
  let crcAt = -1;
  const err = eachTLV(buf, start, end, 'TLV', (type) => SINGLETON_TLVS.has(type), (type, raw, vstart) => {
    const vlen = raw.length;
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
      case PP2_TYPE_SSL:
        return parseSSL(raw, data);
      case PP2_TYPE_NETNS:
        data.netns = raw.toString('latin1');
        break;
      default:
        break; // NOOP (0x04) and unknown types: kept raw only
    }
    return null;
  });
  if (err !== null) return err;
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
  const single = (type: number) => type >= PP2_SUBTYPE_SSL_VERSION && type <= PP2_SUBTYPE_SSL_KEY_ALG;
  const err = eachTLV(v, 5, v.length, 'SSL sub-TLV', single, (type, raw) => {
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
    return null;
  });
  if (err !== null) return err;
  data.ssl = ssl;
  return null;
}

/**
 * Walks the type-length-value entries in buf[start, end): a truncated one, or a second one of a
 * type `single` says may occur once, is an error; so is what `each` returns for one.
 */
function eachTLV(
  buf: Buffer,
  start: number,
  end: number,
  what: 'TLV' | 'SSL sub-TLV',
  single: (type: number) => boolean,
  each: (type: number, raw: Buffer, vstart: number) => string | null,
): string | null {
  const seen = new Set<number>();
  let pos = start;
  while (pos < end) {
    if (end - pos < 3) return `PROXY v2: truncated ${what}`;
    const type = buf[pos]!;
    const vlen = buf.readUInt16BE(pos + 1);
    const vstart = pos + 3;
    if (vstart + vlen > end) return `PROXY v2: truncated ${what}`;
    if (single(type)) {
      if (seen.has(type)) return `PROXY v2: duplicate ${what} 0x${hex2(type)}`;
      seen.add(type);
    }
    const err = each(type, buf.subarray(vstart, vstart + vlen), vstart);
    if (err !== null) return err;
    pos = vstart + vlen;
  }
  return null;
}

function hex2(n: number): string {
  return n.toString(16).toUpperCase().padStart(2, '0');
}
