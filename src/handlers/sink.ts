/** Sink: accepts every message and discards it (load tests, a black hole for a test suite). */
import type { Readable } from 'node:stream';
import { UsageError, type Handler, type SMTPServer } from '../handler.js';
import type { Envelope, Session } from '../session.js';

export class Sink implements Handler {
  /**
   * `-c Sink` keeps each body in memory until it is answered, as a real handler would;
   * `-c Sink stream` reads it as a stream and keeps nothing (for benchmarks of both paths).
   */
  static fromCli(...args: string[]): Sink {
    if (args.length === 0) return new Sink();
    if (args.length === 1 && args[0] === 'stream') return new StreamSink();
    throw new UsageError('Sink usage: [stream]');
  }

  handleDATA(_server: SMTPServer, _session: Session, _envelope: Envelope): string {
    return '250 OK';
  }
}

/** A Sink that takes the body as a stream (handleDATAStream) and drops each chunk as it comes. */
export class StreamSink extends Sink {
  async handleDATAStream(_server: SMTPServer, _session: Session, _envelope: Envelope, stream: Readable): Promise<string> {
    for await (const _chunk of stream) {
      // dropped
    }
    return '250 OK';
  }
}
