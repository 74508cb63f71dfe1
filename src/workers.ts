/**
 * `--workers N`: N processes serving the same listeners through node:cluster. The primary only
 * supervises: it restarts a worker that dies, and on SIGTERM/SIGINT asks every worker to finish
 * its transactions and exit.
 */
import cluster, { type Worker } from 'node:cluster';

/** What a worker tells the primary once its listeners answer. */
export interface ListeningMessage {
  tsmtpd: 'listening';
  where: string;
}

export function isListeningMessage(value: unknown): value is ListeningMessage {
  return typeof value === 'object' && value !== null && (value as { tsmtpd?: unknown }).tsmtpd === 'listening';
}

/** Runs the primary; resolves to the exit code. */
export function runPrimary(count: number, log: (text: string) => void): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    let failed = false;
    let ready = 0;
    const everListened = new WeakSet<Worker>();
    const startedAt = new WeakMap<Worker, number>();

    const fork = () => {
      const worker = cluster.fork();
      startedAt.set(worker, Date.now());
      worker.on('message', (message: unknown) => {
        if (!isListeningMessage(message) || everListened.has(worker)) return;
        everListened.add(worker);
        if (++ready === count) log(`${count} workers listening on ${message.where}`);
      });
    };

    const stop = () => {
      if (stopping) return;
      stopping = true;
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
    };

    cluster.on('exit', (worker, code, signal) => {
      if (!stopping && !everListened.has(worker)) {
        // It never came up (bad port, bad handler): restarting would only loop.
        log(`worker ${worker.process.pid} failed to start (exit ${code ?? signal}); stopping`);
        failed = true;
        stop();
      } else if (!stopping) {
        log(`worker ${worker.process.pid} died (${signal ?? `exit ${code}`}); restarting`);
        // A worker that dies right after starting is not restarted in a hot loop.
        const uptime = Date.now() - (startedAt.get(worker) ?? 0);
        setTimeout(fork, uptime < 1000 ? 1000 : 0);
      }
      if (stopping && Object.keys(cluster.workers ?? {}).length === 0) resolve(failed ? 1 : 0);
    });

    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    for (let i = 0; i < count; i++) fork();
  });
}
