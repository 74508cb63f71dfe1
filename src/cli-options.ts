/** The CLI's options, one entry each: spellings, whether a value follows, and what it sets in Args. */
import { availableParallelism } from 'node:os';
import { LOG_FORMATS, type LogFormat } from './cli-log.js';
import { CAPTURE_OPTION_NAMES, captureOption } from './capture/cli.js';
import { addressEntryProblem, dnsServerProblem, parseListen, pushEntries } from './cli-addresses.js';
import { CliError } from './cli-error.js';
import type { Args } from './cli-args.js';

/** One option: its spellings, whether it takes a value, and what it does to Args. */
export interface OptionSpec {
  short?: string;
  long: string;
  /** 'inline': the value may only be given as --name=VALUE (it is optional). */
  value: 'none' | 'required' | 'optional' | 'inline';
  apply(args: Args, value: string | undefined): void | 'help' | 'version';
}

export const OPTIONS: OptionSpec[] = [
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
  { long: 'auth-results-dns', value: 'required', apply: (a, v) => pushEntries(a.authResultsDns, v!, dnsServerProblem) },
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
  { long: 'xclient-allow', value: 'required', apply: (a, v) => pushEntries(a.xclientAllow, v!, addressEntryProblem) },
  { long: 'xforward-allow', value: 'required', apply: (a, v) => pushEntries(a.xforwardAllow, v!, addressEntryProblem) },
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
