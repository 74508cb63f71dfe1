#!/usr/bin/env node
/**
 * tsmtpd: the command-line server, option for option aiosmtpd's
 * (`-n -c -s -u -d -l -v -h`, positional arguments for the handler's fromCli).
 */
import cluster from 'node:cluster';
import { unlink } from 'node:fs/promises';
import { setFlagsFromString } from 'node:v8';
import { raiseMallocThresholds } from './malloc-thresholds.js';
import { checkSocketPath } from './controller.js';
import { UsageError } from './handler.js';
import { VERSION } from './version.js';
import { runPrimary } from './workers.js';
import { CaptureOptionError } from './capture/cli.js';
import { parseArgs, type Args } from './cli-args.js';
import { prepare, type Prepared } from './cli-config.js';
import { CliError } from './cli-error.js';
import { HELP } from './cli-help.js';
import { serve } from './cli-serve.js';

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

async function main(argv: string[]): Promise<number> {
  keepYoungGenerationSmall();
  raiseMallocThresholds();
  let args: Args | 'help' | 'version';
  let prepared: Prepared;
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
    prepared = await prepare(args);
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
  return serve(args, prepared);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`tsmtpd: error: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
