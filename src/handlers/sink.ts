/** Sink: accepts every message and discards it (load tests, a black hole for a test suite). */
import type { Readable } from 'node:stream';
import { UsageError, type Handler, type SMTPServer } from '../handler.js';
import type { Envelope, Session } from '../session.js';

export class Sink implements Handler {
  /**
   * `-c Sink` drops each body as it arrives; `-c Sink buffered` first gathers it in memory, as
   * any handleDATA handler does (to measure that path).
   */
  static fromCli(...args: string[]): Handler {
    if (args.length === 0) return new Sink();
    if (args.length === 1 && args[0] === 'buffered') return new BufferedSink();
    throw new UsageError('Sink usage: [buffered]');
  }

  /**
   * Answers at once without reading: the engine then drops the body as it arrives (nothing to
   * assemble, nothing to copy), and still answers 552 past the size limit.
   */
  handleDATAStream(_server: SMTPServer, _session: Session, _envelope: Envelope, _stream: Readable): string {
    return '250 OK';
  }
}

/** A Sink that takes the whole body in memory first (handleDATA), as aiosmtpd's Sink does. */
export class BufferedSink implements Handler {
  handleDATA(_server: SMTPServer, _session: Session, _envelope: Envelope): string {
    return '250 OK';
  }
}
