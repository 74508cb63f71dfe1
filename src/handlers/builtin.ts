/**
 * The CLI's `-c Name` built-ins, each module loaded only when named: JetStream brings the NATS
 * client and Capture its HTTP side and parser, which a `-c Sink` server should not pay for at
 * start (CPU and memory). Library users have the classes themselves in `builtinHandlers`.
 */
import type { HandlerClass } from '../handler.js';

export const builtinLoaders: Record<string, () => Promise<HandlerClass>> = {
  Debugging: async () => (await import('./debugging.js')).Debugging,
  Sink: async () => (await import('./sink.js')).Sink,
  Mailbox: async () => (await import('./mailbox.js')).Mailbox,
  Proxy: async () => (await import('./proxy.js')).Proxy,
  JetStream: async () => (await import('./jetstream.js')).JetStream,
  Capture: async () => (await import('../capture/capture.js')).Capture,
};
