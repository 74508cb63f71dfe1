/** The controllers' options, beyond the engine's own, and their defaults. */
import type tls from 'node:tls';
import type { SMTPOptions } from './options.js';

export interface BaseControllerOptions extends Omit<SMTPOptions, 'hostname'> {
  /** The name in the greeting and EHLO reply (SMTP's `hostname`). Default: the machine's name. */
  serverHostname?: string;
  /**
   * Milliseconds start() waits for the server to answer. Default: TSMTPD_CONTROLLER_TIMEOUT
   * (seconds) when set, else 5000.
   */
  readyTimeout?: number;
  /** Milliseconds stop() lets a transaction in flight finish before it says 421. Default 1000. */
  stopTimeout?: number;
  /** Speak LMTP (RFC 2033) instead of SMTP. Default false. */
  lmtp?: boolean;
  /** Implicit TLS (SMTPS, RFC 8314): every connection starts with a TLS handshake. */
  tls?: tls.TlsOptions;
  /** Open connections at most; past it a new one gets 421 and is closed. Default 10000. */
  maxConnections?: number;
  /**
   * The share of `maxConnections` at which the server is under stress (Postfix's stress mode):
   * while that many connections are open, `stressTimeout` and `stressMaxErrors` apply to all of
   * them; below it the usual limits come back. Default 0.8; a value above 1 turns it off.
   */
  stressThreshold?: number;
  /** Open connections per client address (Postfix's smtpd_client_connection_count_limit). Default 50. */
  maxConnectionsPerClient?: number;
  /** Addresses or CIDR ranges free of the per-client limit. Default: loopback, as Postfix's mynetworks. */
  connectionLimitExempt?: string[];
}

export const CONNECTION_DEFAULTS = { max: 10_000, perClient: 50, exempt: ['127.0.0.0/8', '::1'], stress: 0.8 };

export interface ControllerOptions extends BaseControllerOptions {
  /**
   * Address to bind. Default: both loopbacks, `::1` (where IPv6 works; `hostname` then reads
   * `::1`) and `127.0.0.1` on the same port, so clients of `localhost` reach it either way.
   */
  hostname?: string;
  /** Port to bind; 0 picks a free one, reported by `port` after start(). Default 8025. */
  port?: number;
}

export interface UnixSocketControllerOptions extends BaseControllerOptions {
  unixSocket: string;
  /** File mode for the socket, e.g. 0o660. Default: as the umask leaves it. */
  mode?: number;
}

export function defaultReadyTimeout(): number {
  const env = Number.parseFloat(process.env.TSMTPD_CONTROLLER_TIMEOUT ?? '');
  return Number.isFinite(env) && env > 0 ? env * 1000 : 5000;
}
