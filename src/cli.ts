#!/usr/bin/env node
/**
 * tsmtpd: the command-line server, option for option aiosmtpd's
 * (`-n -c -s -u -d -l -v -h`, positional arguments for the handler's fromCli).
 */
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { stat, unlink, writeFile } from 'node:fs/promises';
import { isIP, isIPv6 } from 'node:net';
import { Resolver, lookup } from 'node:dns/promises';
import { availableParallelism } from 'node:os';
import { createSecureContext } from 'node:tls';
import { pathToFileURL } from 'node:url';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { raiseMallocThresholds } from './malloc-thresholds.js';
import { Controller, UnixSocketController, checkSocketPath } from './controller.js';
import { UsageError, type Handler, type HandlerClass } from './handler.js';
import { Mailbox } from './handlers/mailbox.js';
import { builtinLoaders } from './handlers/builtin.js';
import { LOG_FORMATS, notice, stderrLogger, type LogFormat } from './cli-log.js';
import type { Authenticator } from './auth.js';
import { htpasswdAuthenticator, loadHtpasswd } from './htpasswd.js';
import { VERSION } from './version.js';
import { runPrimary, type ListeningMessage } from './workers.js';
import { Capture } from './capture/capture.js';
import type { AuthResultsOptions } from './authres/index.js';
import {
  CAPTURE_HELP,
  CAPTURE_OPTION_NAMES,
  CaptureOptionError,
  captureOption,
  configureCapture,
  defaultCaptureOptions,
  startCaptureHttp,
  type CaptureCliOptions,
} from './capture/cli.js';

const USAGE = `usage: tsmtpd [-h] [-v] [-n] [-c CLASSPATH] [-s SIZE] [-u] [-d] [--log-format FORMAT] [-l [HOST:PORT]] [--tlscert TLSCERT] [--tlskey TLSKEY] [--no-requiretls] [--smtpscert SMTPSCERT] [--smtpskey SMTPSKEY] [--auth-file PATH] [--auth-required] [--lmtp] [--unix PATH] [--unix-mode MODE] [--proxy-protocol[=SECONDS]] [--xclient-allow ADDRS] [--xforward-allow ADDRS] [--dsn] [--offer-requiretls] [--accept-unknown-parameters] [--auth-results[=ID]] [--auth-results-dns SERVERS] [--data-line-limit N] [--workers N] [--shutdown-timeout S] [capture options] [classargs ...]`;

