/**
 * Turning a plain socket into a TLS one, server side: after STARTTLS (RFC 3207), and for
 * implicit TLS that begins behind a PROXY header (whose first handshake bytes may already
 * have been read with the header).
 */
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { TLSSocket, type SecureContext } from 'node:tls';

/** A TLSSocket over `raw`, whose 'data'/'drain' listeners the caller has removed. */
export function upgradeSocket(raw: Socket, context: SecureContext, requestCert: boolean): TLSSocket {
  // Ask for a client certificate to record in session.tls; judging it is the handler's.
  return new TLSSocket(raw, { isServer: true, secureContext: context, requestCert, rejectUnauthorized: false });
}

/**
 * A TLSSocket over `raw` that first replays `preface`: a TLSSocket over a net.Socket reads only
 * from the kernel, so bytes already read must come through a stream of our own.
 */
export function upgradeAfterPreface(raw: Socket, preface: Buffer | null, context: SecureContext): TLSSocket {
  const carrier = new Duplex({
    read: () => void raw.resume(),
    write: (chunk: Buffer, _encoding, callback) => void raw.write(chunk, callback),
    final: (callback) => {
      raw.end();
      callback();
    },
    destroy: (error, callback) => {
      raw.destroy();
      callback(error);
    },
  });
  if (preface !== null) carrier.push(preface);
  raw.on('data', (chunk: Buffer) => {
    if (!carrier.push(chunk)) raw.pause();
  });
  raw.once('end', () => carrier.push(null));
  raw.once('close', () => carrier.destroy());
  return new TLSSocket(carrier as unknown as Socket, { isServer: true, secureContext: context, rejectUnauthorized: false });
}
