/**
 * How to reach NATS, in our own words: the public types must not pull nats.js's declarations
 * into a user's build (they do not compile under exactOptionalPropertyTypes without skipLibCheck).
 */
export interface NatsOptions {
  /** One or more `nats://HOST:PORT` (or `tls://`) URLs: the cluster's seed servers. */
  servers: string | string[];
  /** Stream name. Default `MAIL`. */
  stream?: string;
  /** Subject of the envelope messages; chunks go to `SUBJECT.chunk`. Default `mail.in`. */
  subject?: string;
  user?: string;
  pass?: string;
  token?: string;
  /** A NATS `.creds` file (JWT + NKey seed), as `nsc` writes it. */
  credsFile?: string;
  /** TLS to NATS: a CA file to trust, and a client certificate and key for mutual TLS. */
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  /** When the stream is missing, create it with this many replicas (1, 3 or 5). Default 1. */
  replicas?: number;
  /** Create the stream when it is missing. Default true; false when operators manage it. */
  createStream?: boolean;
  /** JetStream's duplicate window for the idempotency id, ms. Default 120000 (two minutes). */
  duplicateWindow?: number;
  /** The connection's name, as the server's monitoring shows it. */
  name?: string;
}