const HELP = `${USAGE}

An RFC 5321 SMTP server with extensions, option-compatible with aiosmtpd.

positional arguments:
  classargs             Additional arguments passed to the handler CLASS (its static fromCli).

options:
  -h, --help            Show this help message and exit.
  -v, --version         Show the version and exit.
  -n, --nosetuid        This program generally tries to setuid nobody, unless this flag is set.
                        The setuid call will fail if this program is not run as root (in which
                        case, use this flag).
  -c CLASSPATH, --class CLASSPATH
                        Use the given class, as a built-in name (Debugging, Sink, Mailbox, Proxy, JetStream, Capture) or
                        MODULE:EXPORT (e.g. ./my-handler.js:MyHandler), as the handler class.
                        Default: Debugging. (-c Sink buffered: a Sink that gathers each body.)
  -s SIZE, --size SIZE  The maximum message size in bytes, advertised with SIZE and enforced
                        (552). 0 means no limit. Default: 33554432.
  --data-line-limit N   Longest DATA text line in octets with its CRLF; a longer one gets
                        500 5.5.2 after the body (BDAT is exempt). 0 means none. Default: 1001.
  -u, --smtputf8        Enable the SMTPUTF8 extension (RFC 6531).
  -d, --debug           Log each connection's conversation on stderr, both directions, with a
                        connection id and a timestamp (AUTH masked, bodies not logged); -dd
                        also body sizes, TLS parameters and hook timings.
  --log-format FORMAT   text (the default) or json: one JSON object a line, for log shippers.
  --lmtp                Speak LMTP (RFC 2033) instead of SMTP.
  --unix PATH           Listen on a Unix socket at PATH (instead of TCP, unless -l is given too).
  --unix-mode MODE      File mode of the Unix socket, in octal (e.g. 660).
  --tlscert TLSCERT     Certificate (PEM) for STARTTLS; TLS is then required (see --no-requiretls).
  --tlskey TLSKEY       Private key (PEM) for STARTTLS.
  --no-requiretls       With --tlscert, accept mail without STARTTLS too.
  --smtpscert SMTPSCERT Certificate (PEM) for implicit TLS (SMTPS, RFC 8314) on the listener.
  --smtpskey SMTPSKEY   Private key (PEM) for implicit TLS.
  --auth-file PATH      Offer AUTH PLAIN and LOGIN (over TLS only) against an Apache htpasswd
                        file (bcrypt as written by htpasswd -B, $apr1$, {SHA}); re-read when
                        it changes.
  --auth-required       Refuse mail until the client authenticated (530).
  --proxy-protocol[=SECONDS]
                        Expect a PROXY protocol v1/v2 header (HAProxy's send-proxy /
                        send-proxy-v2) first on every connection, within SECONDS (default 5);
                        the handler then sees the real client address.
  --xclient-allow ADDRS Offer Postfix's XCLIENT to these clients (comma-separated addresses or
                        CIDR ranges; may be repeated).
  --xforward-allow ADDRS
                        Offer Postfix's XFORWARD to these MTAs (a content filter's front end;
                        comma-separated addresses or CIDR ranges; may be repeated).
  --dsn                 Offer DSN (RFC 3461): RET, ENVID, NOTIFY and ORCPT are checked and given
                        to the handler typed (without it they get 555).
  --offer-requiretls    Offer REQUIRETLS (RFC 8689) once a session runs over TLS (needs
                        --tlscert or --smtpscert). Not aiosmtpd's --no-requiretls.
  --accept-unknown-parameters
                        Give MAIL/RCPT parameters the server does not know to the handler
                        (mailOptions.unknown) instead of answering 555.
  --auth-results[=ID]   Check SPF, DKIM, DMARC and ARC for each message and put one
                        Authentication-Results header (RFC 8601) in front, with authserv-id ID
                        (default: the server's hostname); forged ones naming ID are removed.
  --auth-results-dns SERVERS
                        DNS servers those checks ask (IP or IP:PORT, comma-separated);
                        default: the system's resolver.
  --workers N           Serve from N processes (node:cluster) on the same listeners; 'auto' is one
                        per core. A worker that dies is restarted. Default: 1.
  --shutdown-timeout S  On SIGTERM/SIGINT, seconds open transactions may take to finish before
                        421. Default: 10.
  -l [HOST:PORT], --listen [HOST:PORT]
                        Optional host and port to listen on. If the PORT part is not given, then
                        port 8025 is used. If only :PORT is given, then localhost is used for the
                        hostname. If neither are given, localhost:8025 is used; localhost means
                        both ::1 (where available) and 127.0.0.1.
${CAPTURE_HELP}`;

const DEFAULT_PORT = 8025;

interface Args {
  setuid: boolean;
  classpath: string;
  size: number;
  dataLineLimit: number;
  smtputf8: boolean;
  debug: number;
  logFormat: LogFormat;
  host: string;
  port: number;
  /** -l was given: listen on TCP even with --unix. */
  listen: boolean;
  lmtp: boolean;
  unix: string | null;
  unixMode: number | undefined;
  tlscert: string | null;
  tlskey: string | null;
  requireTLS: boolean;
  dsn: boolean;
  offerRequireTLS: boolean;
  acceptUnknownParameters: boolean;
  /** --auth-results: '' for the server's hostname as authserv-id; null: off. */
  authResults: string | null;
  /** --auth-results-dns: the DNS servers its checks ask; empty: the system's. */
  authResultsDns: string[];
  smtpscert: string | null;
  smtpskey: string | null;
  workers: number;
  /** Seconds to wait for a PROXY header; null: no PROXY protocol. */
  proxyProtocol: number | null;
  xclientAllow: string[];
  xforwardAllow: string[];
  authFile: string | null;
  authRequired: boolean;
  /** Seconds SIGTERM lets open transactions finish before 421. */
  shutdownTimeout: number;
  classargs: string[];
  /** The -c Capture options (src/capture/cli.ts). */
  capture: CaptureCliOptions;
}

class CliError extends Error {}

