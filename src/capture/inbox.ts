/**
 * The inbox a test reads: a view of the store (all of it, or one recipient's, or one isolated
 * test's), with waiting that covers mail already received and mail still to come.
 */
import { randomBytes } from 'node:crypto';
import { compileMatch, describeMatch, type Match } from './match.js';
import type { CapturedMessage } from './message.js';
import { plusTag, type MessageStore } from './store.js';

export interface WaitOptions {
  /** Milliseconds; default 5000. 0 waits without a deadline (the signal can still end it). */
  timeout?: number;
  signal?: AbortSignal;
}

const DEFAULT_TIMEOUT_MS = 5000;
/** Messages named in a timeout's error; the count is always given. */
const ARRIVED_SHOWN = 10;

/** waitFor's deadline passed: says what it waited for and what arrived meanwhile. */
export class CaptureTimeoutError extends Error {
  override name = 'CaptureTimeoutError';
  /** What the inbox held when the time ran out. */
  readonly arrived: readonly CapturedMessage[];
  constructor(message: string, arrived: readonly CapturedMessage[]) {
    super(message);
    this.arrived = arrived;
  }
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('waitFor aborted');
}

export class Inbox implements AsyncIterable<CapturedMessage> {
  private readonly store: MessageStore;
  private readonly filter: (message: CapturedMessage) => boolean;
  private readonly whole: boolean;
  /** How this view is named in errors: 'the inbox', 'the inbox of a@b'. */
  private readonly label: string;

  /** @internal Capture makes the root inbox; narrower ones come from scope(), forRecipient() and isolate(). */
  constructor(store: MessageStore, filter?: (message: CapturedMessage) => boolean, label = 'the inbox') {
    this.store = store;
    this.whole = filter === undefined;
    this.filter = filter ?? (() => true);
    this.label = label;
  }

  /** Whether a message belongs to this view. */
  includes(message: CapturedMessage): boolean {
    return this.filter(message);
  }

  /** This view's messages that match, oldest first. */
  list(match?: Match): CapturedMessage[] {
    const test = compileMatch(match);
    return this.store.all().filter((m) => this.filter(m) && test(m));
  }

  /** The oldest matching message, or undefined. */
  find(match?: Match): CapturedMessage | undefined {
    const test = compileMatch(match);
    return this.store.all().find((m) => this.filter(m) && test(m));
  }

  /** The newest matching message, or undefined. */
  latest(match?: Match): CapturedMessage | undefined {
    return this.list(match).at(-1);
  }

  get(id: string): CapturedMessage | undefined {
    const m = this.store.get(id);
    return m !== undefined && this.filter(m) ? m : undefined;
  }

  get count(): number {
    return this.list().length;
  }

  /** Deletes this view's messages (and only them) from the store. */
  clear(): void {
    if (this.whole) this.store.clear();
    else this.store.remove(this.list().map((m) => m.id));
  }

  delete(id: string): boolean {
    return this.get(id) !== undefined && this.store.remove([id]).length === 1;
  }

  /** The first matching message, already received or still to come. */
  async waitFor(match?: Match, options: WaitOptions = {}): Promise<CapturedMessage> {
    const [first] = await this.waitForCount(1, match, options);
    return first!;
  }

