/** The built-in handlers, and the names the CLI's `-c Name` accepts for them. */
import type { HandlerClass } from '../handler.js';
import { Debugging } from './debugging.js';
import { Mailbox } from './mailbox.js';
import { Sink } from './sink.js';

export { Debugging, Mailbox, Sink };

/** Keyed by bare class name, as aiosmtpd's `-c aiosmtpd.handlers.Name` shortened to `-c Name`. */
export const builtinHandlers: Record<string, HandlerClass> = {
  Debugging,
  Sink,
  Mailbox,
};