function parseListen(value: string): { host: string; port: number } {
  let host = value;
  let port = String(DEFAULT_PORT);
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(value);
  if (bracketed !== null) {
    host = bracketed[1]!;
    if (bracketed[2] !== undefined) port = bracketed[2];
    if (!isIPv6(host)) throw new CliError(`'${value}': only an IPv6 address goes in [brackets]`);
  } else if (value.includes('[') || value.includes(']')) {
    throw new CliError(`'${value}': unbalanced brackets (write an IPv6 address as [::1]:8025)`);
  } else if (value.includes(':')) {
    // aiosmtpd splits at the last colon, so "::1:8025" is host ::1, port 8025.
    const at = value.lastIndexOf(':');
    host = value.slice(0, at);
    port = value.slice(at + 1);
    if (host.includes(':') && !isIPv6(host)) throw new CliError(`'${value}': '${host}' is not an IPv6 address`);
  }
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) > 65535) throw new CliError(`'${value}': the port must be a number from 0 to 65535`);
  if (!host.includes(':') && !/^[A-Za-z0-9._-]*$/.test(host)) throw new CliError(`'${value}': '${host}' is not a host name or address`);
  return { host: host === '' ? 'localhost' : host, port: Number(port) };
}

/** Why an --xclient-allow entry is no address or CIDR range, or null when it is one. */
function addressEntryProblem(entry: string): string | null {
  const [address = '', bits, extra] = entry.split('/');
  const family = isIP(address);
  if (extra !== undefined || family === 0) return `'${entry}' is not an IP address or CIDR range`;
  const max = family === 4 ? 32 : 128;
  if (bits !== undefined && (!/^[0-9]{1,3}$/.test(bits) || Number(bits) > max)) {
    return `'${entry}': the prefix length must be 0 to ${max}`;
  }
  return null;
}

/** Appends the comma-separated addresses or CIDR ranges of `value` to `list`, or throws for a bad one. */
function pushAddressEntries(list: string[], value: string): void {
  for (const entry of value.split(',')) {
    const problem = addressEntryProblem(entry);
    if (problem !== null) throw new CliError(problem);
    list.push(entry);
  }
}

/** One option: its spellings, whether it takes a value, and what it does to Args. */
interface OptionSpec {
  short?: string;
  long: string;
  /** 'inline': the value may only be given as --name=VALUE (it is optional). */
  value: 'none' | 'required' | 'optional' | 'inline';
  apply(args: Args, value: string | undefined): void | 'help' | 'version';
}

