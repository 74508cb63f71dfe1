/**
 * The CLI's address arguments: -l HOST:PORT, the --xclient-allow / --xforward-allow lists and the
 * --auth-results-dns servers. Pure: a string in, a value or a CliError out.
 */
import { isIP, isIPv6 } from 'node:net';
import { CliError } from './cli-error.js';

export const DEFAULT_PORT = 8025;

export function parseListen(value: string): { host: string; port: number } {
  let host = value;
  let port = String(DEFAULT_PORT);
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(value);
  if (bracketed !== null) {
    host = bracketed[1]!;
    if (bracketed[2] !== undefined) port = bracketed[2];
    if (!isIPv6(host)) throw new CliError(`'${value}': only an IPv6 address goes in [brackets]`);
  } else if (value.includes('[') || value.includes(']')) {
    throw new CliError(`'${value}': unbalanced brackets (write an IPv6 address as [::1]:8025)`);
  } else if (value.includes(':')) {
    // aiosmtpd splits at the last colon, so "::1:8025" is host ::1, port 8025.
    const at = value.lastIndexOf(':');
    host = value.slice(0, at);
    port = value.slice(at + 1);
    if (host.includes(':') && !isIPv6(host)) throw new CliError(`'${value}': '${host}' is not an IPv6 address`);
  }
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) > 65535) throw new CliError(`'${value}': the port must be a number from 0 to 65535`);
  if (!host.includes(':') && !/^[A-Za-z0-9._-]*$/.test(host)) throw new CliError(`'${value}': '${host}' is not a host name or address`);
  return { host: host === '' ? 'localhost' : host, port: Number(port) };
}

/** `host:port`, with an IPv6 host in brackets. */
export function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Why an allow-list entry is no address or CIDR range, or null when it is one. */
export function addressEntryProblem(entry: string): string | null {
  const [address = '', bits, extra] = entry.split('/');
  const family = isIP(address);
  if (extra !== undefined || family === 0) return `'${entry}' is not an IP address or CIDR range`;
  const max = family === 4 ? 32 : 128;
  if (bits !== undefined && (!/^[0-9]{1,3}$/.test(bits) || Number(bits) > max)) {
    return `'${entry}': the prefix length must be 0 to ${max}`;
  }
  return null;
}

/** Why a DNS server entry is not IP, IP:PORT or [IPv6]:PORT (as Resolver.setServers takes them), or null. */
export function dnsServerProblem(entry: string): string | null {
  const problem = `expected IP or IP:PORT ([IPv6]:PORT) DNS servers, comma-separated, got '${entry}'`;
  if (isIP(entry) !== 0) return null;
  const m = /^(?:\[([^\]]+)\]|([^:]+)):([0-9]{1,5})$/.exec(entry);
  if (m === null || Number(m[3]) > 65535) return problem;
  return (m[1] !== undefined ? isIPv6(m[1]) : isIP(m[2]!) === 4) ? null : problem;
}

/** Appends the comma-separated entries of `value` to `list`, or throws for the first one `problem` refuses. */
export function pushEntries(list: string[], value: string, problem: (entry: string) => string | null): void {
  for (const entry of value.split(',')) {
    const why = problem(entry);
    if (why !== null) throw new CliError(why);
    list.push(entry);
  }
}
