/**
 * What a relay (the Proxy handler) does with RFC 3461 DSN parameters: pass them on to an upstream
 * that offers DSN; otherwise, for each recipient that asked for NOTIFY=SUCCESS, send the sender a
 * "relayed" DSN (RFC 3464 format), as RFC 3461 requires of a relay to a server without DSN: the
 * upstream will send no success notice. The parameters are read whichever way the engine delivers them: typed
 * (`ret`, `envid`, `notify`, `orcpt`) or as the raw strings of unknown parameters (`RET`...).
 */
import { randomBytes } from 'node:crypto';
import {
  formatMailDsn,
  formatRcptDsn,
  parseEnvid,
  parseNotify,
  parseOrcpt,
  parseRet,
  type DsnMailOptions,
  type DsnNotify,
  type DsnOrcpt,
  type DsnRcptOptions,
  type DsnRet,
} from '../dsn.js';
import type { Envelope } from '../session.js';
import { toCRLF, type Upstream } from './upstream.js';

/** A typed value when the engine typed it, else the raw string parsed; a bad raw value counts as absent. */
function pick<T>(options: object, typed: string, raw: string, parse: (v: string) => T, isTyped: (v: unknown) => v is T): T | undefined {
  const o = options as Record<string, unknown>;
  if (isTyped(o[typed])) return o[typed];
  const v = o[raw];
  if (typeof v !== 'string') return undefined;
  try {
    return parse(v);
  } catch {
    return undefined;
  }
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isRet = (v: unknown): v is DsnRet => v === 'FULL' || v === 'HDRS';
const isNotify = (v: unknown): v is DsnNotify => v === 'NEVER' || Array.isArray(v);
const isOrcpt = (v: unknown): v is DsnOrcpt => typeof v === 'object' && v !== null && 'addrType' in v && 'encoded' in v;

export function mailDsnOf(options: object): DsnMailOptions {
  const out: DsnMailOptions = {};
  const ret = pick(options, 'ret', 'RET', parseRet, isRet);
  const envid = pick(options, 'envid', 'ENVID', parseEnvid, isString);
  if (ret !== undefined) out.ret = ret;
  if (envid !== undefined) out.envid = envid;
  return out;
}

export function rcptDsnOf(options: object | undefined, utf8: boolean): DsnRcptOptions {
  const out: DsnRcptOptions = {};
  if (options === undefined) return out;
  const notify = pick(options, 'notify', 'NOTIFY', parseNotify, isNotify);
  const orcpt = pick(options, 'orcpt', 'ORCPT', (v) => parseOrcpt(v, { utf8 }), isOrcpt);
  if (notify !== undefined) out.notify = notify;
  if (orcpt !== undefined) out.orcpt = orcpt;
  return out;
}

/** The MAIL FROM parameters to add when the upstream offers DSN ('' when it does not). */
export function mailDsnParameters(options: object, upstreamHasDsn: boolean): string {
  return upstreamHasDsn ? formatMailDsn(mailDsnOf(options)) : '';
}

/** The RCPT TO parameters to add when the upstream offers DSN ('' when it does not). */
export function rcptDsnParameters(options: object | undefined, upstreamHasDsn: boolean, utf8: boolean): string {
  return upstreamHasDsn ? formatRcptDsn(rcptDsnOf(options, utf8)) : '';
}

export function wantsSuccess(options: object | undefined, utf8: boolean): boolean {
  const n = rcptDsnOf(options, utf8).notify;
  return n !== undefined && n !== 'NEVER' && n.includes('SUCCESS');
}

export interface RelayedRecipient {
  address: string;
  orcpt?: DsnOrcpt;
}

export interface RelayedReport {
  /** Our hostname: Reporting-MTA, and the From domain. */
  reportingMta: string;
  /** The upstream's host name, for Remote-MTA. */
  remoteMta: string;
  /** The original sender, the report's recipient. */
  to: string;
  mail: DsnMailOptions;
  recipients: readonly RelayedRecipient[];
  /** The upstream's reply to the message, for Diagnostic-Code. */
  diagnostic: string;
  /** The message as relayed: its headers (RET=HDRS, or no RET) or all of it (RET=FULL) are returned. */
  message: Buffer;
  arrival: Date;
}

/** Header text is never allowed a line break or a control character from elsewhere. */
function field(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]/g, ' ');
}

function headersOf(message: Buffer): Buffer {
  const crlf = message.indexOf('\r\n\r\n');
  return crlf < 0 ? message : message.subarray(0, crlf + 2);
}

/**
 * The "relayed" DSN (RFC 3464 multipart/report, Action: relayed, Status 2.0.0): the message went
 * on to a server that does not offer DSN, so no further success notice will come. CRLF lines.
 */
