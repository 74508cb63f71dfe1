/** The command line as argparse reads it: clustered short flags, --name=VALUE, `--`, classargs. */
import type { LogFormat } from './cli-log.js';
import { defaultCaptureOptions, type CaptureCliOptions } from './capture/cli.js';
import { DEFAULT_PORT } from './cli-addresses.js';
import { CliError } from './cli-error.js';
import { OPTIONS, type OptionSpec } from './cli-options.js';

export interface Args {
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

/** The option as argparse names it in errors: `-s/--size`, `--unix`. */
function optionName(spec: OptionSpec): string {
  return spec.short === undefined ? `--${spec.long}` : `-${spec.short}/--${spec.long}`;
}

export function parseArgs(argv: string[]): Args | 'help' | 'version' {
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
