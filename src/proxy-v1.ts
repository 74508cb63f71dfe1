/** PROXY protocol v1: the text line `PROXY TCP4|TCP6|UNKNOWN ...\r\n`. Pure. */
import { formatIPv6, scanIPv4, scanIPv6, scanPort, type Scan } from './ip-text.js';
import { INCOMPLETE, PROXY_V1_MAX, invalid, type ProxyData, type ProxyParse } from './proxy-data.js';

const V1_SIGNATURE = 'PROXY ';

export function parseV1(buf: Buffer): ProxyParse {
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
