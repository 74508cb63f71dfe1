/**
 * Proxy: relays each accepted message to an upstream SMTP server, keeping the envelope and adding
 * X-Peer, as aiosmtpd's Proxy and Python smtpd's PureProxy do. Unlike aiosmtpd's (which answers
 * 250 whatever happened upstream), the upstream's refusal comes back to the client with its code,
 * and an upstream that cannot be reached gives a 4xx, so the client keeps the message and retries.
 *
 * The outbound side is nodemailer's SMTPConnection: it dot-stuffs, and normalizes bare CR and LF
 * to CRLF. We normalize first ourselves too, so the guarantee that a body holding `\n.\n` reaches
 * the upstream as one message (no SMTP smuggling through us) does not rest on one library version.
 */
import type { ConnectionOptions } from 'node:tls';
import type SMTPConnection from 'nodemailer/lib/smtp-connection';
import { UsageError, type Handler, type SMTPServer } from '../handler.js';
import { formatPeer, type Envelope, type Session } from '../session.js';
import { bodyOf, clean } from './headers.js';

export interface ProxyOptions {
  /** TLS from the first byte (SMTPS, usually port 465). Default false: STARTTLS when offered. */
  secure?: boolean;
  /** Do not use STARTTLS even when the upstream offers it. Default false. */
  ignoreTLS?: boolean;
  /** Milliseconds allowed to connect, to get the greeting, and between any two reads or writes. Default 30000. */
  timeout?: number;
  /** Options for the TLS connection (e.g. `ca`, `servername`, `rejectUnauthorized`). */
  tls?: ConnectionOptions;
}

export const DEFAULT_PROXY_TIMEOUT = 30_000;

let clientLoad: Promise<typeof SMTPConnection> | null = null;

/** Loaded on the first relay: importing it costs every CLI start ~40 ms, Proxy or not. */
function loadClient(): Promise<typeof SMTPConnection> {
  clientLoad ??= import('nodemailer/lib/smtp-connection').then((m) => m.default);
  return clientLoad;
}

const UNAVAILABLE = '451 4.4.1 Upstream server unavailable, try again later';
const CRLF = Buffer.from('\r\n');

/** What nodemailer's errors carry; its own error type is not part of our public API. */
interface RelayError {
  code?: string;
  responseCode?: number;
  response?: string;
}

export class Proxy implements Handler {
  readonly host: string;
  readonly port: number;
  readonly options: Readonly<ProxyOptions>;

  constructor(host: string, port: number, options: ProxyOptions = {}) {
    if (typeof host !== 'string' || host === '') throw new TypeError('Proxy: host must be a non-empty string');
    if (!isPort(port)) throw new RangeError(`Proxy: port must be an integer from 1 to 65535, not ${String(port)}`);
    this.host = host;
    this.port = port;
    this.options = { ...options };
  }

  /** `-c Proxy HOST PORT`. */
  static fromCli(...args: string[]): Proxy {
    if (args.length !== 2) throw new UsageError('Proxy usage: HOST PORT');
    const [host, portText] = args as [string, string];
    const port = /^[0-9]{1,5}$/.test(portText) ? Number(portText) : NaN;
    if (host === '') throw new UsageError('Proxy usage: HOST PORT (HOST is empty)');
    if (!isPort(port)) throw new UsageError(`Proxy: invalid port '${portText}' (an integer from 1 to 65535)`);
    return new Proxy(host, port);
  }

  async handleDATA(server: SMTPServer, session: Session, envelope: Envelope): Promise<string> {
    // X-Peer is prepended, so it comes before any copy the client forged. X-MailFrom and
    // X-RcptTo are not added: X-RcptTo would show every recipient the Bcc list.
    const data = Buffer.concat([Buffer.from(`X-Peer: ${clean(formatPeer(session.peer))}\r\n`, 'utf8'), toCRLF(bodyOf(envelope))]);
    return this.relay(await loadClient(), server.hostname, envelope, data);
  }

