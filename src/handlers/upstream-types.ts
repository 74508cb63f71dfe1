/** The SMTP client's options, its replies, and the error that ends a connection. */
import type tls from 'node:tls';

export interface UpstreamOptions {
  host: string;
  port: number;
  /** The name we give in EHLO/HELO. */
  name: string;
  /** TLS from the first byte (SMTPS). Default false. */
  secure?: boolean;
  /** Do not use STARTTLS even when offered. Default false. */
  ignoreTLS?: boolean;
  /** Node TLS options for the connection (ca, servername, rejectUnauthorized, ...). */
  tls?: tls.ConnectionOptions;
  /** Milliseconds to connect, to get the greeting, to get each reply, for a blocked write. Default 30000. */
  timeout?: number;
  /** Milliseconds between commands after which the connection says QUIT and closes. Default 60000. */
  idleTimeout?: number;
  /** Speak LMTP (RFC 2033): LHLO instead of EHLO, and one reply per recipient after the body. */
  lmtp?: boolean;
}

export const DEFAULT_UPSTREAM_TIMEOUT = 30_000;
export const DEFAULT_IDLE_TIMEOUT = 60_000;

/** One reply: its code and the text of each line (after `250-` / `250 `). */
export interface UpstreamReply {
  code: number;
  lines: string[];
}

/** ETLS: the TLS handshake failed (a certificate that does not verify, a name that does not match). */
export type UpstreamErrorCode = 'ECONNECTION' | 'ETIMEDOUT' | 'ECLOSED' | 'EPROTOCOL' | 'EGREETING' | 'EHELO' | 'ETLS';

/** The connection failed: nothing more can be said on it. `reply` is the upstream's, when one caused it. */
export class UpstreamError extends Error {
  override name = 'UpstreamError';
  constructor(
    message: string,
    readonly code: UpstreamErrorCode,
    readonly reply: UpstreamReply | null = null,
  ) {
    super(message);
  }
}
