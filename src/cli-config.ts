/** From parsed arguments to what the server needs: handler, certificates, authenticator, all checked. */
import { readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { Resolver, lookup } from 'node:dns/promises';
import { createSecureContext } from 'node:tls';
import { dirname, resolve as resolvePath } from 'node:path';
import type { Handler } from './handler.js';
import type { Authenticator } from './auth.js';
import { htpasswdAuthenticator, loadHtpasswd } from './htpasswd.js';
import { Capture } from './capture/capture.js';
import { configureCapture } from './capture/cli.js';
import type { AuthResultsOptions } from './authres/index.js';
import type { Args } from './cli-args.js';
import { CliError } from './cli-error.js';
import { loadHandlerClass, makeHandler, setUpHandler } from './cli-handler.js';

/** What the command line makes before anything listens. */
export interface Prepared {
  handler: Handler;
  starttls: TLSPair | undefined;
  smtps: TLSPair | undefined;
  authenticator: Authenticator | undefined;
}

type TLSPair = { cert: Buffer; key: Buffer };

/**
 * Checks the arguments against each other and against the machine, and makes the handler, the
 * certificates and the authenticator: every usage error surfaces here, before a port is bound.
 */
export async function prepare(args: Args): Promise<Prepared> {
  if (args.unix !== null) await checkUnixDirectory(args.unix);
  if (args.unix === null || args.listen) await checkListenHost(args.host);
  let handler = makeHandler(await loadHandlerClass(args.classpath), args.classargs);
  if (args.authResultsDns.length > 0 && args.authResults === null) throw new CliError('argument --auth-results-dns: needs --auth-results');
  await setUpHandler(handler, args.setuid && process.getuid?.() === 0);
  if (args.authResults !== null) {
    // mailauth costs ~300 ms and ~35 MiB at start: only a server that checks loads it.
    const { withAuthResults } = await import('./authres/index.js');
    handler = withAuthResults(handler, authResultsOptions(args.authResults, args.authResultsDns));
  }
  const starttls = readPair(args.tlscert, args.tlskey, '--tlscert and --tlskey');
  const smtps = readPair(args.smtpscert, args.smtpskey, '--smtpscert and --smtpskey');
  let authenticator: Authenticator | undefined;
  if (args.authFile !== null) {
    if (starttls === undefined && smtps === undefined) {
      throw new CliError('--auth-file needs --tlscert/--tlskey or --smtpscert/--smtpskey: AUTH is only offered over TLS');
    }
    try {
      await loadHtpasswd(args.authFile); // a bad file stops us now, not at the first login
    } catch (error) {
      throw new CliError((error as Error).message);
    }
    const fromFile = htpasswdAuthenticator(args.authFile, { reloadOnChange: true });
    // Capture puts its AUTH fault rules in front.
    authenticator = handler instanceof Capture ? handler.authenticator(fromFile) : fromFile;
  } else if (args.capture.acceptAnyAuth) {
    if (starttls === undefined && smtps === undefined && !args.capture.authAllowInsecure) {
      throw new CliError('--auth-accept-any needs --tlscert/--tlskey, --smtpscert/--smtpskey or --auth-allow-insecure');
    }
    if (handler instanceof Capture) authenticator = handler.authenticator();
  } else if (args.authRequired) {
    throw new CliError('--auth-required needs --auth-file or --auth-accept-any');
  }
  if (args.offerRequireTLS && starttls === undefined && smtps === undefined) {
    throw new CliError('--offer-requiretls needs --tlscert/--tlskey or --smtpscert/--smtpskey: REQUIRETLS is only offered over TLS');
  }
  if (args.capture.given && !(handler instanceof Capture)) throw new CliError('the capture options need -c Capture');
  if (handler instanceof Capture && args.workers > 1) throw new CliError('-c Capture keeps its mail in one process: it cannot run with --workers');
  if (handler instanceof Capture) configureCapture(handler, args.capture);
  // Fail now, with one line, on a certificate that does not load.
  for (const pair of [starttls, smtps]) {
    if (pair === undefined) continue;
    try {
      createSecureContext(pair);
    } catch (error) {
      throw new CliError(`bad certificate or key: ${(error as Error).message}`);
    }
  }
  return { handler, starttls, smtps, authenticator };
}

/** Reads a certificate/key pair given on the command line; both or neither. */
export function readPair(certPath: string | null, keyPath: string | null, names: string): TLSPair | undefined {
  if (certPath === null && keyPath === null) return undefined;
  if (certPath === null || keyPath === null) throw new CliError(`${names} must be given together`);
  try {
    return { cert: readFileSync(certPath), key: readFileSync(keyPath) };
  } catch (error) {
    throw new CliError(`cannot read ${names}: ${(error as Error).message}`);
  }
}

/** A --unix path whose directory is missing fails here, naming the user's path. */
async function checkUnixDirectory(path: string): Promise<void> {
  const dir = dirname(resolvePath(path));
  let isDirectory: boolean;
  try {
    isDirectory = (await stat(dir)).isDirectory();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new CliError(`argument --unix: cannot use ${path}: ${code === 'ENOENT' ? `directory ${dir} does not exist` : (error as Error).message}`);
  }
  if (!isDirectory) throw new CliError(`argument --unix: cannot use ${path}: ${dir} is not a directory`);
}

/** A -l host that does not resolve is a usage error, not a failure to listen. */
async function checkListenHost(host: string): Promise<void> {
  if (host === 'localhost' || isIP(host) !== 0) return;
  try {
    await lookup(host);
  } catch {
    throw new CliError(`argument -l/--listen: cannot resolve host '${host}'`);
  }
}

/** --auth-results[=ID] [--auth-results-dns SERVERS]: withAuthResults with our own resolver when servers are given. */
function authResultsOptions(id: string, servers: string[]): AuthResultsOptions {
  const options: AuthResultsOptions = id === '' ? {} : { authservId: id };
  if (servers.length === 0) return options;
  const resolver = new Resolver({ timeout: 2000, tries: 2 });
  resolver.setServers(servers);
  return { ...options, resolver: (name, rrtype) => resolver.resolve(name, rrtype) as Promise<string[][] | string[]> };
}
