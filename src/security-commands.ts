/**
 * STARTTLS (RFC 3207), AUTH (RFC 4954) and XCLIENT (Postfix): the commands that change who the
 * client is, or how far it is trusted.
 */
import { isIPv6, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { TLSSocket, type SecureContext } from 'node:tls';
import {
  AuthCancelled,
  AuthSyntaxError,
  BUILTIN_MECHANISMS,
  decodeResponse,
  handlerMechanisms,
  runMechanism,
  type AuthData,
  type AuthResult,
} from './auth.js';
import type { FramedLine } from './framing.js';
import type { Handler, MaybePromise, SMTPServer } from './handler.js';
import { DEFAULTS, type SMTPOptions } from './options.js';
import { Reply, SUCCESS_DEFAULT, normalizeReply } from './replies.js';
import { Session, formatPeer } from './session.js';
import { secureContextOf, tlsInfo } from './tls-info.js';
import { allowListOf, parseXclient } from './xclient.js';
import { onSocketData, onSocketDrain, proxiedPeer } from './engine.js';
import { TransactionCommands } from './transaction-commands.js';

const mechanismCache = new WeakMap<Handler, WeakMap<SMTPOptions, Map<string, string>>>();

export abstract class SecurityCommands extends TransactionCommands {
  protected readonly secureContext: SecureContext | null = secureContextOf(this.options.tlsContext);

  /** Mechanism name → handler method name (or '' for a built-in one). */
  private mechanisms: Map<string, string> | null = null;

  private authFailures = 0;

  private xclientOK: boolean | null = null;

  // ---- STARTTLS (RFC 3207) -------------------------------------------------------------

  /** Implicit TLS begun after a PROXY header: handshake, then the greeting. */
  protected wrapTLS(context: SecureContext, then: () => void): void {
    const raw = this.socket!;
    raw.off('data', onSocketData);
    raw.off('drain', onSocketDrain);
    // The handshake's first bytes may already have been read with the header, and a TLSSocket
    // over a net.Socket reads only from the kernel: feed it through a stream that replays them.
    const preface = this.tlsPreface;
    this.tlsPreface = null;
    const carrier = new Duplex({
      read: () => void raw.resume(),
      write: (chunk: Buffer, _encoding, callback) => void raw.write(chunk, callback),
      final: (callback) => {
        raw.end();
        callback();
      },
      destroy: (error, callback) => {
        raw.destroy();
        callback(error);
      },
    });
    if (preface !== null) carrier.push(preface);
    raw.on('data', (chunk: Buffer) => {
      if (!carrier.push(chunk)) raw.pause();
    });
    raw.once('end', () => carrier.push(null));
    raw.once('close', () => carrier.destroy());
    const secure = new TLSSocket(carrier as unknown as Socket, { isServer: true, secureContext: context, rejectUnauthorized: false });
    this.socket = secure;
    this.attach(secure);
    const timer = setTimeout(() => secure.destroy(), this.options.tlsHandshakeTimeout ?? DEFAULTS.tlsHandshakeTimeout);
    secure.once('secure', () => {
      clearTimeout(timer);
      this.session.tls = tlsInfo(secure);
      then();
      void this.pump();
    });
    secure.once('close', () => clearTimeout(timer));
    secure.resume();
  }

  protected startTLS(arg: string): void {
    if (this.secureContext === null) return this.respond(Reply.TLS_NOT_AVAILABLE);
    if (arg !== '') return this.respond(Reply.STARTTLS_SYNTAX);
    if (this.session.tls !== null) return this.respond(Reply.TLS_ALREADY_ACTIVE);
    if (this.needHelo()) return;
    const raw = this.socket!;
    // What the client pipelined behind STARTTLS came before the handshake: never run it
    // (the STARTTLS command-injection class, CVE-2011-0411).
    this.framer.takeRest();
    this.push(Reply.READY_FOR_TLS);
    this.flush();
    raw.off('data', onSocketData);
    raw.off('drain', onSocketDrain);
    const secure = new TLSSocket(raw, {
      isServer: true,
      secureContext: this.secureContext,
      // Ask for a client certificate to record in session.tls; judging it is the handler's.
      requestCert: this.options.tlsRequestCert === true,
      rejectUnauthorized: false,
    });
    this.socket = secure;
    this.attach(secure);
    // RFC 3207 §4.2: forget everything learnt from the client before TLS.
    const { peer, proxyData } = this.session;
    this.session = new Session(peer);
    this.session.proxyData = proxyData;
    this.resetTransaction();
    const timer = setTimeout(() => {
      this.logger.info(`${formatPeer(peer)} TLS handshake timed out`);
      secure.destroy();
    }, this.options.tlsHandshakeTimeout ?? DEFAULTS.tlsHandshakeTimeout);
    secure.once('secure', () => {
      clearTimeout(timer);
      this.session.tls = tlsInfo(secure);
    });
    secure.once('close', () => clearTimeout(timer));
  }

  // ---- XCLIENT (Postfix) --------------------------------------------------------------

  /** XCLIENT is for the proxies the operator trusts, judged by the real (TCP) peer. */
  /**
   * Judged once per connection, by the client a PROXY header names when there is one (else a
   * load balancer on the allow-list would vouch for everyone behind it), never by what an
   * earlier XCLIENT said.
   */
  protected xclientAllowed(): boolean {
    if (this.xclientOK !== null) return this.xclientOK;
    const allow = this.options.xclientAllow;
    const socket = this.socket;
    if (allow === undefined || allow.length === 0 || socket === null) return (this.xclientOK = false);
    const proxied = this.session.proxyData === null ? null : proxiedPeer(this.session.proxyData);
    const address = (proxied?.address ?? socket.remoteAddress)?.replace(/^::ffff:/, '');
    if (address === undefined || address === '') return (this.xclientOK = false);
    return (this.xclientOK = allowListOf(allow).check(address, isIPv6(address) ? 'ipv6' : 'ipv4'));
  }

  protected xclient(arg: string): void {
    if (this.inTransaction) return this.respond(Reply.XCLIENT_IN_TRANSACTION);
    const data = parseXclient(arg);
    if (data === null) return this.respond(Reply.XCLIENT_SYNTAX);
    const peer = { ...this.session.peer };
    if (data.ADDR) {
      peer.address = data.ADDR;
      peer.family = isIPv6(data.ADDR) ? 'IPv6' : 'IPv4';
    }
    if (data.PORT) peer.port = Number(data.PORT);
    // As after a new connection: the client greets again (Postfix sends a fresh 220).
    const { tls, proxyData } = this.session;
    this.session = new Session(peer);
    this.session.tls = tls;
    this.session.proxyData = proxyData;
    this.session.xclient = data;
    if (data.LOGIN) {
      this.session.authenticated = true;
      this.session.authData = data.LOGIN;
    }
    this.resetTransaction();
    this.push(`220 ${this.hostname} ${this.ident}`);
  }

  // ---- AUTH (RFC 4954) -----------------------------------------------------------------

  /** Offered mechanisms: built-ins when there is an authenticator, and the handler's own. */
  protected authMechanisms(): Map<string, string> {
    if (this.mechanisms !== null) return this.mechanisms;
    // The same for every connection of a handler and options: computed once, shared.
    const o = this.options;
    let perOptions = mechanismCache.get(this.handler);
    if (perOptions === undefined) mechanismCache.set(this.handler, (perOptions = new WeakMap()));
    const cached = perOptions.get(o);
    if (cached !== undefined) return (this.mechanisms = cached);
    const exclude = new Set((o.authExcludeMechanism ?? []).map((m) => m.toUpperCase()));
    const include = new Set((o.authIncludeMechanism ?? []).map((m) => m.toUpperCase()));
    const found = new Map<string, string>();
    if (o.authenticator !== undefined) {
      for (const m of BUILTIN_MECHANISMS) if (m !== 'CRAM-MD5' || include.has(m)) found.set(m, '');
    }
    for (const [name, method] of handlerMechanisms(this.handler)) found.set(name, method);
    for (const name of exclude) found.delete(name);
    perOptions.set(o, found);
    return (this.mechanisms = found);
  }

  /**
   * Sends `334 <base64 challenge>` and returns the client's decoded answer (aiosmtpd's
   * challenge_auth). Throws AuthCancelled on `*` and AuthSyntaxError on bad base64; custom
   * mechanisms may let those propagate.
   */
  async challengeAuth(challenge: string | Buffer): Promise<Buffer> {
    this.push(`334 ${Buffer.from(challenge).toString('base64')}`);
    this.flush();
    let line = this.framer.next();
    if (line === null) {
      line = await new Promise<FramedLine | null>((resolve) => {
        this.lineWaiter = resolve;
        this.socket?.resume();
      });
    }
    if (line === null) throw new AuthCancelled('connection closed');
    if (typeof line === 'symbol') throw new AuthSyntaxError('malformed response line');
    return decodeResponse(line.toString('latin1'));
  }

  protected async auth(arg: string): Promise<void> {
    const mechanisms = this.authMechanisms();
    if (mechanisms.size === 0) return this.respond(Reply.AUTH_NOT_AVAILABLE);
    if (this.needHelo()) return;
    if (!this.session.extendedSmtp) return this.respond(Reply.AUTH_NEEDS_EHLO);
    if (this.session.tls === null && this.options.authRequireTLS !== false) return this.respond(Reply.AUTH_NEEDS_TLS);
    if (this.session.authenticated) return this.respond(Reply.ALREADY_AUTHENTICATED);
    if (this.inTransaction) return this.respond(Reply.AUTH_IN_TRANSACTION);
    const args = arg.split(' ');
    if (arg === '' || args.length > 2) return this.respond(Reply.AUTH_SYNTAX);
    const mechanism = args[0]!.toUpperCase();
    const method = mechanisms.get(mechanism);
    if (method === undefined) return this.respond(Reply.AUTH_UNKNOWN_MECHANISM);
    let outcome: AuthResult;
    let login: string | null = null;
    try {
      const h = this.handler;
      if (h.handleAUTH !== undefined) {
        // The handler takes over the whole exchange, as aiosmtpd's handle_AUTH.
        return this.respond(await this.replyOf(() => h.handleAUTH!(this, this.session, this.envelope, args), true, SUCCESS_DEFAULT.AUTH));
      }
      let result: AuthResult | boolean | null | undefined;
      if (method === '') {
        const initial = args[1] === undefined ? null : decodeResponse(args[1]);
        const data: AuthData = await runMechanism(
          mechanism as (typeof BUILTIN_MECHANISMS)[number],
          initial,
          { challenge: (c) => this.challengeAuth(c) },
          this.hostname,
        );
        login = data.login;
        result = await this.options.authenticator!(this, this.session, this.envelope, mechanism, data);
      } else {
        const custom = (h as unknown as Record<string, (server: SMTPServer, args: string[]) => MaybePromise<AuthResult | boolean | null>>)[method]!;
        result = await custom.call(h, this, args);
      }
      outcome = typeof result === 'object' && result !== null ? result : { success: result === true };
    } catch (error) {
      if (error instanceof AuthCancelled) return this.respond(Reply.AUTH_CANCELLED);
      if (error instanceof AuthSyntaxError) return this.respond(Reply.AUTH_BAD_RESPONSE);
      this.logger.error(`${formatPeer(this.session.peer)} authenticator error`, error);
      return this.respond(Reply.AUTH_TEMPORARY_FAILURE);
    }
    // An authenticator's reply is a final one: never a 3xx that would leave the client waiting.
    const message =
      outcome.message === undefined || outcome.message.startsWith('3') ? null : normalizeReply(outcome.message, true);
    if (outcome.success === true) {
      this.session.authenticated = true;
      this.session.authData = outcome.authData ?? login;
      return this.respond(message !== null && message.startsWith('2') ? message : Reply.AUTH_OK);
    }
    const max = this.options.maxAuthFailures ?? DEFAULTS.maxAuthFailures;
    if (++this.authFailures >= max && max > 0) return this.shutdown(Reply.TOO_MANY_AUTH_FAILURES);
    this.respond(message !== null && !message.startsWith('2') ? message : Reply.AUTH_FAILED);
  }
}
