import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { IDLE_TICKS, IdleSweep, ON_IDLE, STRESS_TICKS, type Idler } from '../src/idle-sweep.js';

class Probe implements Idler {
  [IDLE_TICKS] = 0;
  [STRESS_TICKS] = 0;
  fired: number[] = [];
  /** For the stress sweep: whether the probe is under stress now. */
  stressed = true;
  constructor(private readonly now: () => number) {}
  [ON_IDLE](stress: boolean): boolean {
    if (stress && !this.stressed) return false;
    this.fired.push(this.now());
    return true;
  }
}

interface Interval {
  at: number;
  readonly every: number;
  readonly fn: () => void;
}

/**
 * Fake setInterval/clearInterval for one test. node:test's MockTimers would do the same, but it
 * prints an ExperimentalWarning on Node 20 and 22, and the suite's output stays clean.
 */
class FakeIntervals {
  private now = 0;
  private readonly intervals = new Map<object, Interval>();

  constructor(t: TestContext) {
    const saved = { setInterval: globalThis.setInterval, clearInterval: globalThis.clearInterval };
    const fakeSet = (fn: () => void, every: number): object => {
      const handle = { unref: () => handle, ref: () => handle };
      this.intervals.set(handle, { at: this.now + every, every, fn });
      return handle;
    };
    globalThis.setInterval = fakeSet as unknown as typeof setInterval;
    globalThis.clearInterval = ((handle: object) => void this.intervals.delete(handle)) as typeof clearInterval;
    t.after(() => Object.assign(globalThis, saved));
  }

  /** One millisecond of fake time: every interval that falls due runs, in the order they were set. */
  tick(): void {
    this.now++;
    for (const [handle, interval] of [...this.intervals]) {
      while (this.intervals.has(handle) && interval.at <= this.now) {
        interval.at += interval.every;
        interval.fn();
      }
    }
  }
}

/** Runs `ms` of fake time in 1 ms steps, calling `each` before every step. */
function run(clock: FakeIntervals, ms: number, each: (now: number) => void = () => {}): void {
  for (let now = 0; now < ms; now++) {
    each(now);
    clock.tick();
  }
}

test('an idle connection is told so no earlier than the timeout and at most a quarter later', (t) => {
  const clock = new FakeIntervals(t);
  for (const timeout of [100, 300, 1000, 5000]) {
    for (const startAt of [0, 1, 7, 13]) {
      let now = 0;
      const sweep = new IdleSweep(timeout);
      const probe = new Probe(() => now);
      run(clock, startAt, () => now++);
      const added = now;
      sweep.add(probe);
      run(clock, timeout * 2, () => now++);
      sweep.delete(probe);
      assert.ok(probe.fired.length >= 1, `timeout ${timeout}: never fired`);
      const first = probe.fired[0]! - added;
      assert.ok(first >= timeout, `timeout ${timeout}, added at ${added}: fired after ${first} ms`);
      assert.ok(first <= timeout + timeout / 4, `timeout ${timeout}: fired late, after ${first} ms`);
    }
  }
});

test('activity puts the timeout off: a connection active more often than the timeout is never idle', (t) => {
  const clock = new FakeIntervals(t);
  let now = 0;
  const sweep = new IdleSweep(200);
  const probe = new Probe(() => now);
  sweep.add(probe);
  // Active every 190 ms for 2 s (the slow drip of a client that keeps the session alive).
  run(clock, 2000, () => {
    now++;
    if (now % 190 === 0) probe[IDLE_TICKS] = 0;
  });
  assert.deepEqual(probe.fired, []);
  // Then silent: the timeout counts from the last activity (at 1900 ms).
  run(clock, 300, () => now++);
  sweep.delete(probe);
  assert.equal(probe.fired.length, 1);
  assert.ok(probe.fired[0]! - 1900 >= 200 && probe.fired[0]! - 1900 <= 250, `fired at ${probe.fired[0]}`);
});

test('after telling a connection it is idle the count starts again; a deleted one is never told', (t) => {
  const clock = new FakeIntervals(t);
  let now = 0;
  const sweep = new IdleSweep(80);
  const kept = new Probe(() => now);
  const gone = new Probe(() => now);
  sweep.add(kept);
  sweep.add(gone);
  sweep.delete(gone);
  run(clock, 500, () => now++);
  sweep.delete(kept);
  assert.deepEqual(gone.fired, []);
  // 80 ms timeout, 10 ms sweeps: every 90 ms while it stays idle.
  assert.deepEqual(kept.fired, [90, 180, 270, 360, 450]);
});

test('a stress sweep tells only a stressed connection; one idle that long goes at the first sweep of stress', (t) => {
  const clock = new FakeIntervals(t);
  let now = 0;
  const sweep = new IdleSweep(80, true);
  const probe = new Probe(() => now);
  probe.stressed = false;
  sweep.add(probe);
  run(clock, 300, () => now++);
  assert.deepEqual(probe.fired, [], 'not under stress: never told');
  probe.stressed = true;
  run(clock, 15, () => now++);
  assert.deepEqual(probe.fired, [310], 'idle past the stress timeout: told at the next sweep');
  // Activity counts for the stress sweep through its own ticks.
  probe.stressed = true;
  run(clock, 300, () => {
    now++;
    if (now % 50 === 0) probe[STRESS_TICKS] = 0;
  });
  sweep.delete(probe);
  assert.deepEqual(probe.fired, [310]);
});
