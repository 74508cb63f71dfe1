/** start()'s readiness check: connect as a client and wait for the 220 greeting, as aiosmtpd's controller does. */
import net from 'node:net';
import tls from 'node:tls';

/** A PROXY protocol v2 header with the LOCAL command and no addresses. */
const PROXY_V2_LOCAL = Buffer.concat([Buffer.from('\r\n\r\n\0\r\nQUIT\n', 'latin1'), Buffer.from([0x20, 0x00, 0x00, 0x00])]);

export interface ProbeOptions {
  connect: net.NetConnectOpts;
  /** The listener speaks implicit TLS. */
  tls: boolean;
  /** The TLS handshake follows a PROXY header sent in clear (as HAProxy does); the engine does it. */
  tlsAfterProxy: boolean;
  /** The listener waits for a PROXY header first. */
  proxyProtocol: boolean;
  timeout: number;
  /** Given the probe's plain socket as it connects, and null once the probe is over, so the server can tell it apart. */
  track(socket: net.Socket | null): void;
}

export function probeGreeting(o: ProbeOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    let socket: net.Socket;
    let raw: net.Socket;
    if (!o.tls) {
      socket = raw = net.connect(o.connect);
    } else if (o.tlsAfterProxy) {
      // The header in clear, then TLS: as HAProxy does.
      raw = net.connect(o.connect);
      raw.write(PROXY_V2_LOCAL);
      raw.on('error', () => {});
      socket = tls.connect({ socket: raw, rejectUnauthorized: false });
    } else {
      socket = raw = tls.connect({ ...o.connect, rejectUnauthorized: false } as tls.ConnectionOptions);
    }
    o.track(raw);
    let got = '';
    const fail = (error: Error) => {
      clearTimeout(timer);
      o.track(null);
      socket.destroy();
      reject(error);
    };
    const timer = setTimeout(() => fail(new Error(`server not ready within ${o.timeout} ms`)), o.timeout);
    // Behind a load balancer the server waits for a PROXY header: send the health-check
    // kind (v2 LOCAL), which keeps the socket's own address.
    if (o.proxyProtocol && !o.tlsAfterProxy) socket.write(PROXY_V2_LOCAL);
    socket.setEncoding('latin1');
    socket.on('data', (text: string) => {
      got += text;
      if (!got.includes('\n')) return;
      clearTimeout(timer);
      o.track(null);
      socket.destroy();
      if (got.startsWith('220')) resolve();
      else reject(new Error(`unexpected greeting: ${got.trim()}`));
    });
    socket.on('error', (error) => fail(error));
    socket.on('end', () => fail(new Error('server closed the connection before its greeting')));
  });
}