const OPTIONS: OptionSpec[] = [
  { short: 'h', long: 'help', value: 'none', apply: () => 'help' },
  { short: 'v', long: 'version', value: 'none', apply: () => 'version' },
  { short: 'n', long: 'nosetuid', value: 'none', apply: (a) => void (a.setuid = false) },
  { short: 'c', long: 'class', value: 'required', apply: (a, v) => void (a.classpath = v!) },
  {
    short: 's',
    long: 'size',
    value: 'required',
    apply: (a, v) => {
      if (!/^[0-9]+$/.test(v!) || !Number.isSafeInteger(Number(v))) {
        throw new CliError(`expected a whole number of bytes (0: no limit), got '${v}'`);
      }
      a.size = Number(v);
    },
  },
  {
    long: 'data-line-limit',
    value: 'required',
    apply: (a, v) => {
      if (!/^[0-9]+$/.test(v!)) throw new CliError(`argument --data-line-limit: invalid int value: '${v}'`);
      a.dataLineLimit = Number(v);
    },
  },
  { short: 'u', long: 'smtputf8', value: 'none', apply: (a) => void (a.smtputf8 = true) },
  { short: 'd', long: 'debug', value: 'none', apply: (a) => void a.debug++ },
  {
    long: 'log-format',
    value: 'required',
    apply: (a, v) => {
      if (!(LOG_FORMATS as readonly string[]).includes(v!)) throw new CliError(`expected one of ${LOG_FORMATS.join(', ')}, got '${v}'`);
      a.logFormat = v as LogFormat;
    },
  },
  {
    short: 'l',
    long: 'listen',
    value: 'optional',
    apply: (a, v) => {
      a.listen = true;
      if (v !== undefined) Object.assign(a, parseListen(v));
    },
  },
  { long: 'lmtp', value: 'none', apply: (a) => void (a.lmtp = true) },
  {
    long: 'unix',
    value: 'required',
    apply: (a, v) => {
      if (v === '') throw new CliError('expected a path');
      a.unix = v!;
    },
  },
  {
    long: 'unix-mode',
    value: 'required',
    apply: (a, v) => {
      if (!/^[0-7]{3,4}$/.test(v!)) throw new CliError(`expected an octal mode such as 660, got '${v}'`);
      a.unixMode = Number.parseInt(v!, 8);
    },
  },
  { long: 'tlscert', value: 'required', apply: (a, v) => void (a.tlscert = v!) },
  { long: 'tlskey', value: 'required', apply: (a, v) => void (a.tlskey = v!) },
  { long: 'no-requiretls', value: 'none', apply: (a) => void (a.requireTLS = false) },
  { long: 'dsn', value: 'none', apply: (a) => void (a.dsn = true) },
  { long: 'offer-requiretls', value: 'none', apply: (a) => void (a.offerRequireTLS = true) },
  { long: 'accept-unknown-parameters', value: 'none', apply: (a) => void (a.acceptUnknownParameters = true) },
  {
    long: 'auth-results',
    value: 'inline',
    apply: (a, v) => {
      // RFC 8601 §2.5: the authserv-id is a domain name (a value token); white space or ';' would break the header.
      if (v !== undefined && !/^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(v)) throw new CliError(`expected a domain name as authserv-id, got '${v}'`);
      a.authResults = v ?? '';
    },
  },
  {
    long: 'auth-results-dns',
    value: 'required',
    apply: (a, v) => {
      for (const entry of v!.split(',')) {
        if (!isDnsServer(entry)) throw new CliError(`expected IP or IP:PORT ([IPv6]:PORT) DNS servers, comma-separated, got '${entry}'`);
        a.authResultsDns.push(entry);
      }
    },
  },
  { long: 'smtpscert', value: 'required', apply: (a, v) => void (a.smtpscert = v!) },
  { long: 'smtpskey', value: 'required', apply: (a, v) => void (a.smtpskey = v!) },
  {
    long: 'proxy-protocol',
    value: 'inline',
    apply: (a, v) => {
      if (v !== undefined && !/^[0-9]+(\.[0-9]+)?$/.test(v)) throw new CliError(`expected seconds, got '${v}'`);
      a.proxyProtocol = v === undefined ? 5 : Number(v);
    },
  },
  {
    long: 'xclient-allow',
    value: 'required',
    apply: (a, v) => {
      for (const entry of v!.split(',')) {
        const problem = addressEntryProblem(entry);
        if (problem !== null) throw new CliError(problem);
        a.xclientAllow.push(entry);
      }
    },
  },
  { long: 'xforward-allow', value: 'required', apply: (a, v) => pushAddressEntries(a.xforwardAllow, v!) },
  { long: 'auth-file', value: 'required', apply: (a, v) => void (a.authFile = v!) },
  { long: 'auth-required', value: 'none', apply: (a) => void (a.authRequired = true) },
  {
    long: 'workers',
    value: 'required',
    apply: (a, v) => {
      if (v === 'auto') a.workers = availableParallelism();
      else if (/^[1-9][0-9]{0,2}$/.test(v!)) a.workers = Number(v);
      else throw new CliError(`expected a number of processes (1-999) or 'auto', got '${v}'`);
    },
  },
  {
    long: 'shutdown-timeout',
    value: 'required',
    apply: (a, v) => {
      if (!/^[0-9]+(\.[0-9]+)?$/.test(v!)) throw new CliError(`expected seconds, got '${v}'`);
      a.shutdownTimeout = Number(v);
    },
  },
  ...Object.entries(CAPTURE_OPTION_NAMES).map(
    ([long, value]): OptionSpec => ({ long, value, apply: (a, v) => captureOption(a.capture, long, v) }),
  ),
];

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The option as argparse names it in errors: `-s/--size`, `--unix`. */
function optionName(spec: OptionSpec): string {
  return spec.short === undefined ? `--${spec.long}` : `-${spec.short}/--${spec.long}`;
}

