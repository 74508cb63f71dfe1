/** The options of the SMTP engine, with their defaults (aiosmtpd's, camel-cased, in ms). */
import type { SecureContext, SecureContextOptions } from 'node:tls';
import type { Authenticator } from './auth.js';
import type { CommandOverrides } from './context.js';

/** Where the controllers pass what only they may set (not exported from the package). */
export const INTERNAL = Symbol('tsmtpd internal options');

/** Options only the controllers set. */
export interface InternalOptions {
  /**
   * Behind a PROXY header the controller cannot count connections per client at accept time:
   * the connection asks this gate once the header named the client.
   */
  connectionGate?: { admit(address: string): boolean; leave(address: string): void };
  /** Implicit TLS that starts after the PROXY header (HAProxy sends it in clear, then TLS). */
  tlsAfterProxy?: SecureContext;
  /** Whether the controller is under stress now (open connections near maxConnections). */
  stress?: { readonly active: boolean };
}

/** One thing the engine logs (docs/logging.md). */
export interface LogRecord {
  level: 'debug' | 'info' | 'warn' | 'error';
  /** The connection's id, unique in the process; absent for what concerns no connection. */
  connection?: number;
  /** `in`: a line the client sent; `out`: a reply line the server sent; absent: an event. */
  direction?: 'in' | 'out';
  /** The client (`address:port`), on the `connected` event. */
  peer?: string;
  /** The line or the event, secrets masked. */
  text: string;
  /** What was thrown, on `error` records. */
  error?: unknown;
}

export interface Logger {
  /**
   * false: the engine skips building the conversation (both directions, at debug level) and the
   * connect/disconnect events (info), which cost per line. Default true.
   */
  debugEnabled?: boolean;
  /** true: also the details (body sizes, TLS parameters, hook timings), at debug level. Default false. */
  detailEnabled?: boolean;
  /** When present, every record goes here whole instead of to the methods below (JSON logs). */
  log?(record: LogRecord): void;
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string, error?: unknown): void;
}

