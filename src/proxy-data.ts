/** What a PROXY protocol header says, and the parse result and size limits the parsers share. */

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

export const INCOMPLETE: ProxyParse = Object.freeze({ status: 'incomplete' }) as ProxyParse;

export function invalid(reason: string): ProxyParse {
  return { status: 'invalid', reason };
}
