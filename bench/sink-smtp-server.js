#!/usr/bin/env node
// The nodemailer smtp-server peer for `npm run bench`: accepts every message and throws it away.
//
//   node bench/sink-smtp-server.js PORT [HOST]      (HOST defaults to 127.0.0.1)
//
// Configured the way a fair benchmark needs it: no reverse DNS (the default would do a PTR
// lookup per connection), no STARTTLS, AUTH optional, a 32 MiB SIZE, no logging. The body
// stream is drained with resume() and the transaction acknowledged when it ends.
import smtpServerModule from 'smtp-server';

const { SMTPServer } = smtpServerModule;

const port = Number(process.argv[2] ?? process.env.PORT ?? 2525);
const host = process.argv[3] ?? '127.0.0.1';
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`sink-smtp-server: bad port ${process.argv[2]}`);
  process.exit(2);
}

const server = new SMTPServer({
  logger: false,
  authOptional: true,
  disabledCommands: ['STARTTLS'],
  size: 32 * 1024 * 1024,
  disableReverseLookup: true,
  onData(stream, _session, callback) {
    stream.on('end', () => callback());
    stream.resume();
  },
});

server.on('error', (err) => console.error(`sink-smtp-server: ${err.message}`));
server.listen(port, host, () => {
  console.error(`sink-smtp-server (smtp-server) listening on ${host}:${port}, pid ${process.pid}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
  // close() waits for open connections; do not let a stuck client keep us alive.
  process.on(signal, () => setTimeout(() => process.exit(0), 2000).unref());
}
