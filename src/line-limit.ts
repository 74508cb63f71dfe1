/**
 * Pure: the longest text line of a DATA body, watched on the bytes as they arrive (RFC 5321
 * §4.5.3.1.6: 1000 octets with the CRLF; aiosmtpd's line_length_limit counts 1001).
 */
const LF = 0x0a;

export class LineLengthWatch {
  /** Bytes of the line in progress so far. */
  private current = 0;
  exceeded = false;

  constructor(readonly limit: number) {}

  /**
   * Looks at the next bytes of the body as sent (dot-stuffed, CRLFs included); returns the
   * offset in `bytes` of the first byte past the limit, or -1. Each step looks back from the
   * furthest byte the line may reach for its last LF, so a body costs about one search per
   * `limit` bytes, however short its lines.
   */
  see(bytes: Buffer): number {
    if (this.exceeded) return -1;
    const n = bytes.length;
    let p = 0;
    while (p < n) {
      const end = Math.min(n, p + (this.limit - this.current));
      const lf = end > p ? bytes.lastIndexOf(LF, end - 1) : -1;
      if (lf >= p) {
        this.current = 0;
        p = lf + 1;
      } else if (end === n) {
        this.current += n - p;
        return -1;
      } else {
        this.exceeded = true;
        return end;
      }
    }
    return -1;
  }
}
