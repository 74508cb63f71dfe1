/**
 * Pure parsing of Postfix's XCLIENT command (https://www.postfix.org/XCLIENT_README.html): a
 * trusted proxy or filter in front of us names the original client, so the handler sees it.
 */
import { BlockList, isIP, isIPv6 } from 'node:net';
import { decodeXtext } from './xtext.js';

export { decodeXtext };

export const XCLIENT_ATTRIBUTES = ['NAME', 'ADDR', 'PORT', 'PROTO', 'HELO', 'LOGIN', 'DESTADDR', 'DESTPORT'] as const;
export type XClientAttribute = (typeof XCLIENT_ATTRIBUTES)[number];

/** What the XCLIENT command said; `null` for [UNAVAILABLE] / [TEMPUNAVAIL]. */
export type XClientData = Partial<Record<XClientAttribute, string | null>>;

/** Parses `NAME=x ADDR=y ...`; null on any syntax error or unknown attribute. */
export function parseXclient(arg: string): XClientData | null {
  if (arg === '') return null;
  const data: XClientData = {};
  for (const item of arg.split(' ')) {
    const eq = item.indexOf('=');
    if (eq <= 0) return null;
    const name = item.slice(0, eq).toUpperCase() as XClientAttribute;
    if (!XCLIENT_ATTRIBUTES.includes(name) || name in data) return null;
    const value = decodeXtext(item.slice(eq + 1));
    if (value === null) return null;
    if (value === '[UNAVAILABLE]' || value === '[TEMPUNAVAIL]') {
      data[name] = null;
      continue;
    }
    if (name === 'ADDR' || name === 'DESTADDR') {
      const address = value.replace(/^IPV6:/i, '');
      if (isIP(address) === 0) return null;
      data[name] = address;
    } else if (name === 'PORT' || name === 'DESTPORT') {
      if (!/^[0-9]{1,5}$/.test(value) || Number(value) > 65535) return null;
      data[name] = value;
    } else if (name === 'PROTO') {
      if (!/^E?SMTP$/i.test(value)) return null;
      data[name] = value.toUpperCase();
    } else {
      if (/[\x00-\x1f\x7f-\x9f]/.test(value)) return null; // C0 and C1 controls
      data[name] = value;
    }
  }
  return data;
}

/** Allow-lists built once per option array. */
const blockLists = new WeakMap<string[], BlockList>();
export function allowListOf(entries: string[]): BlockList {
  let list = blockLists.get(entries);
  if (list !== undefined) return list;
  list = new BlockList();
  for (const entry of entries) {
    const [address, bits] = entry.split('/');
    const type = isIPv6(address!) ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(address!, type);
    else list.addSubnet(address!, Number(bits), type);
  }
  blockLists.set(entries, list);
  return list;
}

