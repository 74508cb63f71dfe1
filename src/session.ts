/** The state a handler sees: Session lives for the connection, Envelope for one transaction. */
import type { ProxyData } from './proxy-protocol.js';

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

/** What RFC 3207 negotiated, set after STARTTLS or on an implicit-TLS listener. */
export interface TLSInfo {
  protocol: string | null;
  cipher: { name: string; standardName?: string; version: string } | null;
  peerCertificate: object | null;
}

/** ESMTP parameters of MAIL FROM, typed (RFC 1870, RFC 6152, RFC 6531, RFC 3030). */
export interface MailOptions {
  size?: number;
  body?: '7BIT' | '8BITMIME' | 'BINARYMIME';
  smtputf8?: boolean;
  /** RFC 4954 §5 AUTH=: the identity the client vouches for, or '<>'. */
  auth?: string;
  /** Parameters the engine does not know, when the handler asked to see them. */
  [keyword: string]: string | number | boolean | undefined;
}

export type RcptOptions = Record<string, string | true>;

export class Session {
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
  xclient: Record<string, string | null> | null = null;
  private ownData: Record<string, unknown> | null = null;
  /** Free for the handler's own per-connection state (made on first use). */
  get data(): Record<string, unknown> {
    return (this.ownData ??= {});
  }
  set data(value: Record<string, unknown>) {
    this.ownData = value;
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
