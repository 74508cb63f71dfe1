#!/usr/bin/env node
/**
 * tsmtpd-jetstream-worker: pulls the JetStream handler's stream and delivers each message.
 *
 *   tsmtpd-jetstream-worker nats://HOST:PORT[,...] [STREAM] (maildir=DIR | lmtp=HOST:PORT | smtp=HOST:PORT)
 *                           [durable=NAME] [batch=N] [subject=S] [user=U pass=P | token=T | creds=FILE]
 *                           [tlsca=FILE tlscert=FILE tlskey=FILE]
 *
 * Runs until SIGTERM or SIGINT, then finishes the message in hand and exits 0.
 */
import { UsageError } from './handler.js';
import { parseWorkerArgs, USAGE } from './jetstream-worker-args.js';
import { startJetStreamWorker, type JetStreamWorkerOptions } from './jetstream-worker.js';

async function main(argv: string[]): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  let options: JetStreamWorkerOptions;
  try {
    options = parseWorkerArgs(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`${error.message}\n`);
    return 2;
  }
  const worker = await startJetStreamWorker({ ...options, log: (line) => process.stderr.write(line + '\n') });
  process.stderr.write(`tsmtpd-jetstream-worker pulling ${options.stream ?? 'MAIL'}\n`);
  const stop = () => void worker.stop();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  await worker.done;
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`tsmtpd-jetstream-worker: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
