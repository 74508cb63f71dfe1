/**
 * The messages a Capture holds, oldest first, with pruning (a maximum count and total size,
 * oldest out first) and change events for waiters, the HTTP API's WebSocket and persistence.
 */
import type { CapturedMessage } from './message.js';

export type StoreEvent =
  | { type: 'new'; message: CapturedMessage }
  | { type: 'delete'; ids: string[] }
  | { type: 'update'; message: CapturedMessage }
  | { type: 'truncate' };

export interface StoreLimits {
  /** Keep at most this many messages; 0: no limit. */
  maxMessages?: number;
  /** Keep at most this many bytes of raw messages; 0: no limit. */
  maxBytes?: number;
}

/** Plus-address tags of closed isolated inboxes remembered, so late mail for them is dropped. */
const CLOSED_TAGS_KEPT = 10_000;

/** The `tag` of `local+tag@domain`, lower-cased, or null. */
export function plusTag(address: string): string | null {
  const at = address.lastIndexOf('@');
  const local = at < 0 ? address : address.slice(0, at);
  const plus = local.indexOf('+');
  return plus < 0 ? null : local.slice(plus + 1).toLowerCase();
}

export class MessageStore {
  private messages: CapturedMessage[] = [];
  private readonly byId = new Map<string, CapturedMessage>();
  private totalBytes = 0;
  private readonly listeners = new Set<(event: StoreEvent) => void>();
  private readonly closedTags = new Set<string>();
  maxMessages: number;
  maxBytes: number;
  /** Messages deleted or pruned since start (Mailpit's RuntimeStats.MessagesDeleted). */
  deletedCount = 0;

  constructor(limits: StoreLimits = {}) {
    this.maxMessages = limits.maxMessages ?? 0;
    this.maxBytes = limits.maxBytes ?? 0;
  }

  get count(): number {
    return this.messages.length;
  }
  get bytes(): number {
    return this.totalBytes;
  }

  /** Oldest first. The array is the store's own: do not change it. */
  all(): readonly CapturedMessage[] {
    return this.messages;
  }

  get(id: string): CapturedMessage | undefined {
    return this.byId.get(id);
  }

  latest(): CapturedMessage | undefined {
    return this.messages[this.messages.length - 1];
  }

  /** Subscribes to changes; returns the unsubscribe function. */
  on(listener: (event: StoreEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(event: StoreEvent): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch {
        // One broken listener (a test's predicate that throws) must not stop delivery to others.
      }
    }
  }

  /** True when every recipient belongs to an isolated inbox that was closed: nobody will read it. */
  isOrphan(rcptTos: readonly string[]): boolean {
    if (this.closedTags.size === 0 || rcptTos.length === 0) return false;
    return rcptTos.every((r) => {
      const tag = plusTag(r);
      return tag !== null && this.closedTags.has(tag);
    });
  }

  closeTag(tag: string): void {
    this.closedTags.add(tag.toLowerCase());
    if (this.closedTags.size > CLOSED_TAGS_KEPT) this.closedTags.delete(this.closedTags.values().next().value!);
  }

  add(message: CapturedMessage): void {
    this.messages.push(message);
    this.byId.set(message.id, message);
    this.totalBytes += message.size;
    this.emit({ type: 'new', message });
    this.prune();
  }

  /** Drops the oldest messages past the limits (never the one just added, if it alone is too big). */
  prune(): void {
    const over = () =>
      this.messages.length > 1 &&
      ((this.maxMessages > 0 && this.messages.length > this.maxMessages) || (this.maxBytes > 0 && this.totalBytes > this.maxBytes));
    if (!over()) return;
    let cut = 0;
    let bytes = this.totalBytes;
    while (
      cut < this.messages.length - 1 &&
      ((this.maxMessages > 0 && this.messages.length - cut > this.maxMessages) || (this.maxBytes > 0 && bytes > this.maxBytes))
    ) {
      bytes -= this.messages[cut]!.size;
      cut++;
    }
    this.remove(this.messages.slice(0, cut).map((m) => m.id));
  }

  /** Deletes the messages with these IDs; returns the IDs that were there. */
  remove(ids: Iterable<string>): string[] {
    const gone = new Set<string>();
    for (const id of ids) {
      const m = this.byId.get(id);
      if (m === undefined) continue;
      this.byId.delete(id);
      this.totalBytes -= m.size;
      gone.add(id);
    }
    if (gone.size === 0) return [];
    this.messages = this.messages.filter((m) => !gone.has(m.id));
    this.deletedCount += gone.size;
    const list = [...gone];
    this.emit({ type: 'delete', ids: list });
    return list;
  }

  clear(): void {
    this.deletedCount += this.messages.length;
    this.messages = [];
    this.byId.clear();
    this.totalBytes = 0;
    this.emit({ type: 'truncate' });
  }

  /** Tells listeners that a message's read state or tags changed. */
  updated(message: CapturedMessage): void {
    this.emit({ type: 'update', message });
  }
}
