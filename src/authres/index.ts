/**
 * withAuthResults: a handler wrapper that verifies each message's SPF, DKIM, DMARC and ARC
 * (mailauth), gives the verdicts to the wrapped handler (`authResultsOf(envelope)`) and puts one
 * Authentication-Results header with our authserv-id in front of the message, after removing
 * any that forge it (RFC 8601 §5). Every other hook of the wrapped handler is used unchanged.
 */
import { PassThrough, type Readable } from 'node:stream';
import type { DNSResolver } from 'mailauth';
import type { Handler, SMTPServer } from '../handler.js';
import { Reply } from '../replies.js';
import { formatPeer, type Envelope, type Session } from '../session.js';
import { bodyOf } from '../handlers/headers.js';
import { prependHeader, removeForgedAuthResults } from './headers.js';
import { verifyMessage, type AuthResults } from './verify.js';
import { forwardedIp } from '../xforward.js';

export { authservIdOf, removeForgedAuthResults } from './headers.js';
export type { AuthResults, AuthResultValue, SpfVerdict, DkimVerdict, DmarcVerdict, ArcVerdict } from './verify.js';
export type { DNSResolver } from 'mailauth';

export interface AuthResultsOptions {
  /** The authserv-id written and guarded (RFC 8601 §2.5). Default: the server's hostname. */
  authservId?: string;
  /** `(name, rrtype) => records`, as `dns.promises.resolve`. Default: the system resolver. */
  resolver?: DNSResolver;
  /** Shortest DKIM/ARC key accepted, in bits. Default 1024. */
  minBitLength?: number;
}

const results = new WeakMap<Envelope, AuthResults>();
/** handleDeliver runs once per recipient; the message is verified once. */
const pending = new WeakMap<Envelope, Promise<void>>();

/** The verdicts for this envelope's message, once withAuthResults verified it (in handleDATA and handleDeliver). */
export function authResultsOf(envelope: Envelope): AuthResults | undefined {
  return results.get(envelope);
}

/**
 * For handleDATAStream: the verdicts once the whole body has arrived and been checked (DKIM's
 * body hash needs the last byte). Undefined when the envelope's message is not being verified.
 */
export async function authResultsReady(envelope: Envelope): Promise<AuthResults | undefined> {
  await pending.get(envelope);
  return results.get(envelope);
}

/**
 * The client's address as the checks should see it: the client a trusted MTA forwarded (XFORWARD,
 * when it gave an IP address), what a trusted XCLIENT said, else the peer.
 */
function clientIp(session: Session): string {
  const forwarded = forwardedIp(session.xforward);
  if (forwarded !== null) return forwarded;
  const given = session.xclient?.ADDR;
  if (typeof given === 'string' && given !== '') return given.replace(/^IPv6:/i, '');
  return session.peer.family === 'unix' ? '' : session.peer.address;
}

function clientHelo(session: Session): string | null {
  const forwarded = session.xforward?.HELO;
  if (typeof forwarded === 'string') return forwarded;
  const given = session.xclient?.HELO;
  return typeof given === 'string' && given !== '' ? given : session.hostName;
}

async function verify(server: SMTPServer, session: Session, envelope: Envelope, options: AuthResultsOptions): Promise<void> {
  const authservId = options.authservId ?? server.hostname;
  const received = bodyOf(envelope);
  // Verified as received: a signer may have covered headers that the §5 removal then takes out.
  const verdicts = await verifyMessage(received, {
    ip: clientIp(session),
    helo: clientHelo(session),
    mailFrom: envelope.mailFrom ?? '',
    authservId,
    resolver: options.resolver,
    minBitLength: options.minBitLength,
  });
  const { message, removed } = removeForgedAuthResults(received, authservId);
  const content = prependHeader(message, verdicts.header);
  envelope.originalContent = content;
  envelope.content = typeof envelope.content === 'string' ? content.toString('utf8') : content;
  results.set(envelope, { ...verdicts, removed });
}

