/**
 * Idle timeouts for many connections from one timer per timeout value.
 *
 * A socket timer per connection (socket.setTimeout) costs a Timeout, a bound function and a
 * re-arm on every read and write. Here a connection only zeroes a counter when it is active,
 * and one interval counts every watched connection up; a connection whose count reaches the limit
 * is told it is idle: never before `timeout` has passed since its last activity, and at most
 * two sweep intervals (a quarter of the timeout) after.
 *
 * A stress sweep (the shorter timeout of Postfix's stress mode) counts its own ticks; a
 * connection that is not under stress when its count runs out answers false, and is told again
 * at every sweep, so it goes at the first sweep after stress begins if it was idle that long.
 */

/** Sweeps since the idler's last activity; the idler sets it to 0 when there is some. */
export const IDLE_TICKS = Symbol('idle ticks');
/** The same for the stress sweep. */
export const STRESS_TICKS = Symbol('stress idle ticks');
export const ON_IDLE = Symbol('on idle');

export interface Idler {
  [IDLE_TICKS]: number;
  [STRESS_TICKS]: number;
  /** Told it has been idle for the sweep's timeout; false: not now, ask again next sweep. */
  [ON_IDLE](stress: boolean): boolean;
}

const TICKS = 8;

export class IdleSweep {
  private readonly members = new Set<Idler>();
  private timer: NodeJS.Timeout | null = null;
  private readonly interval: number;
  /** Sweeps that add up to at least the timeout, whenever in an interval the activity was. */
  private readonly limit: number;
  private readonly ticks: typeof IDLE_TICKS | typeof STRESS_TICKS;

  constructor(
    timeout: number,
    private readonly stress = false,
  ) {
    this.interval = Math.max(1, Math.floor(timeout / TICKS));
    this.limit = Math.ceil(timeout / this.interval) + 1;
    this.ticks = stress ? STRESS_TICKS : IDLE_TICKS;
  }

  add(idler: Idler): void {
    idler[this.ticks] = 0;
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
    const ticks = this.ticks;
    for (const idler of this.members) {
      if (++idler[ticks] < this.limit) continue;
      if (idler[ON_IDLE](this.stress)) idler[ticks] = 0;
    }
  }
}

const sweeps = new Map<number, IdleSweep>();
const stressSweeps = new Map<number, IdleSweep>();

/** The shared sweep for a timeout in milliseconds (a stress sweep: for stressTimeout). */
export function idleSweep(timeout: number, stress = false): IdleSweep {
  const map = stress ? stressSweeps : sweeps;
  let sweep = map.get(timeout);
  if (sweep === undefined) map.set(timeout, (sweep = new IdleSweep(timeout, stress)));
  return sweep;
}
