/**
 * Mailpit API v1 shapes (its published swagger.json: MessageSummary, Message, Attachment,
 * Address), made from a CapturedMessage. Pure: no I/O.
 */
import { createHash } from 'node:crypto';
import type { Attachment } from 'mailparser';
import { htmlToText } from './text.js';
import { isInline, type AddressEntry, type CapturedMessage } from './message.js';
import { attachmentCount, replyTo } from './search.js';
import { tagList } from './tags.js';

export interface MailpitAddress {
  Name: string;
  Address: string;
}

export interface MailpitAttachment {
  PartID: string;
  FileName: string;
  ContentType: string;
  ContentID: string;
  Size: number;
  Checksums: { MD5: string; SHA1: string; SHA256: string };
}

export interface MailpitSummary {
  ID: string;
  MessageID: string;
  Read: boolean;
  From: MailpitAddress | null;
  To: MailpitAddress[];
  Cc: MailpitAddress[];
  Bcc: MailpitAddress[];
  ReplyTo: MailpitAddress[];
  Subject: string;
  Created: string;
  Username: string;
  Tags: string[];
  Size: number;
  Attachments: number;
  Snippet: string;
}

export interface MailpitMessage {
  ID: string;
  MessageID: string;
  From: MailpitAddress | null;
  To: MailpitAddress[];
  Cc: MailpitAddress[];
  Bcc: MailpitAddress[];
  ReplyTo: MailpitAddress[];
  ReturnPath: string;
  Subject: string;
  ListUnsubscribe: { Header: string; Links: string[]; Errors: string; HeaderPost: string };
  Date: string;
  Tags: string[];
  Username: string;
  Text: string;
  HTML: string;
  Size: number;
  Inline: MailpitAttachment[];
  Attachments: MailpitAttachment[];
}

const address = (a: AddressEntry): MailpitAddress => ({ Name: a.name, Address: a.address });

/** Mailpit's snippet: the HTML's text (else the text), blanks collapsed, 200 characters then "...". */
export function snippet(m: CapturedMessage): string {
  const source = m.html !== null ? htmlToText(m.html) : (m.parsed.text ?? '');
  const text = source.replace(/\uFEFF/g, ' ').replace(/\s+/g, ' ').trim();
  return text.length <= 200 ? text : `${text.slice(0, 200)}...`;
}

/** A part's ID: mailparser's MIME part path, else its position. */
export function partId(a: Attachment, index: number): string {
  return a.partId ?? String(index + 1);
}

function attachment(a: Attachment, index: number): MailpitAttachment {
  const digest = (algorithm: string) => createHash(algorithm).update(a.content).digest('hex');
  return {
    PartID: partId(a, index),
    FileName: a.filename ?? '',
    ContentType: a.contentType,
    ContentID: (a.contentId ?? '').replace(/^<|>$/g, ''),
    Size: a.size,
    Checksums: { MD5: digest('md5'), SHA1: digest('sha1'), SHA256: digest('sha256') },
  };
}

function addressFields(m: CapturedMessage): Pick<MailpitSummary, 'From' | 'To' | 'Cc' | 'Bcc' | 'ReplyTo'> {
  return {
    From: m.from === null ? null : address(m.from),
    To: m.to.map(address),
    Cc: m.cc.map(address),
    Bcc: m.bcc.map(address),
    ReplyTo: replyTo(m).map(address),
  };
}

export function summary(m: CapturedMessage): MailpitSummary {
  return {
    ID: m.id,
    MessageID: m.messageId,
    Read: m.read,
    ...addressFields(m),
    Subject: m.subject,
    Created: m.receivedAt.toISOString(),
    Username: m.session.authUser ?? '',
    Tags: [...m.tags],
    Size: m.size,
    Attachments: attachmentCount(m),
    Snippet: snippet(m),
  };
}

export function message(m: CapturedMessage): MailpitMessage {
  const all = m.parsed.attachments.map((a, i) => ({ a, i }));
  const unsubscribe = m.header('list-unsubscribe') ?? '';
  return {
    ID: m.id,
    MessageID: m.messageId,
    ...addressFields(m),
    ReturnPath: m.envelope.mailFrom,
    Subject: m.subject,
    ListUnsubscribe: {
      Header: unsubscribe,
      Links: [...unsubscribe.matchAll(/<([^>]+)>/g)].map((x) => x[1]!),
      Errors: '',
      HeaderPost: m.header('list-unsubscribe-post') ?? '',
    },
    Date: (m.parsed.date ?? m.receivedAt).toISOString(),
    Tags: [...m.tags],
    Username: m.session.authUser ?? '',
    Text: m.parsed.text ?? '',
    HTML: m.html ?? '',
    Size: m.size,
    Inline: all.filter(({ a }) => isInline(a)).map(({ a, i }) => attachment(a, i)),
    Attachments: all.filter(({ a }) => !isInline(a)).map(({ a, i }) => attachment(a, i)),
  };
}

/** `content-type` -> `Content-Type`, as Go's textproto canonicalizes header names. */
function canonical(name: string): string {
  return name.toLowerCase().replace(/(^|-)([a-z])/g, (_, dash: string, c: string) => dash + c.toUpperCase());
}

/** Every header, name to its values in order (Mailpit's MessageHeadersResponse), names sorted as Go's JSON sorts map keys. */
export function headers(m: CapturedMessage): Record<string, string[]> {
  const byName = new Map<string, string[]>();
  for (const h of m.parsed.headerLines) {
    const name = canonical(h.key);
    const values = byName.get(name) ?? [];
    values.push(h.line.slice(h.line.indexOf(':') + 1).replace(/\r?\n[ \t]+/g, ' ').trim());
    byName.set(name, values);
  }
  return Object.fromEntries([...byName].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** `X-Tags: a, b` (Mailpit's way to tag a message from the sender). */
export function tagsFromHeader(m: CapturedMessage): string[] {
  return tagList(m.headerValues('x-tags').flatMap((v) => v.split(',')));
}
