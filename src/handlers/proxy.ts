/**
 * Proxy: relays each transaction to an upstream SMTP server, keeping the envelope and adding
 * X-Peer, as aiosmtpd's Proxy and Python smtpd's PureProxy do, but the way Postfix's
 * smtpd_proxy_filter does it: the upstream decides each command as our client sends it.
 *
 * - MAIL opens an upstream connection (EHLO, STARTTLS when offered) and sends MAIL FROM; the
 *   upstream's reply is our reply. An upstream that cannot be reached gives 451 4.4.1, never 250.
 * - Each RCPT is sent upstream and answered with the upstream's reply, so a recipient the upstream
 *   refuses is refused to our client with the upstream's code, and the client bounces or retries
 *   it: no message is ever answered 250 while some of its recipients are lost.
 * - DATA sends the message upstream, X-Peer first, normalized to CRLF and dot-stuffed (a body
 *   holding bare `\n.\n` reaches the upstream as the one message it is here: no SMTP smuggling
 *   through us), and answers with the upstream's final reply (LMTP: that reply per recipient).
 * - RSET, QUIT, HELO/EHLO and a new MAIL end the upstream transaction (QUIT) and close its
 *   connection; one our client abandoned is closed by its idle timeout.
 *
 * A 421 from the upstream becomes 451 (a 421 from us would close our client's connection).
 *
 * A message sent with REQUIRETLS (RFC 8689, offerRequireTLS) is relayed only over TLS whose
 * certificate and name verified, to an upstream that offers REQUIRETLS itself (the parameter
 * goes on); otherwise MAIL gets 550 5.7.30 (RFC 8689: REQUIRETLS support required) and nothing is relayed. A message without it whose
 * upstream certificate does not verify is relayed over that TLS only when its header says
 * `TLS-Required: No` (RFC 8689 §4.2.2); otherwise DATA gets 451 4.7.5, as MAIL did before.
 */
import type { ConnectionOptions } from 'node:tls';
import { UsageError, type Handler, type SMTPServer } from '../handler.js';
import { Reply } from '../replies.js';
import { type Envelope, type MailOptions, type RcptOptions, type Session } from '../session.js';
import { mailDsnParameters, notifyRelayed, rcptDsnParameters } from './dsn-relay.js';
import { tlsRequiredNo } from '../requiretls.js';
import { bodyOf, peerHeader, tracePrefix } from './headers.js';
import { DEFAULT_IDLE_TIMEOUT, Upstream, UpstreamError, type UpstreamReply } from './upstream.js';

export { toCRLF } from './upstream.js';

export interface ProxyOptions {
  /** TLS from the first byte (SMTPS, usually port 465). Default false: STARTTLS when offered. */
  secure?: boolean;
  /** Do not use STARTTLS even when the upstream offers it. Default false. */
  ignoreTLS?: boolean;
  /** Milliseconds allowed to connect, to get the greeting, to get each reply, for a blocked write. Default 30000. */
  timeout?: number;
  /**
   * Milliseconds an upstream connection may wait for our client's next command before it says
   * QUIT and closes (a client that vanished mid-transaction). Default 60000. A transaction whose
   * upstream connection closed meanwhile is opened again (MAIL and the accepted RCPTs) at the
   * client's next command.
   */
  idleTimeout?: number;
  /** Options for the TLS connection (e.g. `ca`, `servername`, `rejectUnauthorized`). */
  tls?: ConnectionOptions;
}

export const DEFAULT_PROXY_TIMEOUT = 30_000;
export const DEFAULT_PROXY_IDLE_TIMEOUT = DEFAULT_IDLE_TIMEOUT;

const UNAVAILABLE = '451 4.4.1 Upstream server unavailable, try again later';
const NO_BINARYMIME = '555 5.5.4 BODY=BINARYMIME cannot be relayed';
const NO_SMTPUTF8 = '553 5.6.7 The upstream server does not accept non-ASCII addresses';
/** RFC 8689 §5: the next hop does not meet REQUIRETLS (no verified TLS, or no REQUIRETLS offered). */
const NO_REQUIRETLS = '550 5.7.30 REQUIRETLS support required';
/** RFC 3463 4.7.5, cryptographic failure: the upstream's certificate did not verify, and the message did not waive it. */
const UNVERIFIED = '451 4.7.5 The upstream server certificate did not verify';

