/**
 * The trace headers aiosmtpd's handlers add to a message (X-Peer, X-MailFrom, X-RcptTo), in one
 * place, so Mailbox, Message and Proxy write them the same way.
 */
import { formatPeer, type Envelope, type Session } from '../session.js';

/** The bytes received; `content` is only a fallback for envelopes built by hand. */
export function bodyOf(envelope: Envelope): Buffer {
  if (envelope.originalContent !== null) return envelope.originalContent;
  const content = envelope.content ?? '';
  return typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
}

/** A header value must stay one line: CR or LF in an address would start a new header. */
export function clean(value: string): string {
  return value.replace(/[\r\n]/g, '');
}

/** The message's own line ending, so added headers do not mix CRLF and LF in one header block. */
export function lineEnding(body: Buffer): '\r\n' | '\n' {
  return body.includes('\r\n') ? '\r\n' : '\n';
}

/**
 * `X-Peer`, `X-MailFrom` and `X-RcptTo` lines, each ended by `eol`. `recipients` defaults to
 * every envelope recipient (an LMTP delivery names one at a time).
 */
export function traceHeaders(
  session: Session,
  envelope: Envelope,
  eol: string,
  recipients: readonly string[] = envelope.rcptTos,
): string {
  return (
    `X-Peer: ${clean(formatPeer(session.peer))}${eol}` +
    `X-MailFrom: ${clean(envelope.mailFrom ?? '')}${eol}` +
    `X-RcptTo: ${clean(recipients.join(', '))}${eol}`
  );
}

/**
 * The received bytes with X-Peer, X-MailFrom and X-RcptTo prepended (aiosmtpd's
 * prepare_message, kept as bytes). Prepended rather than appended to the header block so ours come
 * first and win over copies the client forged; the body itself is left byte for byte.
 */
export function prepareMessage(session: Session, envelope: Envelope): Buffer {
  const body = bodyOf(envelope);
  return Buffer.concat([Buffer.from(traceHeaders(session, envelope, lineEnding(body)), 'utf8'), body]);
}
