/**
 * Pure: the TLS-Required header field of RFC 8689 §3. `TLS-Required: No` asks relays to deliver
 * the message even when the next hop's TLS does not verify; it counts only for a message sent
 * without the REQUIRETLS parameter (§4.1: with REQUIRETLS the field is ignored).
 */

/** The header section, up to the first empty line (or all of it when there is none). */
function headerSection(message: Buffer): string {
  let end = message.indexOf('\r\n\r\n');
  if (end < 0) end = message.indexOf('\n\n');
  return message.subarray(0, end < 0 ? message.length : end).toString('latin1');
}

/** True when the message's header holds `TLS-Required: No` (field name and value case-insensitive, folding allowed). */
export function tlsRequiredNo(message: Buffer): boolean {
  const unfolded = headerSection(message).replace(/\r?\n(?=[ \t])/g, '');
  return /^TLS-Required[ \t]*:[ \t]*No[ \t]*\r?$/im.test(unfolded);
}
