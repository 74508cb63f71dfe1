/** Who the client is: from the socket, or from the PROXY header that speaks for it. */
import { isIPv6, type Socket } from 'node:net';
import type { ProxyData } from './proxy-protocol.js';
import type { Peer } from './session.js';
import { allowListOf } from './xclient.js';

export function peerOf(socket: Socket): Peer {
  const address = socket.remoteAddress;
  if (address === undefined) return { address: '', port: 0, family: 'unix' };
  return { address, port: socket.remotePort ?? 0, family: socket.remoteFamily === 'IPv6' ? 'IPv6' : 'IPv4' };
}

/** The client a PROXY header speaks for; null for LOCAL (health checks) and UNKNOWN. */
export function proxiedPeer(data: ProxyData): Peer | null {
  if (data.command !== 'PROXY' || data.srcAddress === null) return null;
  if (data.family === 'TCP4' || data.family === 'UDP4') return { address: data.srcAddress, port: data.srcPort ?? 0, family: 'IPv4' };
  if (data.family === 'TCP6' || data.family === 'UDP6') return { address: data.srcAddress, port: data.srcPort ?? 0, family: 'IPv6' };
  if (data.family === 'UNIX') return { address: data.srcAddress, port: 0, family: 'unix' };
  return null;
}

/**
 * Whether a client is on an allow-list (xclientAllow, xforwardAllow): the client a PROXY header
 * names when there is one (else a load balancer on the list would vouch for everyone behind
 * it), else the socket's; never what an XCLIENT said.
 */
export function onAllowList(allow: string[] | undefined, socket: Socket | null, proxyData: ProxyData | null): boolean {
  if (allow === undefined || allow.length === 0 || socket === null) return false;
  const proxied = proxyData === null ? null : proxiedPeer(proxyData);
  const address = (proxied?.address ?? socket.remoteAddress)?.replace(/^::ffff:/, '');
  if (address === undefined || address === '') return false;
  return allowListOf(allow).check(address, isIPv6(address) ? 'ipv6' : 'ipv4');
}
