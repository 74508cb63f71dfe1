/** Sink: accepts every message and discards it (load tests, a black hole for a test suite). */
import { UsageError, type Handler, type SMTPServer } from '../handler.js';
import type { Envelope, Session } from '../session.js';

export class Sink implements Handler {
  /** `-c Sink` takes nothing; an argument is probably a mistake worth reporting. */
  static fromCli(...args: string[]): Sink {
    if (args.length > 0) throw new UsageError('Sink takes no arguments');
    return new Sink();
  }

  handleDATA(_server: SMTPServer, _session: Session, _envelope: Envelope): string {
    return '250 OK';
  }
}
