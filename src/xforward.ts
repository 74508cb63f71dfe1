/**
 * Pure parsing of Postfix's XFORWARD command (https://www.postfix.org/XFORWARD_README.html): the
 * MTA in front of a content filter forwards what it knew of the original client (Internet ->
 * MTA1 -> filter -> MTA2), so the filter's trace headers and checks can name that client.
 */
import { isIP, isIPv6 } from 'node:net';
import { decodeXtextBytes } from './xtext.js';

export const XFORWARD_ATTRIBUTES = ['NAME', 'ADDR', 'PORT', 'PROTO', 'HELO', 'IDENT', 'SOURCE'] as const;
export type XForwardAttribute = (typeof XFORWARD_ATTRIBUTES)[number];

/**
 * What XFORWARD said, merged over a transaction's XFORWARD commands. An attribute absent was
 * never sent; `null` is [UNAVAILABLE] (or [TEMPUNAVAIL]): the MTA said it does not know.
 */
export interface XForwardData {
  /** The up-stream client's host name (perhaps a non-DNS name). */
  NAME?: string | null;
  /** Its network address, without `[]` or the `IPv6:` prefix; perhaps not an IP address. */
  ADDR?: string | null;
  /** Its TCP port. */
  PORT?: number | null;
  /** The protocol it spoke (SMTP, ESMTP, or a non-SMTP name of at most 64 characters). */
  PROTO?: string | null;
  /** The name it greeted with. */
  HELO?: string | null;
  /** The up-stream MTA's identifier of the message (its queue ID). */
  IDENT?: string | null;
  /** LOCAL for mail that came from the up-stream host itself, REMOTE for the rest. */
  SOURCE?: 'LOCAL' | 'REMOTE' | null;
}

/** One bad attribute (its name, or the whole item when no name could be read), or a bad command. */
export type XForwardParse = { ok: true; data: XForwardData } | { ok: false; attribute: string | null };

/** The README's limit for any value; PROTO has its own. */
const MAX_VALUE = 255;
const MAX_PROTO = 64;
/**
 * After xtext decoding a value has no control character, no non-ASCII character and no white
 * space (the README's note 1): printable ASCII only, so it cannot bend a header or a log line.
 */
const VALUE = /^[\x21-\x7e]+$/;

/** Parses `NAME=x ADDR=y ...` (names case-insensitive), each attribute at most once. */
export function parseXforward(arg: string): XForwardParse {
  if (arg === '') return { ok: false, attribute: null };
  const data: XForwardData = {};
  const seen = new Set<string>();
  for (const item of arg.split(' ')) {
    const eq = item.indexOf('=');
    if (eq <= 0) return { ok: false, attribute: null };
    const name = item.slice(0, eq).toUpperCase();
    if (!(XFORWARD_ATTRIBUTES as readonly string[]).includes(name) || seen.has(name)) return { ok: false, attribute: null };
    seen.add(name);
    const attribute = name as XForwardAttribute;
    const bytes = decodeXtextBytes(item.slice(eq + 1));
    const raw = bytes === null ? '' : bytes.toString('latin1');
    if (raw.length > MAX_VALUE || !VALUE.test(raw)) return { ok: false, attribute };
    if (raw === '[UNAVAILABLE]' || raw === '[TEMPUNAVAIL]') {
      data[attribute] = null;
      continue;
    }
    if (!setValue(data, attribute, raw)) return { ok: false, attribute };
  }
  return { ok: true, data };
}

/** Checks one value by its attribute's rule and stores it; false when it breaks the rule. */
function setValue(data: XForwardData, name: XForwardAttribute, value: string): boolean {
  switch (name) {
    case 'ADDR': {
      const ipv6 = /^IPv6:/i.test(value);
      const address = ipv6 ? value.slice(5) : value;
      // Without the prefix an address may be anything printable; with it, it must be IPv6.
      if (ipv6 && !isIPv6(address)) return false;
      if (address === '' || address.includes('[') || address.includes(']')) return false;
      data.ADDR = address;
      return true;
    }
    case 'PORT':
      if (!/^[0-9]{1,5}$/.test(value) || Number(value) > 65535) return false;
      data.PORT = Number(value);
      return true;
    case 'PROTO':
      if (value.length > MAX_PROTO) return false;
      data.PROTO = value;
      return true;
    case 'SOURCE': {
      const source = value.toUpperCase();
      if (source !== 'LOCAL' && source !== 'REMOTE') return false;
      data.SOURCE = source;
      return true;
    }
    default:
      data[name] = value;
      return true;
  }
}

/** The forwarded client's IP address, when XFORWARD gave one (a non-IP address is no address for SPF). */
export function forwardedIp(data: XForwardData | null): string | null {
  const address = data?.ADDR;
  return typeof address === 'string' && isIP(address) !== 0 ? address : null;
}
