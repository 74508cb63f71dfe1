/** The state a handler sees: Session lives for the connection, Envelope for one transaction. */
import type { PeerCertificate } from 'node:tls';
import type { DsnNotify, DsnOrcpt, DsnRet } from './dsn.js';
import type { ProxyData } from './proxy-protocol.js';
import type { XClientData } from './xclient.js';
import type { XForwardData } from './xforward.js';

export type { PeerCertificate };

/** The default shape of `session.data`: free-form; a handler names its own with Session<T>. */
export type SessionData = Record<string, unknown>;

/** The client's address. For a Unix socket (whose clients have no address), `address` is '' and `port` 0. */
export interface Peer {
  address: string;
  port: number;
  family: 'IPv4' | 'IPv6' | 'unix';
}

/** `127.0.0.1:2525`, `[::1]:2525`, or the socket path: the form used in X-Peer and logs. */
export function formatPeer(peer: Peer): string {
  if (peer.family === 'unix') return peer.address || 'unix';
  return peer.family === 'IPv6' ? `[${peer.address}]:${peer.port}` : `${peer.address}:${peer.port}`;
}

/**
 * The client as the trace headers name it: the one a trusted MTA forwarded with XFORWARD (its
 * address alone when it gave no port), else the peer, as formatPeer shows it.
 */
export function formatClient(session: Session): string {
  const address = session.xforward?.ADDR;
  if (typeof address !== 'string') return formatPeer(session.peer);
  const port = session.xforward?.PORT;
  if (typeof port !== 'number') return address;
  return formatPeer({ address, port, family: address.includes(':') ? 'IPv6' : 'IPv4' });
}

/** What RFC 3207 negotiated, set after STARTTLS or on an implicit-TLS listener. */
export interface TLSInfo {
  protocol: string | null;
  cipher: { name: string; standardName?: string; version: string } | null;
  /** The client's certificate, when one was asked for (tlsRequestCert) and sent. */
  peerCertificate: PeerCertificate | null;
}

/** ESMTP parameters of MAIL FROM, typed (RFC 1870, RFC 6152, RFC 6531, RFC 3030). */
export interface MailOptions {
  size?: number;
  body?: '7BIT' | '8BITMIME' | 'BINARYMIME';
  smtputf8?: boolean;
  /** RFC 4954 §5 AUTH=: the identity the client vouches for, or '<>'. */
  auth?: string;
  /** RFC 3461 §4.3 RET=, with enableDSN: what a failure DSN returns of the message. */
  ret?: DsnRet;
  /** RFC 3461 §4.4 ENVID=, with enableDSN: the envelope identifier, decoded from xtext. */
  envid?: string;
  /** RFC 8689 REQUIRETLS, with offerRequireTLS (accepted over TLS only): relay this message only over verified TLS. */
  requireTLS?: boolean;
  /** Parameters the engine does not know (upper-cased keyword → value, or true), with acceptUnknownParameters. */
  unknown?: Record<string, string | true>;
}

/** ESMTP parameters of RCPT TO. */
export interface RcptOptions {
  /** RFC 3461 §4.1 NOTIFY=, with enableDSN: 'NEVER' or the conditions asked for. */
  notify?: DsnNotify;
  /** RFC 3461 §4.2 ORCPT=, with enableDSN: the original recipient. */
  orcpt?: DsnOrcpt;
  /** Parameters the engine does not know (upper-cased keyword → value, or true), with acceptUnknownParameters. */
  unknown?: Record<string, string | true>;
}

/** The connection's state; `TData` types `data`, the handler's own per-connection state. */
export class Session<TData = SessionData> {
  /** The client, or after a PROXY header the client the proxy speaks for. */
  peer: Peer;
  /** The HELO/EHLO argument; null until the client greeted. */
  hostName: string | null = null;
  /** True after EHLO (RFC 5321 §4.1.1.1), false after HELO. */
  extendedSmtp = false;
  tls: TLSInfo | null = null;
  authenticated = false;
  authData: unknown = null;
  /** The PROXY protocol header, when the server expects one (proxyProtocolTimeout). */
  proxyData: ProxyData | null = null;
  /** What a trusted proxy said of the original client with XCLIENT (Postfix). */
  xclient: XClientData | null = null;
  /**
   * What a trusted MTA forwarded of the original client with XFORWARD (Postfix), for the
   * transaction in progress: null again once it ends (RSET, the end of DATA, a new EHLO).
   */
  xforward: XForwardData | null = null;
  #data: TData | null = null;
  /**
   * Free for the handler's own per-connection state: an empty object on first use, or what the
   * handler assigned (a new Session, after STARTTLS or XCLIENT, starts empty again).
   */
  get data(): TData {
    return (this.#data ??= {} as TData);
  }
  set data(value: TData) {
    this.#data = value;
  }

  constructor(peer: Peer) {
    this.peer = peer;
  }
}

export class Envelope {
  /** The reverse-path: '' for the null sender `<>`, null until MAIL. */
  mailFrom: string | null = null;
  /** The raw parameter strings of MAIL FROM, upper-cased keywords, as aiosmtpd keeps them. */
  mailParams: string[] = [];
  /** The same parameters, parsed. */
  mailOptions: MailOptions = {};
  smtputf8 = false;
  rcptTos: string[] = [];
  /** One entry per rcptTos entry. */
  rcptOptions: RcptOptions[] = [];
  /** The message after dot-unstuffing: a Buffer, or a string when `decodeData` is on. */
  content: Buffer | string | null = null;
  /** The message as received (after dot-unstuffing), always a Buffer. */
  originalContent: Buffer | null = null;
}