/**
 * Streamed: the body goes to the handler and to the checks at once, at the pace of the slower
 * (backpressure), so nothing is buffered whole. The handler's bytes are the client's as sent: a
 * stream cannot take a header in front that depends on its own last byte, so `header` is for
 * the handler to write, and forged copies for it to drop (removeForgedAuthResults).
 */
function verifyStream(server: SMTPServer, session: Session, envelope: Envelope, stream: Readable, options: AuthResultsOptions): Readable {
  const toChecks = new PassThrough();
  const toHandler = new PassThrough();
  stream.on('data', (chunk: Buffer) => {
    const waits = [toChecks, toHandler].filter((out) => !out.write(chunk));
    if (waits.length === 0) return;
    stream.pause();
    let left = waits.length;
    for (const out of waits) out.once('drain', () => --left === 0 && stream.resume());
  });
  stream.on('end', () => {
    toChecks.end();
    toHandler.end();
  });
  stream.on('error', (error) => {
    toChecks.destroy(error);
    toHandler.destroy(error);
  });
  const done = verifyMessage(toChecks, {
    ip: clientIp(session),
    helo: clientHelo(session),
    mailFrom: envelope.mailFrom ?? '',
    authservId: options.authservId ?? server.hostname,
    resolver: options.resolver,
    minBitLength: options.minBitLength,
  }).then(
    (verdicts) => void results.set(envelope, { ...verdicts, removed: 0 }),
    () => undefined, // the body was cut off (size limit, client gone): no verdicts, and the engine answers
  );
  pending.set(envelope, done);
  return toHandler;
}

function verifyOnce(server: SMTPServer, session: Session, envelope: Envelope, options: AuthResultsOptions): Promise<void> {
  let p = pending.get(envelope);
  if (p === undefined) {
    p = verify(server, session, envelope, options);
    pending.set(envelope, p);
  }
  return p;
}

/**
 * Wraps a handler so each message is verified before its handleDATA (or handleDeliver, or
 * processMessage) sees it. A verification that throws (not a DNS failure: that is `temperror`)
 * reaches handleException, 451 by default, so the client retries and nothing is lost.
 */
export function withAuthResults<H extends Handler>(handler: H, options: AuthResultsOptions = {}): Handler {
  const perRecipient = handler.handleDATA === undefined && handler.handleDeliver !== undefined;
  const own: Handler = {};
  if (handler.handleDATAStream !== undefined) {
    own.handleDATAStream = async (server, session, envelope, stream) => {
      const body = verifyStream(server, session, envelope, stream, options);
      try {
        return await handler.handleDATAStream!(server, session, envelope, body);
      } finally {
        body.resume(); // a handler that answered early reads no more; the checks still get the rest
      }
    };
  }
  if (perRecipient) {
    own.handleDeliver = async (server, session, envelope, recipient) => {
      await verifyOnce(server, session, envelope, options);
      return handler.handleDeliver!(server, session, envelope, recipient);
    };
  } else {
    own.handleDATA = async (server, session, envelope) => {
      await verifyOnce(server, session, envelope, options);
      if (handler.handleDATA !== undefined) return handler.handleDATA(server, session, envelope);
      if (handler.processMessage !== undefined) {
        const r = await handler.processMessage(formatPeer(session.peer), envelope.mailFrom ?? '', envelope.rcptTos, envelope.content!);
        return r ?? Reply.DATA_OK;
      }
      return Reply.DATA_OK;
    };
  }
  // Every other property is the handler's own, bound to it (hooks added later, private fields).
  return new globalThis.Proxy(handler, {
    get(target, key) {
      if (key === 'handleDATA' || key === 'handleDeliver' || key === 'handleDATAStream') return own[key];
      if (key === 'processMessage') return undefined;
      const v: unknown = Reflect.get(target, key, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}
