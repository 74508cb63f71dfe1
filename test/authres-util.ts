/**
 * Fixtures for the Authentication-Results tests and bench: a DNS resolver answering from a table
 * (no network), keys made here, and messages DKIM-signed or ARC-sealed here.
 */
import { generateKeyPairSync } from 'node:crypto';
import { dkimSign, sealMessage, type ARCSealOptions, type DKIMSignOptions, type DNSResolver } from 'mailauth';

export interface Key {
  privateKey: string;
  /** The `p=` of the DKIM key record. */
  publicKey: string;
}

export function makeKey(): Key {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
  return {
    privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKey: publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
  };
}

/** A resolver over `{ 'name TYPE': records }`; a name it lacks is NXDOMAIN, `'SERVFAIL'` a temporary failure. */
export function fixtureResolver(zone: Record<string, string[] | 'SERVFAIL'>): DNSResolver & { queries: string[] } {
  const queries: string[] = [];
  const resolve = async (name: string, type: string): Promise<string[][] | string[]> => {
    const key = `${name.toLowerCase()} ${type}`;
    queries.push(key);
    const records = zone[key];
    if (records === 'SERVFAIL') throw Object.assign(new Error(`queryServfail ${name}`), { code: 'ESERVFAIL' });
    if (records === undefined) throw Object.assign(new Error(`queryNotFound ${name}`), { code: 'ENOTFOUND' });
    // TXT answers are lists of strings (one per character-string), as dns.promises.resolve gives them.
    return type === 'TXT' ? records.map((r) => [r]) : records;
  };
  return Object.assign(resolve, { queries });
}

export const DKIM_KEY = makeKey();
export const ARC_KEY = makeKey();

/** example.org: SPF passes 127.0.0.1, DMARC reject, DKIM selector s1. other.net: SPF fails all. */
export function standardZone(): Record<string, string[] | 'SERVFAIL'> {
  return {
    'example.org TXT': ['v=spf1 ip4:127.0.0.1 ip6:::1 -all'],
    '_dmarc.example.org TXT': ['v=DMARC1; p=reject'],
    's1._domainkey.example.org TXT': [`v=DKIM1; k=rsa; p=${DKIM_KEY.publicKey}`],
    'other.net TXT': ['v=spf1 -all'],
    '_dmarc.other.net TXT': ['v=DMARC1; p=quarantine'],
    'soft.net TXT': ['v=spf1 ~all'],
    'broken.net TXT': 'SERVFAIL',
    'client.example TXT': ['v=spf1 ip4:127.0.0.1 -all'],
    'arc._domainkey.forwarder.net TXT': [`v=DKIM1; k=rsa; p=${ARC_KEY.publicKey}`],
  };
}

export function message(from = 'alice@example.org', extraHeaders = '', body = 'Hello.\r\n'): Buffer {
  return Buffer.from(
    `${extraHeaders}From: ${from}\r\nTo: bob@example.net\r\nSubject: test\r\nDate: Thu, 03 Dec 2026 05:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\n${body}`,
  );
}

export async function signed(msg: Buffer, domain = 'example.org'): Promise<Buffer> {
  const r = await dkimSign(msg, {
    canonicalization: 'relaxed/relaxed',
    signatureData: [{ signingDomain: domain, selector: 's1', privateKey: DKIM_KEY.privateKey }],
  } as DKIMSignOptions);
  if (r.errors.length > 0) throw new Error(`dkimSign: ${String(r.errors[0])}`);
  return Buffer.concat([Buffer.from(r.signatures), msg]);
}

/** The message with one ARC set by forwarder.net (cv=none: it starts the chain). */
export async function sealed(msg: Buffer): Promise<Buffer> {
  const seal = {
    signingDomain: 'forwarder.net',
    selector: 'arc',
    privateKey: ARC_KEY.privateKey,
    authResults: 'forwarder.net; spf=pass smtp.mailfrom=example.org',
    cv: 'none',
  } as ARCSealOptions;
  return Buffer.concat([await sealMessage(msg, seal), msg]);
}
