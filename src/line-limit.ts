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
   * offset in `bytes` of the first byte past the limit, or -1.
   */
  see(bytes: Buffer): number {
    if (this.exceeded) return -1;
    let from = 0;
    for (;;) {
      const lf = bytes.indexOf(LF, from);
      const end = lf < 0 ? bytes.length : lf + 1;
      if (this.current + (end - from) > this.limit) {
        this.exceeded = true;
        return from + (this.limit - this.current);
      }
      this.current += end - from;
      if (lf < 0) return -1;
      this.current = 0;
      from = lf + 1;
    }
  }
}