/** One transaction relayed: what was said upstream, to say it again on a new connection. */
interface Transaction {
  envelope: Envelope;
  upstream: Upstream;
  /** Our EHLO name. */
  name: string;
  /** The MAIL FROM command the upstream accepted. */
  mail: string;
  /** The RCPT TO commands it accepted, in order. */
  rcpts: string[];
  /** The addresses it accepted, in order. */
  accepted: string[];
  /** The upstream takes SMTPUTF8 for this transaction. */
  utf8: boolean;
  /** The client asked for REQUIRETLS: every connection of this transaction must meet it. */
  requireTLS: boolean;
}

/** What the Proxy keeps per client connection, in session.data. */
type ProxyState = {
  /** The open upstream transaction. */
  upstream?: Transaction | undefined;
};
type ProxySession = Session<ProxyState>;

export class Proxy implements Handler<ProxyState> {
  readonly host: string;
  readonly port: number;
  readonly options: Readonly<ProxyOptions>;
  /** Connections opened without certificate checks after a failed one: only for `TLS-Required: No`. */
  readonly #relaxed = new WeakSet<Upstream>();

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

  handleHELO(server: SMTPServer, session: ProxySession): string {
    this.end(session);
    return `250 ${server.hostname}`;
  }

  /** Ends any transaction, and does not offer BINARYMIME: the message goes on with DATA. */
  handleEHLO(_server: SMTPServer, session: ProxySession, _envelope: Envelope, _hostname: string, responses: string[]): string[] {
    this.end(session);
    return responses.filter((line) => line.toUpperCase() !== 'BINARYMIME');
  }

  async handleMAIL(server: SMTPServer, session: ProxySession, envelope: Envelope, address: string, mailOptions: MailOptions): Promise<string> {
    this.end(session);
    const begun = await this.begin(server, session, envelope, address, mailOptions);
    return typeof begun === 'string' ? begun : begun.reply;
  }

  async handleRCPT(server: SMTPServer, session: ProxySession, envelope: Envelope, address: string, rcptOptions: RcptOptions): Promise<string> {
    const t = this.current(session, envelope) ?? (await this.beginFor(server, session, envelope));
    if (typeof t === 'string') return t;
    const reply = await this.recipient(t, address, rcptOptions);
    if (reply.startsWith('2')) {
      envelope.rcptTos.push(address);
      envelope.rcptOptions.push(rcptOptions);
    }
    return reply;
  }

  /** The upstream's final reply; in LMTP, one per recipient. */
  async handleDATA(server: SMTPServer, session: ProxySession, envelope: Envelope): Promise<string | string[]> {
    const replies = await this.relay(server, session, envelope);
    if (server.lmtp) return replies;
    return replies.find((r) => !r.startsWith('2')) ?? replies[0] ?? UNAVAILABLE;
  }

  handleRSET(_server: SMTPServer, session: ProxySession): string {
    this.end(session);
    return Reply.RSET_OK;
  }

  handleQUIT(_server: SMTPServer, session: ProxySession): string {
    this.end(session);
    return Reply.BYE;
  }

  // ---- inside ------------------------------------------------------------------------------

  /** With requireTLS, STARTTLS is used even with ignoreTLS: RFC 8689 leaves no choice. */
  private connect(name: string, requireTLS = false, relaxed = false): Promise<Upstream> {
    return Upstream.connect({
      host: this.host,
      port: this.port,
      name,
      secure: this.options.secure ?? false,
      ignoreTLS: !requireTLS && (this.options.ignoreTLS ?? false),
      tls: relaxed ? { ...this.options.tls, rejectUnauthorized: false } : this.options.tls,
      timeout: this.options.timeout ?? DEFAULT_PROXY_TIMEOUT,
      idleTimeout: this.options.idleTimeout ?? DEFAULT_PROXY_IDLE_TIMEOUT,
    });
  }

  /** This envelope's upstream transaction, if it has one. */
  private current(session: ProxySession, envelope: Envelope): Transaction | undefined {
    const t = session.data.upstream;
    return t !== undefined && t.envelope === envelope ? t : undefined;
  }

  /** Ends the session's upstream transaction, if any: QUIT, then close. */
  private end(session: ProxySession): void {
    const t = session.data.upstream;
    if (t === undefined) return;
    session.data.upstream = undefined;
    t.upstream.quit();
  }

