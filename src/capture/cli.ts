/**
 * The command line's capture options (`-c Capture`): where the HTTP side listens, its
 * authentication, the relay for release, AUTH accept-any for development, and storage limits.
 * src/cli.ts parses them through captureOption() and starts the HTTP side with startCaptureHttp().
 */
import { loadHtpasswd, verifyPassword } from '../htpasswd.js';
import type { Capture } from './capture.js';
import { FaultSyntaxError, parseFaultSpec, type FaultRule } from './faults.js';
import { CaptureHttpServer } from './http.js';
import type { RelayOptions } from './relay.js';

export interface CaptureCliOptions {
  httpHost: string;
  httpPort: number;
  httpAuthFile: string | null;
  relay: RelayOptions | null;
  acceptAnyAuth: boolean;
  authAllowInsecure: boolean;
  maxMessages: number;
  maxBytes: number;
  label: string;
  faults: FaultRule[];
  /** Some capture option was given (so -c must be Capture). */
  given: boolean;
}

export const CAPTURE_HELP = `
capture options (with -c Capture [MAILDIR]: in memory, or also kept in a Maildir, reloaded at start):
  --http [HOST:PORT]    Serve the web UI and Mailpit's API v1 there. Default localhost:8026
                        (127.0.0.1). Another address should come with --http-auth-file.
  --http-auth-file PATH Ask HTTP basic authentication against an htpasswd file.
  --relay HOST:PORT     Where the API's release sends messages (STARTTLS when offered).
  --auth-accept-any     Offer AUTH PLAIN/LOGIN and accept any credentials (development).
  --auth-allow-insecure With --auth-accept-any, offer AUTH without TLS too.
  --max-messages N      Keep at most N messages, pruning the oldest. Default 500; 0: no limit.
  --max-size BYTES      Keep at most this many bytes of messages, oldest out first. Default 0 (none).
  --label TEXT          A name for this instance in the web UI.
  --fault RULE          A fault to inject, STAGE[/MATCH][#N][%PERCENT] ACTION with STAGE one of
                        MAIL RCPT DATA AUTH and ACTION a reply ('550 5.1.1 No such user'),
                        delay=MS or drop; e.g. 'RCPT/*@bad.example 550 No', 'DATA#3 drop'.
                        May be repeated; the first rule that fires decides.
`;

export function defaultCaptureOptions(): CaptureCliOptions {
  return {
    httpHost: '127.0.0.1',
    httpPort: 8026,
    httpAuthFile: null,
    relay: null,
    acceptAnyAuth: false,
    authAllowInsecure: false,
    maxMessages: 500,
    maxBytes: 0,
    label: '',
    faults: [],
    given: false,
  };
}

export class CaptureOptionError extends Error {}

function hostPort(value: string, what: string, defaultPort: number): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:\s/]*))(?::([0-9]{1,5}))?$/.exec(value);
  if (m === null || Number(m[3] ?? defaultPort) > 65535) throw new CaptureOptionError(`argument ${what}: expected HOST:PORT: '${value}'`);
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' || host === 'localhost' ? '127.0.0.1' : host, port: Number(m[3] ?? defaultPort) };
}

function count(value: string, what: string): number {
  if (!/^[0-9]{1,12}$/.test(value)) throw new CaptureOptionError(`argument ${what}: expected a number: '${value}'`);
  return Number(value);
}

/** The long option names this module handles, and whether each takes a value ('optional' for --http). */
export const CAPTURE_OPTION_NAMES: Record<string, 'none' | 'required' | 'optional'> = {
  http: 'optional',
  'http-auth-file': 'required',
  relay: 'required',
  'auth-accept-any': 'none',
  'auth-allow-insecure': 'none',
  'max-messages': 'required',
  'max-size': 'required',
  label: 'required',
  fault: 'required',
};

export function captureOption(options: CaptureCliOptions, name: string, value: string | undefined): void {
  options.given = true;
  switch (name) {
    case 'http':
      if (value !== undefined) ({ host: options.httpHost, port: options.httpPort } = hostPort(value, '--http', 8026));
      return;
    case 'http-auth-file':
      options.httpAuthFile = value!;
      return;
    case 'relay':
      options.relay = hostPort(value!, '--relay', 25);
      return;
    case 'auth-accept-any':
      options.acceptAnyAuth = true;
      return;
    case 'auth-allow-insecure':
      options.authAllowInsecure = true;
      return;
    case 'max-messages':
      options.maxMessages = count(value!, '--max-messages');
      return;
    case 'max-size':
      options.maxBytes = count(value!, '--max-size');
      return;
    case 'label':
      options.label = value!;
      return;
    case 'fault':
      try {
        options.faults.push(parseFaultSpec(value!));
      } catch (error) {
        if (error instanceof FaultSyntaxError) throw new CaptureOptionError(`argument --fault: ${error.message}`);
        throw error;
      }
      return;
  }
}


const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

/** The limits and fault rules, in force before the SMTP side takes its first connection. */
export function configureCapture(capture: Capture, options: CaptureCliOptions): void {
  capture.store.maxMessages = options.maxMessages;
  capture.store.maxBytes = options.maxBytes;
  capture.store.prune();
  for (const rule of options.faults) capture.faults.add(rule);
}

/** Starts the HTTP side; returns it, and a warning to print when it is exposed without authentication. */
export async function startCaptureHttp(capture: Capture, options: CaptureCliOptions): Promise<{ http: CaptureHttpServer; warning: string | null }> {
  let authenticate: ((user: string, password: string) => Promise<boolean>) | undefined;
  if (options.httpAuthFile !== null) {
    const users = await loadHtpasswd(options.httpAuthFile);
    authenticate = async (user, password) => {
      const hash = users.get(user);
      return hash !== undefined && (await verifyPassword(password, hash));
    };
  }
  const http = new CaptureHttpServer(capture, {
    host: options.httpHost,
    port: options.httpPort,
    authenticate,
    relay: options.relay ?? undefined,
    label: options.label,
    database: capture.persistence?.dir ?? '',
  });
  await http.start();
  const warning =
    !LOOPBACK.test(options.httpHost) && authenticate === undefined
      ? `the HTTP side listens on ${options.httpHost}, beyond loopback, without authentication: anyone who reaches it reads the mail (use --http-auth-file)`
      : null;
  return { http, warning };
}
