/**
 * The streaming body (handleDATAStream): the message reaches the handler as a Readable while it
 * arrives, with backpressure to the socket. If the handler settles without reading to the end,
 * the rest is dropped instead of stalling the client; past the size limit the stream errors.
 */
import { Readable } from 'node:stream';

export class SizeLimitExceeded extends Error {
  override name = 'SizeLimitExceeded';
  readonly code = 'ESIZELIMIT';
}

export class BodyStream {
  readonly readable: Readable;
  /** The handler's reply, or its error; set once its promise settles. */
  private settled = false;
  private blocked = false;

  constructor(
    /** Stop reading the socket: the handler is slower than the client. */
    private readonly pauseInput: () => void,
    /** The handler wants more. */
    private readonly resumeInput: () => void,
  ) {
    this.readable = new Readable({
      read: () => {
        if (!this.blocked) return;
        this.blocked = false;
        this.resumeInput();
      },
    });
    // An error we raise (size limit) must not become an unhandled 'error' event when the
    // handler attached no listener.
    this.readable.on('error', () => {});
  }

  /** Called when the handler's promise settles: from then on the body is read and dropped. */
  handlerSettled(): void {
    this.settled = true;
    if (this.blocked) {
      this.blocked = false;
      this.resumeInput();
    }
  }

  push(segment: Buffer): void {
    if (this.settled || this.readable.destroyed) return;
    if (!this.readable.push(segment)) {
      this.blocked = true;
      this.pauseInput();
    }
  }

  /**
   * The body is complete. A handler that has already answered gets no end: what came after its
   * answer was dropped, so the stream must not look whole (and ending a stream nobody reads
   * costs a tick's work per message).
   */
  end(): void {
    if (!this.settled && !this.readable.destroyed) this.readable.push(null);
  }

  overflow(limit: number): void {
    if (!this.readable.destroyed) this.readable.destroy(new SizeLimitExceeded(`message exceeds ${limit} bytes`));
    this.handlerSettled();
  }

  /** Whether the socket must stay paused for this stream. */
  get holding(): boolean {
    return this.blocked;
  }
}