  /** Opens the upstream transaction: connect, MAIL FROM. A string is the refusal to answer with. */
  private async begin(
    server: SMTPServer,
    session: ProxySession,
    envelope: Envelope,
    address: string,
    options: MailOptions,
  ): Promise<string | { transaction: Transaction; reply: string }> {
    if (options.body === 'BINARYMIME') return NO_BINARYMIME;
    const requireTLS = options.requireTLS === true;
    const upstream = await this.open(server.hostname, requireTLS);
    if (typeof upstream === 'string') return upstream;
    const utf8 = options.smtputf8 === true && upstream.supports('SMTPUTF8');
    if (!utf8 && !isAscii(address)) {
      upstream.quit();
      return NO_SMTPUTF8;
    }
    const dsn = mailDsnParameters(options, upstream.supports('DSN'));
    const mail = `MAIL FROM:<${address}>${mailParameters(upstream, options, Buffer.byteLength(xPeer(session)) + 2, utf8)}${dsn}`;
    try {
      const reply = await upstream.command(mail);
      if (!isSuccess(reply)) {
        upstream.quit();
        return passBack(reply);
      }
      const transaction: Transaction = { envelope, upstream, name: server.hostname, mail, rcpts: [], accepted: [], utf8, requireTLS };
      session.data.upstream = transaction;
      return { transaction, reply: passBack(reply) };
    } catch {
      upstream.close();
      return UNAVAILABLE;
    }
  }

  /**
   * A connection, or the reply that refuses the transaction: 451 when the upstream cannot be
   * reached; for REQUIRETLS, 550 5.7.30 when its TLS does not verify or it does not offer REQUIRETLS.
   */
  private async open(name: string, requireTLS: boolean): Promise<Upstream | string> {
    let upstream: Upstream;
    try {
      upstream = await this.connect(name, requireTLS);
    } catch (error) {
      if (!(error instanceof UpstreamError && error.code === 'ETLS')) return UNAVAILABLE;
      if (requireTLS) return NO_REQUIRETLS;
      // The message may yet say TLS-Required: No; relay() decides once the header is in.
      try {
        upstream = await this.connect(name, false, true);
      } catch {
        return UNAVAILABLE;
      }
      this.#relaxed.add(upstream);
    }
    if (requireTLS && !(upstream.verified && upstream.supports('REQUIRETLS'))) {
      upstream.quit();
      return NO_REQUIRETLS;
    }
    return upstream;
  }

  /** For an envelope whose MAIL did not come through our handleMAIL (a delegating handler's). */
  private async beginFor(server: SMTPServer, session: ProxySession, envelope: Envelope): Promise<Transaction | string> {
    this.end(session);
    const begun = await this.begin(server, session, envelope, envelope.mailFrom ?? '', envelope.mailOptions);
    return typeof begun === 'string' ? begun : begun.transaction;
  }

  /** RCPT TO upstream; its reply, passed back. */
  private async recipient(t: Transaction, address: string, options: RcptOptions | undefined): Promise<string> {
    if (!t.utf8 && !isAscii(address)) return NO_SMTPUTF8;
    const command = `RCPT TO:<${address}>${rcptDsnParameters(options, t.upstream.supports('DSN'), t.utf8)}`;
    try {
      const reply = await (await this.live(t)).command(command);
      if (isSuccess(reply)) {
        t.rcpts.push(command);
        t.accepted.push(address);
      }
      return passBack(reply);
    } catch {
      t.upstream.close();
      return UNAVAILABLE;
    }
  }

  /**
   * The transaction's upstream connection, opened again when it closed (idle timeout, the
   * upstream's own timeout or 421) before the message was sent: MAIL and every accepted RCPT
   * again, each of which must be accepted again. Never after DATA: that could deliver twice.
   */
  private async live(t: Transaction): Promise<Upstream> {
    if (t.upstream.open) return t.upstream;
    t.upstream.close();
    const upstream = await this.open(t.name, t.requireTLS);
    if (typeof upstream === 'string') throw new UpstreamError(`reconnection refused: ${upstream}`, 'ETLS');
    t.upstream = upstream;
    for (const command of [t.mail, ...t.rcpts]) {
      const reply = await t.upstream.command(command);
      if (!isSuccess(reply)) throw new UpstreamError(`refused on reconnection: ${reply.code}`, 'EPROTOCOL', reply);
    }
    return t.upstream;
  }

