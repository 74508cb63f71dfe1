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

import { INCOMPLETE, invalid, type ProxyParse } from './proxy-data.js';
import { parseV1 } from './proxy-v1.js';
import { parseV2 } from './proxy-v2.js';

export { PROXY_V1_MAX, PROXY_V2_MAX, PROXY_V2_SIGNATURE, type ProxyData, type ProxyParse, type ProxyTLV } from './proxy-data.js';
export { crc32c } from './crc32c.js';

export function parseProxyHeader(buf: Buffer): ProxyParse {
  if (buf.length === 0) return INCOMPLETE;
  const first = buf[0];
  if (first === 0x50 /* P */) return parseV1(buf);
  if (first === 0x0d /* CR */) return parseV2(buf);
  return invalid('not a PROXY header (first byte is neither "P" nor CR)');
}
