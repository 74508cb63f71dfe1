/**
 * SASL for SMTP AUTH (RFC 4954): the PLAIN (RFC 4616), LOGIN and CRAM-MD5 (RFC 2195)
 * exchanges, and the authenticator contract (aiosmtpd's, made safe: every result is a reply).
 * The exchanges talk through a Conversation, so they are tested without sockets.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Handler, MaybePromise, SMTPServer } from './handler.js';
import type { Envelope, Session } from './session.js';

/** What a mechanism extracted from the client, handed to the authenticator. */
export type AuthData =
  | { mechanism: 'PLAIN' | 'LOGIN'; login: string; password: string; authzid?: string }
  | { mechanism: 'CRAM-MD5'; login: string; challenge: string; digest: string };

export interface AuthResult {
  success: boolean;
  /** The reply to send instead of the default 235 / 535. */
  message?: string;
  /** Kept in session.authData on success. Default: the login name (never the password). */
  authData?: unknown;
}

/**
 * Decides whether credentials are good. May be async; any result other than success (false,
 * a failed AuthResult) is a 535; a throw (a database down) is a 454, a temporary failure.
 */
export type Authenticator = (
  server: SMTPServer,
  session: Session,
  envelope: Envelope,
  mechanism: string,
  data: AuthData,
) => MaybePromise<AuthResult | boolean>;

/** The client answered `*` to a challenge (RFC 4954 §4): the exchange is cancelled. */
export class AuthCancelled extends Error {
  override name = 'AuthCancelled';
}
/** The client's response was not base64, or not what the mechanism needs. */
export class AuthSyntaxError extends Error {
  override name = 'AuthSyntaxError';
}

export interface Conversation {
  /** Sends `334 <base64 of challenge>` and returns the decoded response. */
  challenge(challenge: string): Promise<Buffer>;
}

export const BUILTIN_MECHANISMS = ['PLAIN', 'LOGIN', 'CRAM-MD5'] as const;

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Strict base64 (RFC 4954 §4): `=` alone is an empty response; `*` cancels. */
export function decodeResponse(text: string): Buffer {
  if (text === '*') throw new AuthCancelled('authentication cancelled');
  if (text === '=') return Buffer.alloc(0);
  if (!BASE64.test(text)) throw new AuthSyntaxError('invalid base64');
  return Buffer.from(text, 'base64');
}

function utf8(bytes: Buffer, what: string): string {
  const text = bytes.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(bytes) || text.includes('\0')) throw new AuthSyntaxError(`invalid ${what}`);
  return text;
}

/** RFC 4616: [authzid] NUL authcid NUL passwd. */
export function parsePlain(bytes: Buffer): AuthData {
  const first = bytes.indexOf(0);
  const second = first < 0 ? -1 : bytes.indexOf(0, first + 1);
  if (first < 0 || second < 0 || bytes.indexOf(0, second + 1) >= 0) throw new AuthSyntaxError('malformed PLAIN response');
  const authzid = utf8(bytes.subarray(0, first), 'authzid');
  const login = utf8(bytes.subarray(first + 1, second), 'authcid');
  const password = utf8(bytes.subarray(second + 1), 'password');
  if (login === '' || password === '') throw new AuthSyntaxError('empty PLAIN login or password');
  return authzid === '' ? { mechanism: 'PLAIN', login, password } : { mechanism: 'PLAIN', login, password, authzid };
}

/**
 * Runs a built-in mechanism's exchange. `initial` is the initial response (RFC 4954 §4), already
 * decoded, or null when the client sent none.
 */
export async function runMechanism(
  mechanism: (typeof BUILTIN_MECHANISMS)[number],
  initial: Buffer | null,
  conversation: Conversation,
  hostname: string,
): Promise<AuthData> {
  switch (mechanism) {
    case 'PLAIN':
      return parsePlain(initial ?? (await conversation.challenge('')));
    case 'LOGIN': {
      // Some clients put the user name in the initial response (draft-murchison-sasl-login).
      const login = utf8(initial ?? (await conversation.challenge('Username:')), 'login');
      const password = utf8(await conversation.challenge('Password:'), 'password');
      if (login === '' || password === '') throw new AuthSyntaxError('empty LOGIN login or password');
      return { mechanism: 'LOGIN', login, password };
    }
    case 'CRAM-MD5': {
      if (initial !== null) throw new AuthSyntaxError('CRAM-MD5 takes no initial response');
      const challenge = `<${randomBytes(12).toString('hex')}.${Date.now()}@${hostname}>`;
      const response = utf8(await conversation.challenge(challenge), 'response');
      const m = /^(.+) ([0-9a-f]{32})$/.exec(response);
      if (m === null) throw new AuthSyntaxError('malformed CRAM-MD5 response');
      return { mechanism: 'CRAM-MD5', login: m[1]!, challenge, digest: m[2]! };
    }
  }
}

/** For an authenticator that knows a CRAM-MD5 user's password: is the digest right? */
export function verifyCramMD5(data: { challenge: string; digest: string }, password: string): boolean {
  const expected = createHmac('md5', password).update(data.challenge).digest();
  const given = Buffer.from(data.digest, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** Mechanisms a handler defines as `authNAME` methods (aiosmtpd's `auth_NAME`): `authXOAUTH2`, `authCRAM_MD5`. */
export function handlerMechanisms(handler: Handler): Map<string, string> {
  const found = new Map<string, string>();
  for (let o: object | null = handler; o !== null && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const key of Object.getOwnPropertyNames(o)) {
      const m = /^auth([A-Z0-9_]+)$/.exec(key);
      if (m !== null && typeof (handler as unknown as Record<string, unknown>)[key] === 'function') {
        const name = m[1]!.replace(/_/g, '-');
        if (!found.has(name)) found.set(name, key);
      }
    }
  }
  return found;
}

