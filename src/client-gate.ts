/** maxConnectionsPerClient: open connections counted per client address; exempt ones are free. */
import net from 'node:net';
import type { InternalOptions } from './options.js';
import { allowListOf } from './xclient.js';

export type ClientGate = NonNullable<InternalOptions['connectionGate']>;

export function clientGate(exemptEntries: string[], limit: number): ClientGate {
  const perClient = new Map<string, number>();
  const exempt = allowListOf(exemptEntries);
  const free = (address: string) => {
    const a = address.replace(/^::ffff:/, '');
    return a === '' || !net.isIP(a) || exempt.check(a, net.isIPv6(a) ? 'ipv6' : 'ipv4');
  };
  return {
    admit(address) {
      if (free(address)) return true;
      const n = (perClient.get(address) ?? 0) + 1;
      if (n > limit) return false;
      perClient.set(address, n);
      return true;
    },
    leave(address) {
      if (free(address)) return;
      const n = (perClient.get(address) ?? 1) - 1;
      if (n <= 0) perClient.delete(address);
      else perClient.set(address, n);
    },
  };
}
