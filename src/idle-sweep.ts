/**
 * Idle timeouts for many connections from one timer per timeout value.
 *
 * A socket timer per connection (socket.setTimeout) costs a Timeout, a bound function and a
 * re-arm on every read and write. Here a connection only zeroes a counter when it is active,
 * and one interval counts every watched connection up; a connection whose count reaches the limit
 * is told it is idle: never before `timeout` has passed since its last activity, and at most
 * two sweep intervals (a quarter of the timeout) after.
 */

/** Sweeps since the idler's last activity; the idler sets it to 0 when there is some. */
export const IDLE_TICKS = Symbol('idle ticks');
export const ON_IDLE = Symbol('on idle');

export interface Idler {
  [IDLE_TICKS]: number;
  [ON_IDLE](): void;
}

const TICKS = 8;

export class IdleSweep {
  private readonly members = new Set<Idler>();
  private timer: NodeJS.Timeout | null = null;
  private readonly interval: number;
  /** Sweeps that add up to at least the timeout, whenever in an interval the activity was. */
  private readonly limit: number;

  constructor(timeout: number) {
    this.interval = Math.max(1, Math.floor(timeout / TICKS));
    this.limit = Math.ceil(timeout / this.interval) + 1;
  }

  add(idler: Idler): void {
    idler[IDLE_TICKS] = 0;
    this.members.add(idler);
    if (this.timer === null) {
      this.timer = setInterval(() => this.sweep(), this.interval);
      this.timer.unref();
    }
  }

  delete(idler: Idler): void {
    this.members.delete(idler);
    if (this.members.size === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  private sweep(): void {
    for (const idler of this.members) {
      if (++idler[IDLE_TICKS] < this.limit) continue;
      idler[IDLE_TICKS] = 0;
      idler[ON_IDLE]();
    }
  }
}

const sweeps = new Map<number, IdleSweep>();

/** The shared sweep for a timeout in milliseconds. */
export function idleSweep(timeout: number): IdleSweep {
  let sweep = sweeps.get(timeout);
  if (sweep === undefined) sweeps.set(timeout, (sweep = new IdleSweep(timeout)));
  return sweep;
}
