/**
 * The CLI's `-c Name` built-ins, each module loaded only when named: JetStream brings the NATS
 * client and Capture its HTTP side and parser, which a `-c Sink` server should not pay for at
 * start (CPU and memory). This table is the one list of the names: `builtinHandlers` (the
 * classes themselves, for library users) is keyed by `builtinNames`.
 */
import type { HandlerClass } from '../handler.js';

const loaders = {
  Debugging: async () => (await import('./debugging.js')).Debugging,
  Sink: async () => (await import('./sink.js')).Sink,
  Mailbox: async () => (await import('./mailbox.js')).Mailbox,
  Proxy: async () => (await import('./proxy.js')).Proxy,
  JetStream: async () => (await import('./jetstream.js')).JetStream,
  Capture: async () => (await import('../capture/capture.js')).Capture,
} satisfies Record<string, () => Promise<HandlerClass>>;

export type BuiltinName = keyof typeof loaders;
export const builtinNames = Object.keys(loaders) as readonly BuiltinName[];
export const builtinLoaders: Readonly<Record<string, () => Promise<HandlerClass>>> = loaders;
