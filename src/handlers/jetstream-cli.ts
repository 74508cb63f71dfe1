/**
 * Pure: `-c JetStream` arguments to options. aiosmtpd's convention (positional arguments after
 * the class, given to its from_cli): the servers, then an optional stream name, then
 * `key=value` settings. Durations are seconds, as everywhere on the command line.
 */
import { UsageError } from '../handler.js';
import type { JetStreamOptions } from './jetstream.js';

export const JETSTREAM_USAGE =
  'JetStream usage: nats://HOST:PORT[,nats://HOST:PORT...] [STREAM] [subject=S] [deadline=SECONDS] [replicas=N] ' +
  '[create=yes|no] [user=U] [pass=P] [token=T] [creds=FILE] [tlsca=FILE] [tlscert=FILE] [tlskey=FILE] [chunk=BYTES]';

const NAME = /^[A-Za-z0-9_-]+$/;
const SUBJECT = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/;

export function parseJetStreamArgs(args: readonly string[]): JetStreamOptions {
  const [first, ...rest] = args;
  if (first === undefined || first === '') throw new UsageError(JETSTREAM_USAGE);
  const servers = first.split(',');
  for (const server of servers) {
    if (!/^(?:nats|tls):\/\/[^\s/]+$/.test(server)) throw new UsageError(`JetStream: '${server}' is not a nats://HOST:PORT URL`);
  }
  const options: JetStreamOptions = { servers };
  if (rest[0] !== undefined && !rest[0].includes('=')) {
    const stream = rest.shift()!;
    if (!NAME.test(stream)) throw new UsageError(`JetStream: invalid stream name '${stream}'`);
    options.stream = stream;
  }
  for (const setting of rest) {
    const eq = setting.indexOf('=');
    if (eq <= 0) throw new UsageError(`JetStream: '${setting}' is not key=value\n${JETSTREAM_USAGE}`);
    const key = setting.slice(0, eq);
    const value = setting.slice(eq + 1);
    switch (key) {
      case 'subject':
        if (!SUBJECT.test(value)) throw new UsageError(`JetStream: invalid subject '${value}'`);
        options.subject = value;
        break;
      case 'deadline':
        options.deadline = number(key, value, 0.001, 3600) * 1000;
        break;
      case 'replicas':
        options.replicas = integer(key, value, 1, 5);
        break;
      case 'chunk':
        options.chunkSize = integer(key, value, 1024, 64 * 1024 * 1024);
        break;
      case 'create':
        if (value !== 'yes' && value !== 'no') throw new UsageError('JetStream: create=yes or create=no');
        options.createStream = value === 'yes';
        break;
      case 'user':
        options.user = value;
        break;
      case 'pass':
        options.pass = value;
        break;
      case 'token':
        options.token = value;
        break;
      case 'creds':
        options.credsFile = value;
        break;
      case 'tlsca':
        options.tls = { ...options.tls, caFile: value };
        break;
      case 'tlscert':
        options.tls = { ...options.tls, certFile: value };
        break;
      case 'tlskey':
        options.tls = { ...options.tls, keyFile: value };
        break;
      default:
        throw new UsageError(`JetStream: unknown setting '${key}'\n${JETSTREAM_USAGE}`);
    }
  }
  return options;
}

function number(key: string, value: string, min: number, max: number): number {
  const n = /^[0-9]+(?:\.[0-9]+)?$/.test(value) ? Number(value) : NaN;
  if (!(n >= min && n <= max)) throw new UsageError(`JetStream: ${key} must be a number from ${min} to ${max}, not '${value}'`);
  return n;
}

function integer(key: string, value: string, min: number, max: number): number {
  const n = number(key, value, min, max);
  if (!Number.isInteger(n)) throw new UsageError(`JetStream: ${key} must be an integer, not '${value}'`);
  return n;
}
