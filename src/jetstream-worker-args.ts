/** Pure: the arguments of tsmtpd-jetstream-worker (its own keys here, the connection's as -c JetStream parses them). */
import { UsageError } from './handler.js';
import { parseJetStreamArgs } from './handlers/jetstream-cli.js';
import type { DeliveryTarget, JetStreamWorkerOptions } from './jetstream-worker.js';

export const USAGE =
  'usage: tsmtpd-jetstream-worker nats://HOST:PORT[,...] [STREAM] (maildir=DIR | lmtp=HOST:PORT | smtp=HOST:PORT) ' +
  '[durable=NAME] [batch=N] [subject=S] [user=U] [pass=P] [token=T] [creds=FILE] [tlsca=FILE] [tlscert=FILE] [tlskey=FILE]';

export function parseWorkerArgs(args: readonly string[]): JetStreamWorkerOptions {
  let target: DeliveryTarget | null = null;
  const rest: string[] = [];
  const extra: Partial<JetStreamWorkerOptions> = {};
  for (const arg of args) {
    const eq = arg.indexOf('=');
    const key = eq > 0 ? arg.slice(0, eq) : '';
    const value = arg.slice(eq + 1);
    if (key === 'maildir' || key === 'lmtp' || key === 'smtp') {
      if (target !== null) throw new UsageError(`one target only\n${USAGE}`);
      if (key === 'maildir') {
        if (value === '') throw new UsageError('maildir= needs a directory');
        target = { maildir: value };
      } else {
        const m = /^(\[[^\]]+\]|[^:]+):([0-9]{1,5})$/.exec(value);
        const port = m === null ? NaN : Number(m[2]);
        if (m === null || !(port >= 1 && port <= 65535)) throw new UsageError(`${key}= needs HOST:PORT, not '${value}'`);
        target = { host: m[1]!.replace(/^\[|\]$/g, ''), port, lmtp: key === 'lmtp' };
      }
    } else if (key === 'durable') {
      if (!/^[A-Za-z0-9_-]+$/.test(value)) throw new UsageError(`invalid durable name '${value}'`);
      extra.durable = value;
    } else if (key === 'batch') {
      const n = /^[0-9]{1,4}$/.test(value) ? Number(value) : 0;
      if (n < 1) throw new UsageError(`batch= needs a count from 1 to 9999, not '${value}'`);
      extra.batch = n;
    } else {
      rest.push(arg);
    }
  }
  if (target === null) throw new UsageError(`a target is required\n${USAGE}`);
  const { deadline: _deadline, chunkSize: _chunk, ...nats } = parseJetStreamArgs(rest);
  return { ...nats, ...extra, target };
}