  /** One upstream connection per transaction: connect, send, QUIT. Never rejects. */
  private relay(Client: typeof SMTPConnection, clientName: string, envelope: Envelope, data: Buffer): Promise<string> {
    const timeout = this.options.timeout ?? DEFAULT_PROXY_TIMEOUT;
    const connection = new Client({
      host: this.host,
      port: this.port,
      secure: this.options.secure ?? false,
      ignoreTLS: this.options.ignoreTLS ?? false,
      tls: this.options.tls,
      name: clientName,
      connectionTimeout: timeout,
      greetingTimeout: timeout,
      socketTimeout: timeout,
      dnsTimeout: timeout,
      logger: false,
    });
    return new Promise<string>((resolve) => {
      let settled = false;
      const finish = (reply: string, polite: boolean) => {
        if (settled) return;
        settled = true;
        if (polite) connection.quit();
        else connection.close();
        resolve(reply);
      };
      // Also catches errors after the reply (during QUIT): an unheard 'error' event would throw.
      connection.on('error', (error: RelayError) => finish(this.refusal(error), false));
      connection.once('end', () => finish(UNAVAILABLE, false));
      connection.connect((error?: RelayError) => {
        if (error) return finish(this.refusal(error), false);
        const smtpEnvelope = {
          from: envelope.mailFrom ?? '',
          to: [...envelope.rcptTos],
          size: data.length,
          use8BitMime: envelope.mailOptions.body === '8BITMIME',
        };
        connection.send(smtpEnvelope, data, (sendError: RelayError | null, info?: { rejected: string[] }) => {
          // A refusal leaves the upstream session usable, so it still gets a QUIT.
          if (sendError) return finish(this.refusal(sendError), isRefusal(sendError));
          finish(accepted(info?.rejected ?? []), true);
        });
      });
    });
  }

  /** The upstream's own refusal, passed back; anything else (network, timeout, TLS) is a 451. */
  private refusal(error: RelayError): string {
    if (!isRefusal(error)) return UNAVAILABLE;
    return passBack(error.response!) ?? UNAVAILABLE;
  }
}

function isPort(port: number): boolean {
  return Number.isInteger(port) && port >= 1 && port <= 65535;
}

/** A reply the upstream gave to MAIL, RCPT, DATA or the message: a refusal of ours to pass on. */
function isRefusal(error: RelayError): boolean {
  return (
    (error.code === 'EENVELOPE' || error.code === 'EMESSAGE') &&
    typeof error.response === 'string' &&
    typeof error.responseCode === 'number'
  );
}

/**
 * The upstream's reply rebuilt for our client: its code (4xx or 5xx only: a refusal must never
 * turn into a success) and its text without control characters. 421 means the upstream is
 * closing its own connection, not ours, so it becomes a plain 451.
 */
function passBack(response: string): string | null {
  const lines = response.split(/\r?\n/).filter((line) => line !== '');
  const code = /^([45][0-9][0-9])(?:[ -]|$)/.exec(lines[0] ?? '')?.[1];
  if (code === undefined) return null;
  const replyCode = code === '421' ? '451' : code;
  const texts = lines.slice(0, 10).map((line) => line.slice(4).replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, 500));
  return texts.map((text) => `${replyCode} ${text}`.trimEnd()).join('\r\n');
}

/** 250, naming the recipients the upstream refused (the others got the message, so it stays a 250). */
function accepted(rejected: readonly string[]): string {
  if (rejected.length === 0) return '250 OK';
  const names = rejected.join(', ').replace(/[\x00-\x1f\x7f]/g, '');
  return `250 OK, but the upstream refused: ${names.length > 400 ? names.slice(0, 400) + '...' : names}`;
}

/** Every bare CR and every bare LF becomes CRLF; CRLF pairs stay. Returns `data` itself when nothing changes. */
export function toCRLF(data: Buffer): Buffer {
  const parts: Buffer[] = [];
  let start = 0;
  let cr = data.indexOf(0x0d);
  let lf = data.indexOf(0x0a);
  while (cr !== -1 || lf !== -1) {
    if (cr !== -1 && (lf === -1 || cr < lf)) {
      if (data[cr + 1] === 0x0a) {
        // CRLF: that LF is the next one, skip the pair.
        lf = data.indexOf(0x0a, cr + 2);
        cr = data.indexOf(0x0d, cr + 2);
        continue;
      }
      parts.push(data.subarray(start, cr), CRLF);
      start = cr + 1;
      cr = data.indexOf(0x0d, start);
    } else {
      parts.push(data.subarray(start, lf), CRLF);
      start = lf + 1;
      lf = data.indexOf(0x0a, start);
    }
  }
  if (parts.length === 0) return data;
  parts.push(data.subarray(start));
  return Buffer.concat(parts);
}
