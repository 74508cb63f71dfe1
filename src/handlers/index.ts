/** The built-in handlers, and the names the CLI's `-c Name` accepts for them. */
import type { HandlerClass } from '../handler.js';
import { builtinNames } from './builtin.js';
import { Debugging } from './debugging.js';
import { JetStream } from './jetstream.js';
import { Mailbox } from './mailbox.js';
import { AsyncMessage, Message } from './message.js';
import { Proxy } from './proxy.js';
import { BufferedSink, Sink } from './sink.js';
import { Capture } from '../capture/capture.js';

export { Debugging, Mailbox, Sink, BufferedSink, Proxy, Message, AsyncMessage, JetStream, Capture };

/** Each class above by its name, where `builtinNames` are looked up. */
const classes = { Debugging, Mailbox, Sink, BufferedSink, Proxy, Message, AsyncMessage, JetStream, Capture };

/**
 * Keyed by bare class name, as aiosmtpd's `-c aiosmtpd.handlers.Name` shortened to `-c Name`:
 * the names of the CLI's lazy loader table (builtin.ts), so the two cannot differ.
 * Message and AsyncMessage are abstract (a subclass is needed), so the CLI cannot build them.
 */
export const builtinHandlers: Record<string, HandlerClass> = Object.fromEntries(
  builtinNames.map((name) => [name, classes[name]]),
);
