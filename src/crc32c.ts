/** CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as the PROXY v2 CRC32C TLV uses it. */

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
export function crc32cUpdate(state: number, buf: Uint8Array, start: number, end: number): number {
  let c = state;
  for (let i = start; i < end; i++) c = CRC32C_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return c;
}

/** CRC32C of `buf` (as used by the PP2_TYPE_CRC32C TLV). CRC32C("123456789") is 0xE3069283. */
export function crc32c(buf: Uint8Array): number {
  return ~crc32cUpdate(0xffffffff, buf, 0, buf.length) >>> 0;
}