/** Reads a certificate/key pair given on the command line; both or neither. */
function readPair(certPath: string | null, keyPath: string | null, names: string): { cert: Buffer; key: Buffer } | undefined {
  if (certPath === null && keyPath === null) return undefined;
  if (certPath === null || keyPath === null) throw new CliError(`${names} must be given together`);
  try {
    return { cert: readFileSync(certPath), key: readFileSync(keyPath) };
  } catch (error) {
    throw new CliError(`cannot read ${names}: ${(error as Error).message}`);
  }
}

function parseArgs(argv: string[]): Args | 'help' | 'version' {
  const args: Args = {
    setuid: true,
    classpath: 'Debugging',
    size: 33_554_432,
    dataLineLimit: 1001,
    smtputf8: false,
    debug: 0,
    logFormat: 'text',
    host: 'localhost',
    port: DEFAULT_PORT,
    listen: false,
    lmtp: false,
    unix: null,
    unixMode: undefined,
    tlscert: null,
    tlskey: null,
    requireTLS: true,
    dsn: false,
    offerRequireTLS: false,
    acceptUnknownParameters: false,
    authResults: null,
    authResultsDns: [],
    smtpscert: null,
    smtpskey: null,
    workers: 1,
    proxyProtocol: null,
    xclientAllow: [],
    xforwardAllow: [],
    authFile: null,
    authRequired: false,
    shutdownTimeout: 10,
    classargs: [],
    capture: defaultCaptureOptions(),
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      args.classargs.push(...argv.slice(i + 1));
      break;
    }
    // Each entry: an option and the value written into the same argument, if any.
    const found: Array<[OptionSpec, string | undefined]> = [];
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = arg.slice(2, eq < 0 ? undefined : eq);
      const spec = OPTIONS.find((o) => o.long === name);
      if (spec === undefined) throw new CliError(`unrecognized arguments: ${arg}`);
      if (eq >= 0 && spec.value === 'none') throw new CliError(`argument --${name}: ignored explicit argument`);
      found.push([spec, eq < 0 ? undefined : arg.slice(eq + 1)]);
    } else if (arg.startsWith('-') && arg.length > 1) {
      // Clustered short flags (-nu), or a short option with its value attached (-s100).
      for (let k = 1; k < arg.length; k++) {
        const spec = OPTIONS.find((o) => o.short === arg[k]);
        if (spec === undefined) throw new CliError(`unrecognized arguments: ${arg}`);
        if (spec.value !== 'none' && k + 1 < arg.length) {
          found.push([spec, arg.slice(k + 1)]);
          break;
        }
        found.push([spec, undefined]);
      }
    } else {
      args.classargs.push(arg);
      continue;
    }
    for (let [spec, value] of found) {
      const next = argv[i + 1];
      if (value === undefined && spec.value === 'required') {
        if (next === undefined) throw new CliError(`argument ${optionName(spec)}: expected one argument`);
        value = next;
        i++;
      } else if (value === undefined && spec.value === 'optional' && next !== undefined && !next.startsWith('-')) {
        // argparse's nargs='?': the next word is the value unless it looks like an option.
        value = next;
        i++;
      }
      let result: ReturnType<OptionSpec['apply']>;
      try {
        result = spec.apply(args, value);
      } catch (error) {
        if (error instanceof CliError) throw new CliError(`argument ${optionName(spec)}: ${error.message}`);
        throw error;
      }
      if (result !== undefined) return result;
    }
  }
  return args;
}

/** True for a class (or a constructor function with methods), not a plain function. */
function isClass(value: unknown): value is HandlerClass {
  if (typeof value !== 'function') return false;
  if (/^class\b/.test(Function.prototype.toString.call(value))) return true;
  if (typeof (value as { fromCli?: unknown }).fromCli === 'function') return true;
  const proto = (value as { prototype?: object }).prototype;
  return proto !== undefined && Object.getOwnPropertyNames(proto).some((name) => name !== 'constructor');
}

