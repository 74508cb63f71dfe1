/**
 * Release: sends a captured message on to a real SMTP server with the Proxy handler's
 * command-by-command client (STARTTLS when offered, dot-stuffing, CRLF line ends).
 */
import { hostname } from 'node:os';
import { Upstream, UpstreamError, type UpstreamReply } from '../handlers/upstream.js';
import { HttpError } from './http-util.js';
import type { CapturedMessage } from './message.js';

export interface RelayOptions {
  host: string;
  port: number;
  /** TLS from the first byte (SMTPS). */
  secure?: boolean;
  /** Never STARTTLS. */
  ignoreTLS?: boolean;
  /** Milliseconds per step; default the client's 30000. */
  timeout?: number;
}

const ADDRESS = /^[^\s<>()\[\],;:"\\]+@[^\s<>()\[\],;:"\\]+$/;

function refused(step: string, reply: UpstreamReply): HttpError {
  return new HttpError(502, `the relay refused ${step}: ${reply.code} ${reply.lines.join(' ')}`);
}

/** `Name <a@b>` -> `a@b`: Mailpit's release takes what Go's mail.ParseAddress takes. */
const bareAddress = (value: string): string => /^[^<>]*<([^<>]*)>\s*$/.exec(value)?.[1] ?? value.trim();

export async function relayMessage(options: RelayOptions, message: CapturedMessage, recipients: readonly string[]): Promise<void> {
  const to = recipients.map(bareAddress);
  const bad = to.filter((a) => !ADDRESS.test(a));
  if (bad.length > 0) throw new HttpError(400, `Invalid email address: ${bad.join(', ')}`);
  const fromHeader = message.from?.address ?? '';
  const sender = message.envelope.mailFrom !== '' ? message.envelope.mailFrom : ADDRESS.test(fromHeader) ? fromHeader : '';
  let upstream: Upstream;
  try {
    upstream = await Upstream.connect({ host: options.host, port: options.port, name: hostname(), secure: options.secure, ignoreTLS: options.ignoreTLS, timeout: options.timeout });
  } catch (error) {
    throw new HttpError(502, `cannot reach the relay ${options.host}:${options.port}: ${(error as Error).message}`);
  }
  try {
    const mail = await upstream.command(`MAIL FROM:<${sender}>`);
    if (mail.code !== 250) throw refused(`MAIL FROM:<${sender}>`, mail);
    for (const rcpt of to) {
      const reply = await upstream.command(`RCPT TO:<${rcpt}>`);
      if (reply.code !== 250 && reply.code !== 251) throw refused(`RCPT TO:<${rcpt}>`, reply);
    }
    const done = await upstream.data([message.raw]);
    if (done.code !== 250) throw refused('the message', done);
    upstream.quit();
  } catch (error) {
    upstream.close();
    if (error instanceof UpstreamError) throw new HttpError(502, `relay ${options.host}:${options.port}: ${error.message}`);
    throw error;
  }
}
