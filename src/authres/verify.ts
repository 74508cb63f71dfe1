/**
 * One message's SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489) and ARC (RFC 8617) checks,
 * made by mailauth, turned into typed verdicts and one Authentication-Results header (RFC 8601).
 */
import type { Readable } from 'node:stream';
import type { AuthenticateResult, AuthStatus, DNSResolver } from 'mailauth';
import { safeHeader } from './headers.js';

/** RFC 8601 §2.7 result values (mailauth's `temperr` is spelt `temperror` here). */
export type AuthResultValue = 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'temperror' | 'permerror' | 'policy' | 'skipped';

export interface SpfVerdict {
  result: AuthResultValue;
  /** The domain checked: of MAIL FROM, or of HELO for the null sender. */
  domain: string;
  clientIp: string;
  helo: string | null;
  comment: string | null;
}

export interface DkimVerdict {
  result: AuthResultValue;
  /** d= of the signature ('' when it had none). */
  signingDomain: string;
  selector: string | null;
  /** The signing domain is aligned with the From domain (DMARC's sense). */
  aligned: boolean;
  comment: string | null;
}

export interface DmarcVerdict {
  result: AuthResultValue;
  /** The From domain. */
  domain: string;
  /** The policy the domain publishes (`p=`: none, quarantine, reject), null without a record. */
  policy: string | null;
  comment: string | null;
}

export interface ArcVerdict {
  result: AuthResultValue;
  /** The highest ARC instance (i=), null without a chain. */
  instance: number | null;
  comment: string | null;
}

/** What the checks found, for the handler (`authResultsOf(envelope)`). */
export interface AuthResults {
  authservId: string;
  spf: SpfVerdict | null;
  /** One per DKIM-Signature header; a message without one has a single `none`. */
  dkim: DkimVerdict[];
  dmarc: DmarcVerdict | null;
  arc: ArcVerdict | null;
  /** The header we prepended: `Authentication-Results: ...`, folded, without the final line ending. */
  header: string;
  /** How many Authentication-Results headers forging our authserv-id were removed. */
  removed: number;
}

export interface VerifyInput {
  /** The client's IP address ('' when there is none, e.g. a Unix socket: SPF is then not checked). */
  ip: string;
  helo: string | null;
  /** The reverse-path ('' for the null sender). */
  mailFrom: string;
  authservId: string;
  resolver?: DNSResolver;
  /** Shortest DKIM/ARC key accepted, in bits. mailauth's default 1024. */
  minBitLength?: number;
}

function value(status: AuthStatus | undefined): AuthResultValue {
  const r = status?.result;
  if (r === undefined) return 'none';
  return r === 'temperr' ? 'temperror' : r;
}

function comment(status: AuthStatus | undefined): string | null {
  return typeof status?.comment === 'string' && status.comment !== '' ? status.comment : null;
}

/** mailauth's result as our typed verdicts. */
function verdicts(r: AuthenticateResult, authservId: string): Omit<AuthResults, 'header' | 'removed'> {
  const spf = r.spf
    ? {
        result: value(r.spf.status),
        domain: r.spf.domain,
        clientIp: r.spf['client-ip'],
        helo: r.spf.helo ?? null,
        comment: comment(r.spf.status),
      }
    : null;
  const dkim = r.dkim.results.map((d) => ({
    result: value(d.status),
    signingDomain: d.signingDomain ?? '',
    selector: d.selector ?? null,
    aligned: Boolean(d.status.aligned),
    comment: comment(d.status),
  }));
  const dmarc = r.dmarc
    ? { result: value(r.dmarc.status), domain: r.dmarc.domain, policy: r.dmarc.p || null, comment: comment(r.dmarc.status) }
    : null;
  const arc = r.arc ? { result: value(r.arc.status), instance: typeof r.arc.i === 'number' ? r.arc.i : null, comment: comment(r.arc.status) } : null;
  return { authservId, spf, dkim, dmarc, arc };
}

/** mailauth's Authentication-Results header, out of the block it returns beside Received-SPF. */
function authResultsHeader(headers: string, authservId: string): string {
  const found = headers.split(/\r\n(?![ \t])/).find((h) => /^Authentication-Results:/i.test(h));
  return safeHeader(found ?? `Authentication-Results: ${authservId}; none`);
}

/** Verifies one message (bytes as received, or the body stream). */
export async function verifyMessage(message: Buffer | Readable, input: VerifyInput): Promise<Omit<AuthResults, 'removed'>> {
  // mailauth loads when first used: `import 'tsmtpd'` does not pay for it (~300 ms CPU, ~25 MiB).
  const { authenticate } = await import('mailauth');
  const r = await authenticate(message, {
    ip: input.ip === '' ? undefined : input.ip,
    helo: input.helo ?? undefined,
    sender: input.mailFrom,
    mta: input.authservId,
    resolver: input.resolver,
    minBitLength: input.minBitLength,
    disableBimi: true,
  });
  const typed = verdicts(r, input.authservId);
  // Without an address SPF has nothing to check (mailauth would judge an empty IP).
  if (input.ip === '') typed.spf = null;
  let header = authResultsHeader(r.headers, input.authservId);
  if (typed.spf === null) header = header.replace(/;\r\n spf=[^;]*(?=;|$)/, '');
  return { ...typed, header };
}