export interface SMTPOptions {
  /** The name in the greeting and EHLO reply. Default: the machine's host name. */
  hostname?: string;
  /** The text after the hostname in the greeting. Default: `tsmtpd <version>`. */
  ident?: string;
  /**
   * How long (ms) a command line, a body line or a TLS record may take to arrive in full (not
   * the time since the last byte: Postfix's smtpd_per_record_deadline), and how long a client
   * may stay silent; then the server says 421 and closes. Default 300000 (5 minutes).
   */
  timeout?: number;
  /**
   * `timeout` under stress: while a Controller's open connections are at `stressThreshold` of
   * `maxConnections` or more (Postfix's `${stress?10s}`). Default 10000; 0: as `timeout`.
   */
  stressTimeout?: number;
  /** `maxErrors` under stress (Postfix's `${stress?1}`). Default 1. */
  stressMaxErrors?: number;
  /**
   * Whole-body deadline (ms) from DATA (or the first BDAT) to the end of the message, so a
   * client trickling a byte at a time cannot hold a connection forever. 421 at expiry.
   * Default 600000 (10 minutes); 0: none.
   */
  dataTimeout?: number;
  /** Largest message in bytes, advertised with SIZE and enforced (552). 0: no limit. Default 33554432. */
  dataSizeLimit?: number;
  /** Advertise and accept SMTPUTF8 (RFC 6531). Default false. */
  enableSMTPUTF8?: boolean;
  /** Give handlers `envelope.content` as a UTF-8 string instead of a Buffer. Default false. */
  decodeData?: boolean;
  /** Longest command line in octets, CRLF included (RFC 5321 §4.5.3.1.4). Default 512. */
  commandSizeLimit?: number;
  /**
   * aiosmtpd's per-command call limit: true for 20 calls of each command per connection, a
   * number for another limit, or a map from verb to limit with '*' for the rest. Default off.
   */
  commandCallLimit?: boolean | number | Record<string, number>;
  /** Unrecognized commands per connection; the last one gets 421 and a close. Default 5. */
  maxUnrecognizedCommands?: number;
  /** Error replies (4xx/5xx) per connection before 421 and a close, as Postfix's hard limit. Default 20. */
  maxErrors?: number;
  /** Recipients per message; past it RCPT gets 452 (RFC 5321 §4.5.3.1.8). Default 1000. */
  maxRecipients?: number;
  /**
   * RCPTs past `maxRecipients` (per transaction) whose 452 does not count toward `maxErrors`
   * (Postfix's smtpd_recipient_overshoot_limit), so a client with many recipients can deliver
   * to the accepted ones and send the rest later (RFC 5321 §4.5.3.1.10). Default 1000.
   */
  recipientOvershootLimit?: number;
  /**
   * Verbs that end the session at once with 421 (Postfix's smtpd_forbidden_commands): an HTTP
   * request sent to the SMTP port (cross-protocol attacks) must not get to run its body as
   * commands. Default ['CONNECT', 'GET', 'POST'].
   */
  forbiddenCommands?: string[];
  /** Pass unknown MAIL/RCPT parameters to the handler instead of answering 555. Default false. */
  acceptUnknownParameters?: boolean;
  /** Advertise DSN (RFC 3461) and parse RET, ENVID, NOTIFY, ORCPT into the mail/rcpt options. Default false (555). */
  enableDSN?: boolean;
  /**
   * Advertise REQUIRETLS (RFC 8689) once the session runs over TLS, and accept the MAIL
   * parameter there (mailOptions.requireTLS). Default false.
   */
  offerRequireTLS?: boolean;
  /** Offer STARTTLS (RFC 3207) with this context (or the options to make one). */
  tlsContext?: SecureContext | SecureContextOptions;
  /** Refuse everything but NOOP, EHLO, STARTTLS and QUIT before TLS (530). Default false. */
  requireStartTLS?: boolean;
  /** Ask STARTTLS clients for a certificate (kept in session.tls.peerCertificate). Default false. */
  tlsRequestCert?: boolean;
  /** Milliseconds a TLS handshake may take before the connection is dropped. Default 30000. */
  tlsHandshakeTimeout?: number;
  /** Decides AUTH PLAIN/LOGIN/CRAM-MD5 credentials; without one those are not offered. */
  authenticator?: Authenticator;
  /** Refuse mail commands until the client authenticated (530). Default false. */
  authRequired?: boolean;
  /** Offer and accept AUTH only over TLS. Default true. */
  authRequireTLS?: boolean;
  /** Mechanisms not to offer, e.g. ['LOGIN']. */
  authExcludeMechanism?: string[];
  /** Built-in mechanisms that are off by default and should be offered: ['CRAM-MD5']. */
  authIncludeMechanism?: string[];
  /** Failed AUTH attempts per connection; the last gets 421 and a close. Default 3. */
  maxAuthFailures?: number;
  /**
   * Clients allowed to use Postfix's XCLIENT to name the original client: addresses or CIDR
   * ranges ('10.0.0.0/8', '::1'). Default: none (XCLIENT not offered).
   */
  xclientAllow?: string[];
  /**
   * MTAs allowed to use Postfix's XFORWARD to forward the original client's attributes to a
   * content filter: addresses or CIDR ranges, as xclientAllow. Default: none (not offered).
   */
  xforwardAllow?: string[];
  /**
   * Expect a PROXY protocol v1/v2 header (HAProxy) first on every connection, within this many
   * ms (aiosmtpd's proxy_protocol_timeout); without one the connection is dropped, ungreeted.
   * Default: off.
   */
  proxyProtocolTimeout?: number;
  /**
   * Longest DATA text line in octets, CRLF included (RFC 5321 §4.5.3.1.6); a body with a longer
   * line is read to its end and answered `500 5.5.2 Line too long`, as aiosmtpd does. BDAT
   * bodies are binary and exempt. 0: no limit. Default 1001.
   */
  dataLineLimit?: number;
  /**
   * Commands to add or replace (verb → command), or to remove (verb → null), e.g.
   * `{ XPING: pingCommand, VRFY: null }`. See docs/commands.md.
   */
  commands?: CommandOverrides;
  /** Set by the controllers only. */
  [INTERNAL]?: InternalOptions;
  logger?: Logger;
}

export const DEFAULTS = {
  timeout: 300_000,
  stressTimeout: 10_000,
  stressMaxErrors: 1,
  dataTimeout: 600_000,
  dataSizeLimit: 33_554_432,
  commandSizeLimit: 512,
  maxUnrecognizedCommands: 5,
  maxErrors: 20,
  maxRecipients: 1000,
  recipientOvershootLimit: 1000,
  callLimit: 20,
  tlsHandshakeTimeout: 30_000,
  maxAuthFailures: 3,
  dataLineLimit: 1001,
};
