/** Binding a TCP listener: one address, or both loopbacks on one port (::1 and its 127.0.0.1 twin). */
import net from 'node:net';

/** aiosmtpd's get_localhost(): `::1` when this machine can bind it, else `127.0.0.1`. */
export async function getLocalhost(): Promise<string> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve('127.0.0.1'));
    probe.listen(0, '::1', () => probe.close(() => resolve('::1')));
  });
}

/** Listens, resolving once bound and rejecting with the bind's error (EADDRINUSE, EACCES, ...). */
export function listenOn(server: net.Server, options: net.ListenOptions): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Where a TCP listener is, updated as it binds: the local default host, the port the system picked. */
export interface TcpAddress {
  hostname: string | undefined;
  port: number;
}

/**
 * Binds `server` at `address`. With no hostname, on both loopbacks where IPv6 works: `::1`, and
 * a 127.0.0.1 twin (returned; null when none) on the same port that hands its sockets to `server`.
 */
export async function listenTcp(server: net.Server, address: TcpAddress): Promise<net.Server | null> {
  const both = address.hostname === undefined && (await getLocalhost()) === '::1';
  address.hostname ??= both ? '::1' : '127.0.0.1';
  const requested = address.port;
  // Port 0 picks a free port on ::1 that another program may hold on 127.0.0.1: pick again.
  for (let attempt = 1; ; attempt++) {
    await listenOn(server, { port: address.port, host: address.hostname });
    const bound = server.address();
    if (bound !== null && typeof bound === 'object') address.port = bound.port;
    if (!both) return null;
    // The twin hands its sockets to the main server, which serves them (TLS included).
    const twin = net.createServer((socket) => server.emit('connection', socket));
    try {
      await listenOn(twin, { port: address.port, host: '127.0.0.1' });
      return twin;
    } catch (error) {
      if (requested !== 0 || attempt === 5 || (error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
      await new Promise<void>((resolve) => server.close(() => resolve()));
      address.port = 0;
    }
  }
}
