/**
 * One captured message: the envelope, what the session knew of the client, the bytes as they
 * arrived and the parsed message, with the look-ups tests make (links, a one-time code, the HTML's
 * text). Built once the body is in; only `read` and `tags` change afterwards.
 */
import { randomBytes } from 'node:crypto';
import type { AddressObject, Attachment, ParsedMail } from 'mailparser';
import type { MailOptions, Peer, RcptOptions, TLSInfo } from '../session.js';
import { extractLinks, findCode, htmlToText, type CodeOptions } from './text.js';

/** What the SMTP session knew when the message arrived. */
export interface CapturedSession {
  peer: Peer;
  /** The HELO/EHLO argument. */
  heloName: string | null;
  /** Protocol and cipher after STARTTLS or on an implicit-TLS listener; null in the clear. */
  tls: { protocol: string | null; cipher: string | null } | null;
  /** The login name of an AUTH that succeeded; null without AUTH. */
  authUser: string | null;
  lmtp: boolean;
}

export interface CapturedEnvelope {
  /** The reverse-path; '' for the null sender. */
  mailFrom: string;
  rcptTos: readonly string[];
  mailOptions: Readonly<MailOptions>;
  rcptOptions: readonly RcptOptions[];
}

export interface AddressEntry {
  name: string;
  address: string;
}

/** 22 characters of [A-Za-z0-9_-] (128 random bits), as long as Mailpit's IDs. */
export function newId(): string {
  return randomBytes(16).toString('base64url').slice(0, 22);
}

export function tlsSummary(tls: TLSInfo | null): CapturedSession['tls'] {
  return tls === null ? null : { protocol: tls.protocol, cipher: tls.cipher?.name ?? null };
}

/** Every address of an address header, groups flattened. */
export function addressesOf(header: AddressObject | AddressObject[] | undefined): AddressEntry[] {
  if (header === undefined) return [];
  const out: AddressEntry[] = [];
  const walk = (list: AddressObject['value']) => {
    for (const entry of list) {
      if (entry.group !== undefined) walk(entry.group);
      else if (entry.address !== undefined && entry.address !== '') out.push({ name: entry.name, address: entry.address });
    }
  };
  for (const object of Array.isArray(header) ? header : [header]) walk(object.value);
  return out;
}

/** An inline part (shown in the HTML, Mailpit's "Inline") rather than an attachment to download. */
export function isInline(a: Attachment): boolean {
  return a.contentDisposition === 'inline' || a.related === true;
}

export class CapturedMessage {
  readonly id: string;
  readonly receivedAt: Date;
  readonly envelope: CapturedEnvelope;
  readonly session: CapturedSession;
  /** The message as received (dot-unstuffed), byte for byte. */
  readonly raw: Buffer;
  readonly parsed: ParsedMail;
  /** Mailpit's read state, for the web UI and the API. */
  read = false;
  tags: string[] = [];
  private textOfHtml: string | null = null;

  constructor(init: { id?: string; receivedAt?: Date; envelope: CapturedEnvelope; session: CapturedSession; raw: Buffer; parsed: ParsedMail }) {
    this.id = init.id ?? newId();
    this.receivedAt = init.receivedAt ?? new Date();
    this.envelope = init.envelope;
    this.session = init.session;
    this.raw = init.raw;
    this.parsed = init.parsed;
  }

  get size(): number {
    return this.raw.length;
  }
  get subject(): string {
    return this.parsed.subject ?? '';
  }
  get from(): AddressEntry | null {
    return addressesOf(this.parsed.from)[0] ?? null;
  }
  get to(): AddressEntry[] {
    return addressesOf(this.parsed.to);
  }
  get cc(): AddressEntry[] {
    return addressesOf(this.parsed.cc);
  }
  get bcc(): AddressEntry[] {
    return addressesOf(this.parsed.bcc);
  }
  get messageId(): string {
    return (this.parsed.messageId ?? '').replace(/^<|>$/g, '');
  }
  /** The HTML part, or null. */
  get html(): string | null {
    return typeof this.parsed.html === 'string' ? this.parsed.html : null;
  }
  /** The plain text part; without one, the HTML's text. */
  get text(): string {
    return this.parsed.text ?? this.htmlText();
  }

  /** The readable text of the HTML part ('' without one). */
  htmlText(): string {
    this.textOfHtml ??= this.html === null ? '' : htmlToText(this.html);
    return this.textOfHtml;
  }

  /** The links of the HTML and the text, in order, each once. */
  links(): string[] {
    return extractLinks(this.parsed.text ?? '', this.html);
  }

  /**
   * A one-time code: the OTP-Token header's when the message has one, else one found in the
   * subject and text (see CodeOptions).
   */
  code(options: CodeOptions = {}): string | undefined {
    if (options.pattern === undefined && options.length === undefined && this.parsed.otp !== undefined) return this.parsed.otp.code;
    return findCode(`${this.subject}\n${this.text}`, options);
  }

  /** Every value of a header (any case), as the raw lines' values, unfolded. */
  headerValues(name: string): string[] {
    const key = name.toLowerCase();
    return this.parsed.headerLines
      .filter((h) => h.key === key)
      .map((h) => h.line.slice(h.line.indexOf(':') + 1).replace(/\r?\n[ \t]+/g, ' ').trim());
  }

  /** The first value of a header, or undefined. */
  header(name: string): string | undefined {
    return this.headerValues(name)[0];
  }

  /** Envelope recipients and the addresses of To, Cc and Bcc. */
  recipients(): string[] {
    return [...this.envelope.rcptTos, ...[...this.to, ...this.cc, ...this.bcc].map((a) => a.address)];
  }

  /** The envelope sender and the From address. */
  senders(): string[] {
    const from = this.from;
    return from === null ? [this.envelope.mailFrom] : [this.envelope.mailFrom, from.address];
  }

  /** One line for logs and errors: `#id from <a> to <b, c> "Subject"`. */
  describe(): string {
    return `${this.id} from <${this.envelope.mailFrom}> to <${this.envelope.rcptTos.join(', ')}> ${JSON.stringify(this.subject)}`;
  }
}
