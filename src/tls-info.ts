/** STARTTLS and implicit-TLS helpers: contexts made once, and what a handshake negotiated. */
import { TLSSocket, createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';
import type { TLSInfo } from './session.js';

/** SecureContexts made from options, once per options object (making one parses certificates). */
const contexts = new WeakMap<SecureContextOptions, SecureContext>();
export function secureContextOf(value: SecureContext | SecureContextOptions | undefined): SecureContext | null {
  if (value === undefined) return null;
  if ('context' in value && !('cert' in value) && !('key' in value) && !('pfx' in value)) return value as SecureContext;
  const options = value as SecureContextOptions;
  let context = contexts.get(options);
  if (context === undefined) contexts.set(options, (context = createSecureContext(options)));
  return context;
}


export function tlsInfo(socket: TLSSocket): TLSInfo {
  const cert = socket.getPeerCertificate();
  return {
    protocol: socket.getProtocol(),
    cipher: socket.getCipher() ?? null,
    peerCertificate: cert !== null && Object.keys(cert).length > 0 ? cert : null,
  };
}
