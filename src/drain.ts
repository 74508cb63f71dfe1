/** stop()'s end of the open connections: 421 between transactions, a deadline for those in flight. */
import type { SMTP } from './smtp.js';

/**
 * How long stop() waits past its deadline for a handler still at work (storing a message it
 * will answer 250): short, so a hook that never settles cannot hold the stop.
 */
const HANDLER_GRACE_MS = 2000;

/** Drains every connection, shuts down the ones left at `deadline`, and resolves with `closed` (the listener's close). */
export async function drainConnections(connections: ReadonlySet<SMTP>, deadline: number, closed: Promise<void>): Promise<void> {
  for (const smtp of connections) smtp.drain();
  const force = setTimeout(() => {
    for (const smtp of connections) smtp.shutdown();
  }, deadline);
  // A client that ignores the 421 and keeps its side open is cut off shortly after; one whose
  // handler is still at work (storing a message) is given until a hard limit.
  const cut = setTimeout(() => {
    for (const smtp of connections) if (!smtp.commandRunning) smtp.destroy();
  }, deadline + 1000);
  const hard = setTimeout(() => {
    for (const smtp of connections) smtp.destroy();
  }, deadline + HANDLER_GRACE_MS);
  await closed;
  clearTimeout(force);
  clearTimeout(cut);
  clearTimeout(hard);
}
