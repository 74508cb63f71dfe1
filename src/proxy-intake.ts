/**
 * The PROXY protocol header (HAProxy, v1 or v2) on a new connection: gathered until it parses,
 * before any greeting, and the handler's say on the connection it announces.
 */
import type { Handler, SMTPServer } from './handler.js';
import { parseProxyHeader, type ProxyData } from './proxy-protocol.js';
import type { Envelope, Session } from './session.js';

export type ProxyIntake =
  | { status: 'incomplete' }
  | { status: 'invalid'; reason: string }
  /** `rest`: what came behind the header in the same reads (SMTP, or a TLS handshake). */
  | { status: 'ok'; data: ProxyData; rest: Buffer };

export class ProxyHeaderInput {
  #read: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): ProxyIntake {
    const buf = this.#read.length === 0 ? chunk : Buffer.concat([this.#read, chunk]);
    const parsed = parseProxyHeader(buf);
    if (parsed.status === 'incomplete') this.#read = buf;
    if (parsed.status !== 'ok') return parsed;
    return { status: 'ok', data: parsed.data, rest: buf.subarray(parsed.length) };
  }
}

/** handlePROXY's verdict: only `true` admits; a handler that throws refuses. */
export async function proxyAdmitted(
  handler: Handler,
  server: SMTPServer,
  session: Session,
  envelope: Envelope,
  data: ProxyData,
  logError: (message: string, error: unknown) => void,
): Promise<boolean> {
  if (handler.handlePROXY === undefined) return true;
  try {
    return (await handler.handlePROXY(server, session, envelope, data)) === true;
  } catch (error) {
    logError('handlePROXY error', error);
    return false;
  }
}