export function relayedReport(r: RelayedReport): Buffer {
  const boundary = `=_dsn_${randomBytes(12).toString('hex')}`;
  const host = field(r.reportingMta);
  const date = r.arrival.toUTCString().replace('GMT', '+0000');
  const perRecipient = r.recipients
    .map((rc) => {
      const lines: string[] = [];
      if (rc.orcpt !== undefined) lines.push(`Original-Recipient: ${field(rc.orcpt.addrType)};${field(rc.orcpt.address)}`);
      lines.push(`Final-Recipient: rfc822;${field(rc.address)}`, 'Action: relayed', 'Status: 2.0.0');
      lines.push(`Remote-MTA: dns;${field(r.remoteMta)}`, `Diagnostic-Code: smtp;${field(r.diagnostic)}`);
      return lines.join('\r\n');
    })
    .join('\r\n\r\n');
  const full = r.mail.ret === 'FULL';
  const text = [
    `From: Mail Delivery System <MAILER-DAEMON@${host}>`,
    `To: <${field(r.to)}>`,
    'Subject: Delivery Status Notification (relayed)',
    `Date: ${date}`,
    `Message-ID: <${randomBytes(12).toString('hex')}@${host}>`,
    // RFC 3834 §5: an automatic reply, so no responder answers it again.
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=us-ascii',
    '',
    `Your message was relayed to ${field(r.remoteMta)}, which does not offer delivery`,
    'status notifications: no further notice of its delivery will be sent for',
    ...r.recipients.map((rc) => `  <${field(rc.address)}>`),
    '',
    `--${boundary}`,
    'Content-Type: message/delivery-status',
    '',
    `Reporting-MTA: dns;${host}`,
    ...(r.mail.envid !== undefined ? [`Original-Envelope-Id: ${field(r.mail.envid)}`] : []),
    `Arrival-Date: ${date}`,
    '',
    perRecipient,
    '',
    `--${boundary}`,
    `Content-Type: ${full ? 'message/rfc822' : 'text/rfc822-headers'}`,
    '',
    '',
  ].join('\r\n');
  const returned = full ? r.message : headersOf(r.message);
  const tail = `${returned.subarray(-2).equals(Buffer.from('\r\n')) ? '' : '\r\n'}\r\n--${boundary}--\r\n`;
  return Buffer.concat([Buffer.from(text, 'utf8'), returned, Buffer.from(tail)]);
}

export interface RelayedNotice {
  /** Opens a connection to the upstream the message went to. */
  connect(): Promise<Upstream>;
  /** Our hostname. */
  name: string;
  remoteMta: string;
  envelope: Envelope;
  /** Per envelope recipient: null when the upstream took it. */
  refusals: ReadonlyArray<string | null>;
  utf8: boolean;
  /** Our reply to the client (the upstream's, passed back). */
  reply: string;
  /** The chunks relayed (trace header, body). */
  sent: readonly Buffer[];
}

/**
 * The upstream took the message but offers no DSN, so it will never confirm delivery: the
 * recipients that asked for NOTIFY=SUCCESS get a "relayed" DSN from us, sent through the
 * upstream from the null sender. Best effort, after our client has its reply: the message
 * itself is delivered whatever becomes of the notice.
 */
export function notifyRelayed(n: RelayedNotice): void {
  const { envelope, utf8 } = n;
  const to = envelope.mailFrom ?? '';
  if (to === '') return; // never a notice about a notice (RFC 5321 §4.5.5)
  const recipients = envelope.rcptTos
    .map((address, i) => ({ address, options: envelope.rcptOptions[i], refused: n.refusals[i] !== null }))
    .filter((r) => !r.refused && wantsSuccess(r.options, utf8))
    .map(({ address, options }) => ({ address, orcpt: rcptDsnOf(options, utf8).orcpt }));
  if (recipients.length === 0) return;
  const report = relayedReport({
    reportingMta: n.name,
    remoteMta: n.remoteMta,
    to,
    mail: mailDsnOf(envelope.mailOptions),
    recipients,
    diagnostic: n.reply.split('\r\n')[0]!,
    message: toCRLF(Buffer.concat(n.sent)),
    arrival: new Date(),
  });
  const ok = (r: { code: number }) => r.code >= 200 && r.code < 300;
  void (async () => {
    const upstream = await n.connect();
    try {
      if (!ok(await upstream.command('MAIL FROM:<>'))) return;
      if (!ok(await upstream.command(`RCPT TO:<${to}>`))) return;
      await upstream.data([report]);
    } finally {
      upstream.quit();
    }
  })().catch(() => {});
}
