/**
 * Debugging: prints every message to a stream, in aiosmtpd's exact block format, so output
 * that people (and scripts) know from `python -m aiosmtpd` looks the same here.
 */
import { UsageError, type Handler, type SMTPServer } from '../handler.js';
import { formatClient, type Envelope, type RcptOptions, type Session } from '../session.js';
import { clean } from './headers.js';

export class Debugging implements Handler {
  readonly stream: NodeJS.WritableStream;

  constructor(stream: NodeJS.WritableStream = process.stdout) {
    this.stream = stream;
    // A closed stream (`tsmtpd | head`) must cost a reply, not the process: the error also
    // reaches the write callback below.
    if (stream.listenerCount('error') === 0) stream.on('error', () => {});
  }

  /** `-c Debugging [stdout|stderr]`, as aiosmtpd's from_cli. */
  static fromCli(...args: string[]): Debugging {
    if (args.length === 0) return new Debugging(process.stdout);
    if (args.length === 1 && args[0] === 'stdout') return new Debugging(process.stdout);
    if (args.length === 1 && args[0] === 'stderr') return new Debugging(process.stderr);
    throw new UsageError('Debugging usage: [stdout|stderr]');
  }

  handleDATA(_server: SMTPServer, session: Session, envelope: Envelope): Promise<string> {
    // One write for the whole block: concurrent connections must not interleave their lines.
    return new Promise((resolve, reject) => {
      this.stream.write(formatMessage(session, envelope), (error) => (error ? reject(error) : resolve('250 OK')));
    });
  }
}

/** The text aiosmtpd's Debugging.handle_DATA prints, each line ended by "\n" (Python's print). */
export function formatMessage(session: Session, envelope: Envelope): string {
  const out: string[] = ['---------- MESSAGE FOLLOWS ----------'];
  let separator = false;
  if (envelope.mailParams.length > 0) {
    out.push(`mail options: ${pyList(envelope.mailParams.map(pyStr))}`);
    separator = true;
  }
  if (envelope.rcptOptions.some((o) => Object.keys(o.unknown ?? {}).length > 0)) {
    out.push(`rcpt options: ${pyList(envelope.rcptOptions.map(rcptParams))}`);
    separator = true;
  }
  if (separator) out.push('');
  const content = envelope.content ?? envelope.originalContent ?? '';
  const text = typeof content === 'string' ? content : content.toString('utf8'); // U+FFFD for bad bytes
  let inHeaders = true;
  for (const line of splitLines(text)) {
    // X-Peer goes where the headers end, as aiosmtpd does; no blank line means no X-Peer.
    if (inHeaders && line === '') {
      out.push(`X-Peer: ${clean(formatClient(session))}`);
      inHeaders = false;
    }
    out.push(line);
  }
  out.push('------------ END MESSAGE ------------');
  return out.join('\n') + '\n';
}

/** Python's bytes.splitlines(): CRLF, LF or CR; a final terminator yields no empty last line. */
function splitLines(text: string): string[] {
  const lines = text.split(/\r\n|\r|\n/);
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/** Our typed RCPT options back in aiosmtpd's form: the raw `KEY=VALUE` strings, as a list. */
function rcptParams(options: RcptOptions): string {
  return pyList(Object.entries(options.unknown ?? {}).map(([k, v]) => pyStr(v === true ? k : `${k}=${v}`)));
}

function pyList(items: string[]): string {
  return `[${items.join(', ')}]`;
}

/** Python's repr() of a str: single quotes unless the text has ' and no ", escapes as Python. */
function pyStr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '\\' || ch === quote) out += '\\' + ch;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || (c >= 0x7f && c <= 0xa0)) out += '\\x' + c.toString(16).padStart(2, '0');
    else out += ch;
  }
  return out + quote;
}