  /** Resolves with the first `n` matching messages, once there are that many. */
  waitForCount(n: number, match?: Match, options: WaitOptions = {}): Promise<CapturedMessage[]> {
    const test = compileMatch(match);
    const wanted = (m: CapturedMessage) => this.filter(m) && test(m);
    const timeout = options.timeout ?? DEFAULT_TIMEOUT_MS;
    const signal = options.signal;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortReason(signal));
      const found = this.store.all().filter(wanted).slice(0, n);
      if (found.length >= n) return resolve(found);
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        unsubscribe();
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = () => {
        done();
        reject(abortReason(signal!));
      };
      const unsubscribe = this.store.on((event) => {
        if (event.type === 'new' && wanted(event.message)) {
          found.push(event.message);
          if (found.length >= n) {
            done();
            resolve(found);
          }
        }
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeout > 0) {
        timer = setTimeout(() => {
          done();
          reject(this.timeoutError(n, match, timeout, found.length));
        }, timeout);
      }
    });
  }

  private timeoutError(n: number, match: Match | undefined, timeout: number, matched: number): CaptureTimeoutError {
    const arrived = this.list();
    const what = n === 1 ? describeMatch(match) : `${n} messages matching ${describeMatch(match)} (${matched} matched)`;
    const shown = arrived.slice(-ARRIVED_SHOWN).map((m) => `\n  ${m.describe()}`).join('');
    const more = arrived.length > ARRIVED_SHOWN ? `\n  (the ${arrived.length - ARRIVED_SHOWN} older ones not shown)` : '';
    const head = `waitFor: no ${what} in ${this.label} after ${timeout} ms`;
    const tail = arrived.length === 0 ? '; no message arrived' : `; ${arrived.length} message(s) arrived:${shown}${more}`;
    return new CaptureTimeoutError(head + tail, arrived);
  }

  /**
   * This view's messages as they come: the ones already there first, then each new one, until
   * the signal aborts or the loop breaks.
   */
  async *messages(options: { signal?: AbortSignal } = {}): AsyncGenerator<CapturedMessage, void, undefined> {
    const queue: CapturedMessage[] = this.list();
    let wake: (() => void) | null = null;
    const unsubscribe = this.store.on((event) => {
      if (event.type === 'new' && this.filter(event.message)) {
        queue.push(event.message);
        wake?.();
      }
    });
    const onAbort = () => wake?.();
    options.signal?.addEventListener('abort', onAbort);
    try {
      for (;;) {
        if (options.signal?.aborted) return;
        const next = queue.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        await new Promise<void>((resolve) => (wake = resolve));
        wake = null;
      }
    } finally {
      unsubscribe();
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  [Symbol.asyncIterator](): AsyncGenerator<CapturedMessage, void, undefined> {
    return this.messages();
  }

  /** A narrower view: this one's messages that also match. */
  scope(match: Match, label = `${this.label} scoped to ${describeMatch(match)}`): Inbox {
    const test = compileMatch(match);
    return new Inbox(this.store, (m) => this.filter(m) && test(m), label);
  }

  /** The messages with this envelope recipient (or To/Cc/Bcc address), any case. */
  forRecipient(address: string): Inbox {
    return this.scope({ to: address }, `the inbox of ${address}`);
  }

  /**
   * A private inbox for one test in a suite that shares a server: send to `view.address(...)`
   * (a plus-address with a fresh tag) and read `view`; close() deletes its mail and drops any that
   * arrives for it later, so nothing is left over for the next test.
   */
  isolate(): IsolatedInbox {
    return new IsolatedInbox(this.store, this.filter);
  }
}

export class IsolatedInbox extends Inbox implements Disposable {
  /** The plus-address tag: lower-case letters and digits. */
  readonly tag: string;
  private closed = false;
  private readonly tags: MessageStore;

  /** @internal made by Inbox.isolate() */
  constructor(store: MessageStore, parent: (message: CapturedMessage) => boolean) {
    const tag = `t${randomBytes(6).toString('hex')}`;
    super(store, (m) => parent(m) && m.envelope.rcptTos.some((r) => plusTag(r) === tag), `the isolated inbox +${tag}`);
    this.tag = tag;
    this.tags = store;
  }

  /** `local+tag@domain` for a base address (default `test@example.com`). */
  address(base = 'test@example.com'): string {
    const at = base.lastIndexOf('@');
    if (at <= 0) throw new TypeError(`not an address: ${base}`);
    const local = base.slice(0, at);
    const plus = local.indexOf('+');
    return `${plus < 0 ? local : local.slice(0, plus)}+${this.tag}${base.slice(at)}`;
  }

  /** Deletes this inbox's messages; mail that arrives for it later is not kept. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.tags.closeTag(this.tag);
    this.clear();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
