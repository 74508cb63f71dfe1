/** Reads SMTP replies out of the bytes an upstream sends: lines, multi-line replies, the limits. Pure. */
import { UpstreamError, type UpstreamReply } from './upstream-types.js';

/** Longest reply line we read (RFC 5321 §4.5.3.1.5 says 512; some servers are generous). */
const MAX_LINE = 8192;
/** Most lines in one reply (a long EHLO has ~20). */
const MAX_LINES = 200;
const REPLY_LINE = /^([2-5][0-9][0-9])(?:([ -])(.*))?$/s;
const EMPTY = Buffer.alloc(0);

export class ReplyReader {
  private pending: Buffer = EMPTY;
  private partial: { code: string; lines: string[] } | null = null;

  /**
   * Feeds the bytes received and hands each complete reply to `onReply` while `reading()` holds
   * (it stops holding when the connection failed, or after STARTTLS's reply, once the clear text
   * that follows must not be read). Returns the error when the bytes are not SMTP replies.
   */
  push(chunk: Buffer, onReply: (reply: UpstreamReply) => void, reading: () => boolean): UpstreamError | null {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    let nl: number;
    while (reading() && (nl = this.pending.indexOf(0x0a)) !== -1) {
      const end = nl > 0 && this.pending[nl - 1] === 0x0d ? nl - 1 : nl;
      if (end > MAX_LINE) break;
      const line = this.pending.subarray(0, end).toString('utf8');
      this.pending = this.pending.subarray(nl + 1);
      const reply = this.line(line);
      if (reply instanceof UpstreamError) return reply;
      if (reply !== null) onReply(reply);
    }
    if (!reading()) this.pending = EMPTY;
    else if (this.pending.indexOf(0x0a) > MAX_LINE || this.pending.length > MAX_LINE + 2) {
      return new UpstreamError('reply line too long', 'EPROTOCOL');
    }
    return null;
  }

  /** Forgets what was read of a reply not yet complete (STARTTLS: the clear text is not trusted). */
  reset(): void {
    this.pending = EMPTY;
    this.partial = null;
  }

  /** A complete reply, null while a multi-line one goes on, or the error. */
  private line(line: string): UpstreamReply | UpstreamError | null {
    const m = REPLY_LINE.exec(line);
    if (m === null || (this.partial !== null && this.partial.code !== m[1])) {
      return new UpstreamError(`not an SMTP reply: ${JSON.stringify(line.slice(0, 100))}`, 'EPROTOCOL');
    }
    const partial = (this.partial ??= { code: m[1]!, lines: [] });
    partial.lines.push(m[3] ?? '');
    if (m[2] === '-') return partial.lines.length > MAX_LINES ? new UpstreamError('reply too long', 'EPROTOCOL') : null;
    this.partial = null;
    return { code: Number(partial.code), lines: partial.lines };
  }
}
