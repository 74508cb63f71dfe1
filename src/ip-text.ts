/**
 * Strict textual IPv4, IPv6 and port scanning for the PROXY v1 line, which can also tell a
 * viable prefix from garbage (so a header is refused at its first impossible byte), and IPv6
 * formatting as Node reports socket addresses.
 */

/** 'prefix': not valid yet, but more characters could make it so. */
export type Scan = 'valid' | 'prefix' | 'invalid';

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

/** Decimal 0..65535 without leading zeros. '' is a prefix; a valid number is never merely one. */
export function scanPort(s: string): Scan {
  if (s === '') return 'prefix';
  if (s.length > 5) return 'invalid';
  for (let i = 0; i < s.length; i++) if (!isDigit(s.charCodeAt(i))) return 'invalid';
  if (s.length > 1 && s.charCodeAt(0) === 0x30) return 'invalid';
  return Number(s) <= 65535 ? 'valid' : 'invalid';
}

/** Dotted quad, each octet 0..255 without leading zeros. */
export function scanIPv4(s: string): Scan {
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
export function scanIPv6(s: string): { state: Scan; bytes?: Uint8Array } {
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
export function formatIPv6(b: Uint8Array): string {
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