async function loadHandlerClass(classpath: string): Promise<HandlerClass> {
  // aiosmtpd spells built-ins as aiosmtpd.handlers.Name: accept that too.
  const bare = classpath.replace(/^(?:aiosmtpd|tsmtpd)\.handlers\./, '');
  const builtin = builtinLoaders[bare];
  if (builtin !== undefined) return builtin();
  const colon = classpath.lastIndexOf(':');
  if (colon <= 0 || colon === classpath.length - 1) {
    throw new CliError(`argument -c/--class: unknown handler class '${classpath}': use a built-in name (${Object.keys(builtinLoaders).join(', ')}) or MODULE:EXPORT`);
  }
  const modulePath = classpath.slice(0, colon);
  const exportName = classpath.slice(colon + 1);
  const specifier =
    modulePath.startsWith('.') || modulePath.startsWith('/') ? pathToFileURL(resolvePath(modulePath)).href : modulePath;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(specifier)) as Record<string, unknown>;
  } catch (error) {
    throw new CliError(`argument -c/--class: cannot load module '${modulePath}': ${(error as Error).message.split('\n')[0]}`);
  }
  const cls = mod[exportName];
  if (cls === undefined) throw new CliError(`argument -c/--class: module '${modulePath}' has no export '${exportName}'`);
  if (!isClass(cls)) throw new CliError(`argument -c/--class: '${classpath}' is not a handler class (got a ${typeof cls === 'function' ? 'function' : typeof cls})`);
  return cls;
}