  /** One reply per envelope recipient. */
  private async relay(server: SMTPServer, session: ProxySession, envelope: Envelope): Promise<string[]> {
    const all = (reply: string) => envelope.rcptTos.map(() => reply);
    const t = this.current(session, envelope) ?? (await this.beginFor(server, session, envelope));
    if (typeof t === 'string') return all(t);
    session.data.upstream = undefined; // whatever happens now, the transaction ends here
    try {
      // Recipients that did not come through our handleRCPT (a subclass's or a delegating
      // handler's) are put to the upstream now.
      const refusals: Array<string | null> = [];
      const unsent = new Map<string, number>();
      for (const a of t.accepted) unsent.set(a, (unsent.get(a) ?? 0) + 1);
      for (const [i, address] of envelope.rcptTos.entries()) {
        const n = unsent.get(address) ?? 0;
        if (n > 0) {
          unsent.set(address, n - 1);
          refusals.push(null);
          continue;
        }
        const reply = await this.recipient(t, address, envelope.rcptOptions[i]);
        refusals.push(reply.startsWith('2') ? null : reply);
      }
      const first = refusals.find((r) => r !== null);
      // SMTP has one reply per message: with a recipient refused, the message is refused whole
      // rather than delivered to some and reported failed (a retry would deliver twice).
      if (first != null && (!server.lmtp || refusals.every((r) => r !== null))) {
        t.upstream.quit();
        return refusals.map((r) => r ?? first);
      }
      const upstream = await this.live(t);
      const body = bodyOf(envelope);
      if (this.#relaxed.has(upstream) && !tlsRequiredNo(body)) {
        upstream.quit();
        return all(UNVERIFIED);
      }
      const sent = [tracePrefix(xPeer(session), body, '\r\n'), body];
      const final = await upstream.data(sent);
      upstream.quit();
      const reply = passBack(final);
      if (isSuccess(final) && !upstream.supports('DSN')) {
        notifyRelayed({ connect: () => this.connect(t.name, t.requireTLS), name: t.name, remoteMta: this.host, envelope, refusals, utf8: t.utf8, reply, sent });
      }
      return refusals.map((r) => r ?? reply);
    } catch {
      t.upstream.close();
      return all(UNAVAILABLE);
    }
  }
}

function isPort(port: number): boolean {
  return Number.isInteger(port) && port >= 1 && port <= 65535;
}

function isAscii(text: string): boolean {
  return /^[\x00-\x7f]*$/.test(text);
}

function isSuccess(reply: UpstreamReply): boolean {
  return reply.code >= 200 && reply.code < 300;
}

/** The trace header put in front of the message (X-MailFrom and X-RcptTo are not: X-RcptTo would show every recipient the Bcc list). */
function xPeer(session: Session): string {
  return peerHeader(session, '\r\n');
}

/** SIZE, BODY, SMTPUTF8 and REQUIRETLS as the client declared them, each only when the upstream offers it. */
function mailParameters(upstream: Upstream, options: MailOptions, added: number, utf8: boolean): string {
  let params = '';
  if (options.size !== undefined && upstream.supports('SIZE')) params += ` SIZE=${options.size + added}`;
  if ((options.body === '8BITMIME' || options.body === '7BIT') && upstream.supports('8BITMIME')) params += ` BODY=${options.body}`;
  if (utf8) params += ' SMTPUTF8';
  // Only ever sent where open() found it offered.
  if (options.requireTLS === true) params += ' REQUIRETLS';
  return params;
}

/**
 * The upstream's reply rebuilt for our client: its code and its text without control characters.
 * 421 means the upstream is closing its own connection, not ours, so it becomes 451; a code that
 * is no final reply (1xx, 3xx) is the upstream's protocol error, a 451.
 */
function passBack(reply: UpstreamReply): string {
  const code = reply.code === 421 ? 451 : reply.code;
  if (code < 200 || (code >= 300 && code < 400) || code > 599) return UNAVAILABLE;
  const texts = reply.lines.slice(0, 10).map((line) => line.replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, 500));
  return texts.map((text) => `${code} ${text}`.trimEnd()).join('\r\n');
}