function makeHandler(cls: HandlerClass, classargs: string[]): Handler {
  if (typeof cls.fromCli !== 'function' && classargs.length > 0) throw new CliError(`-c ${cls.name}: takes no arguments`);
  try {
    return typeof cls.fromCli === 'function' ? cls.fromCli(...classargs) : new cls();
  } catch (error) {
    // The handler's own complaint about its arguments, in its words (docs/cli.md shows them).
    if (error instanceof UsageError) throw error;
    throw new CliError(`argument -c/--class: cannot make a ${cls.name}: ${(error as Error).message.split('\n')[0]}`);
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

/** The group nobody runs in: Debian's nogroup, else nobody. */
function servingGroup(): string {
  try {
    process.setegid!('nogroup');
    return 'nogroup';
  } catch {
    process.setegid!('nobody');
    return 'nobody';
  }
}

/**
 * Runs the handler's setup as the user the server will serve as, so what it makes (Mailbox's
 * Maildir) belongs to nobody and what nobody could not use fails now, not as 451 per message.
 */
async function asServingUser<T>(fn: () => Promise<T>): Promise<T> {
  process.setgroups!([servingGroup()]);
  process.seteuid!('nobody');
  try {
    return await fn();
  } finally {
    // Back to root to bind the ports and read the keys: the user first, as only root may set the group.
    process.seteuid!(0);
    process.setegid!(0);
  }
}

function dropPrivileges(): void {
  // Bound already, as root: now become nobody, so a handler bug cannot act as root.
  const group = servingGroup();
  process.setgid!(group);
  process.setgroups?.([group]);
  process.setuid!('nobody');
}

/** Mailbox's check that its Maildir takes files: a directory nobody may enter but not write in. */
async function probeWritable(dir: string): Promise<void> {
  const probe = join(dir, `.tsmtpd-probe-${process.pid}`);
  await writeFile(probe, '', { flag: 'wx' });
  await unlink(probe);
}

/**
 * A server holds many long-lived connections and makes little garbage per message. V8 doubles its
 * young generation whenever much of it survives a scavenge, which a burst of new connections
 * does; the grown semi-spaces stay resident, about 4 KiB per connection. Holding the young
 * generation at its initial size costs no measured throughput (docs/memory.md). A
 * `--semi-space-growth-factor` or `--max-semi-space-size` given to node wins.
 */
function keepYoungGenerationSmall(): void {
  const given = [...process.execArgv, process.env['NODE_OPTIONS'] ?? ''].join(' ');
  if (!/semi[-_]space/.test(given)) setFlagsFromString('--semi-space-growth-factor=1');
}

/** An IP address, or IP:PORT / [IPv6]:PORT, as Resolver.setServers takes them. */
function isDnsServer(entry: string): boolean {
  if (isIP(entry) !== 0) return true;
  const m = /^(?:\[([^\]]+)\]|([^:]+)):([0-9]{1,5})$/.exec(entry);
  if (m === null || Number(m[3]) > 65535) return false;
  return m[1] !== undefined ? isIPv6(m[1]) : isIP(m[2]!) === 4;
}

/** --auth-results[=ID] [--auth-results-dns SERVERS]: withAuthResults with our own resolver when servers are given. */
function authResultsOptions(id: string, servers: string[]): AuthResultsOptions {
  const options: AuthResultsOptions = id === '' ? {} : { authservId: id };
  if (servers.length === 0) return options;
  const resolver = new Resolver({ timeout: 2000, tries: 2 });
  resolver.setServers(servers);
  return { ...options, resolver: (name, rrtype) => resolver.resolve(name, rrtype) as Promise<string[][] | string[]> };
}

async function main(argv: string[]): Promise<number> {
  keepYoungGenerationSmall();
  raiseMallocThresholds();
  let args: ReturnType<typeof parseArgs>;
  let handler: Handler;
  let starttls: { cert: Buffer; key: Buffer } | undefined;
  let smtps: { cert: Buffer; key: Buffer } | undefined;
  let authenticator: Authenticator | undefined;
  try {
    args = parseArgs(argv);
    if (args === 'help') {
      process.stdout.write(HELP);
      return 0;
    }
    if (args === 'version') {
      process.stdout.write(`tsmtpd ${VERSION}\n`);
      return 0;
    }
    if (args.unix !== null) await checkUnixDirectory(args.unix);
    if (args.unix === null || args.listen) await checkListenHost(args.host);
    handler = makeHandler(await loadHandlerClass(args.classpath), args.classargs);
    if (args.authResultsDns.length > 0 && args.authResults === null) throw new CliError('argument --auth-results-dns: needs --auth-results');
    // A handler with setup to do (Mailbox creates its Maildir, as aiosmtpd's does at start)
    // does it now, so a bad path is an error at start, not at the first message.
    const init = (handler as { init?: () => unknown }).init;
    const mailbox = handler instanceof Mailbox ? handler : null;
    const setup = async () => {
      if (typeof init === 'function') await init.call(handler);
      if (mailbox !== null) await probeWritable(join(mailbox.mailDir, 'tmp'));
    };
    const asNobody = args.setuid && process.getuid?.() === 0;
    try {
      await (asNobody ? asServingUser(setup) : setup());
    } catch (error) {
      const why = (error as Error).message;
      const code = (error as NodeJS.ErrnoException).code;
      if (asNobody && (code === 'EACCES' || code === 'EPERM')) {
        throw new CliError(`handler setup failed as user nobody (the user tsmtpd serves as when started as root): ${why}; chown it to nobody, or run with -n`);
      }
      throw new CliError(`handler setup failed: ${why}`);
    }
    if (args.authResults !== null) {
      // mailauth costs ~300 ms and ~35 MiB at start: only a server that checks loads it.
      const { withAuthResults } = await import('./authres/index.js');
      handler = withAuthResults(handler, authResultsOptions(args.authResults, args.authResultsDns));
    }
    starttls = readPair(args.tlscert, args.tlskey, '--tlscert and --tlskey');
    smtps = readPair(args.smtpscert, args.smtpskey, '--smtpscert and --smtpskey');
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
  } catch (error) {
    if (error instanceof CliError || error instanceof UsageError || error instanceof CaptureOptionError) {
      process.stderr.write(`tsmtpd: error: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  const isRoot = process.getuid?.() === 0;
  if (args.setuid && !isRoot) {
    process.stderr.write('tsmtpd: Cannot setuid "nobody"; try running with -n option.\n');
    return 1;
  }

  if (args.workers > 1 && cluster.isPrimary) {
    if (args.unix !== null) {
      // The workers share one socket that the primary binds: clear a stale one first.
      try {
        await checkSocketPath(args.unix);
        await unlink(args.unix).catch(() => undefined);
      } catch (error) {
        process.stderr.write(`tsmtpd: error: cannot listen on ${args.unix}: ${(error as Error).message}\n`);
        return 1;
      }
    }
    return runPrimary(args.workers, (text) => process.stderr.write(`tsmtpd: ${text}\n`));
  }

  const logger = stderrLogger(args.debug, args.logFormat);
  const common = {
    dataSizeLimit: args.size,
    dataLineLimit: args.dataLineLimit,
    enableSMTPUTF8: args.smtputf8,
    lmtp: args.lmtp,
    logger,
    tlsContext: starttls,
    // aiosmtpd: with a STARTTLS certificate, TLS is required unless --no-requiretls.
    requireStartTLS: starttls !== undefined && args.requireTLS,
    tls: smtps,
    authenticator,
    authRequired: args.authRequired,
    authRequireTLS: !args.capture.authAllowInsecure,
    proxyProtocolTimeout: args.proxyProtocol === null ? undefined : args.proxyProtocol * 1000,
    xclientAllow: args.xclientAllow,
    xforwardAllow: args.xforwardAllow,
    enableDSN: args.dsn,
    offerRequireTLS: args.offerRequireTLS,
    acceptUnknownParameters: args.acceptUnknownParameters,
  };
  // (label, controller) pairs. "localhost" means both loopbacks, so clients that resolve it
  // either way find the server; the ::1 half is optional (a machine may have no IPv6).
  const planned: Array<{ label: string; controller: Controller | UnixSocketController; optional: boolean }> = [];
  if (args.unix !== null) {
    planned.push({
      label: args.unix,
      controller: new UnixSocketController(handler, { ...common, unixSocket: args.unix, mode: args.unixMode }),
      optional: false,
    });
  }
  if (args.unix === null || args.listen) {
    const hosts = args.host === 'localhost' ? ['127.0.0.1', '::1'] : [args.host];
    for (const host of hosts) {
      planned.push({
        label: hostPort(host, args.port),
        controller: new Controller(handler, { ...common, hostname: host, port: args.port }),
        optional: host === '::1' && hosts.length > 1,
      });
    }
  }
  const started: typeof planned = [];
  for (const entry of planned) {
    try {
      await entry.controller.start();
      // With port 0 the label names the port the system picked.
      const c = entry.controller;
      if (c instanceof Controller && c.hostname !== undefined) entry.label = hostPort(c.hostname, c.port);
      started.push(entry);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (entry.optional && (code === 'EADDRNOTAVAIL' || code === 'EAFNOSUPPORT')) continue;
      process.stderr.write(`tsmtpd: error: cannot listen on ${entry.label}: ${(error as Error).message}\n`);
      await Promise.all(started.map((e) => e.controller.stop()));
      return 1;
    }
  }
  let captureHttp: Awaited<ReturnType<typeof startCaptureHttp>>['http'] | null = null;
  if (handler instanceof Capture) {
    try {
      const { http, warning } = await startCaptureHttp(handler, args.capture);
      captureHttp = http;
      if (warning !== null) process.stderr.write(`tsmtpd: warning: ${warning}\n`);
    } catch (error) {
      process.stderr.write(`tsmtpd: error: cannot start the capture's HTTP side on ${args.capture.httpHost}:${args.capture.httpPort}: ${(error as Error).message}\n`);
      await Promise.all(started.map((e) => e.controller.stop()));
      return 1;
    }
  }
  if (args.setuid) dropPrivileges();
  const what = args.lmtp ? 'LMTP' : 'SMTP';
  const where = started.map((e) => e.label).join(', ');
  if (cluster.isWorker) {
    process.send?.({ tsmtpd: 'listening', where } satisfies ListeningMessage);
  } else {
    notice(args.logFormat, `tsmtpd ${VERSION} (${what}) listening on ${where} (handler ${args.classpath})`);
    if (captureHttp !== null) notice(args.logFormat, `tsmtpd: web UI and API on ${captureHttp.url}`);
  }

  // SIGHUP re-reads the certificates: renewed ones take effect without a restart.
  process.on('SIGHUP', () => {
    try {
      const fresh = {
        tlsContext: readPair(args.tlscert, args.tlskey, '--tlscert and --tlskey'),
        tls: readPair(args.smtpscert, args.smtpskey, '--smtpscert and --smtpskey'),
      };
      for (const e of started) e.controller.reloadTLS(fresh);
      notice(args.logFormat, 'tsmtpd: certificates reloaded');
    } catch (error) {
      notice(args.logFormat, `tsmtpd: certificate reload failed, keeping the old ones: ${(error as Error).message}`, 'warn');
    }
  });
  await new Promise<void>((resolve) => {
    // `on`, not `once`: a second signal (the cluster primary forwarding one, systemd's
    // KillMode) must not fall through to the default action and cut the graceful stop short.
    process.on('SIGINT', resolve);
    process.on('SIGTERM', resolve);
  });
  // Stop accepting; let transactions in flight finish up to the deadline, then 421.
  await Promise.all([...started.map((e) => e.controller.stop({ deadline: args.shutdownTimeout * 1000 })), captureHttp?.stop()]);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`tsmtpd: error: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
