/**
 * Mailpit's POST /api/v1/send body to a MIME message (RFC 5322, RFC 2045-2047) and its
 * envelope. Pure: JSON in, bytes out; every header value is checked for CR and LF first, so a
 * request cannot add headers or split the message.
 */
import { randomBytes } from 'node:crypto';
import { tagList } from './tags.js';

export class ComposeError extends Error {}

export interface SendRequest {
  From: { Email: string; Name?: string };
  To?: Array<{ Email: string; Name?: string }>;
  Cc?: Array<{ Email: string; Name?: string }>;
  Bcc?: string[];
  ReplyTo?: Array<{ Email: string; Name?: string }>;
  Subject?: string;
  Text?: string;
  HTML?: string;
  Headers?: Record<string, string>;
  Tags?: string[];
  Attachments?: Array<{ Content: string; Filename: string; ContentType?: string; ContentID?: string }>;
}

export interface Composed {
  raw: Buffer;
  mailFrom: string;
  rcptTos: string[];
  tags: string[];
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function text(value: unknown, what: string): string {
  if (value === undefined || value === null) return '';
  if (typeof value !== 'string') throw new ComposeError(`${what} must be a string`);
  return value;
}

function headerSafe(value: string, what: string): string {
  if (/[\r\n\0]/.test(value)) throw new ComposeError(`${what} must not contain line breaks`);
  return value;
}

function email(value: unknown, what: string): string {
  const e = headerSafe(text(value, what).trim(), what);
  if (!/^[^\s<>@"(),;:]+@[^\s<>@"(),;:]+$/.test(e)) throw new ComposeError(`${what} is not an email address: ${JSON.stringify(e)}`);
  return e;
}

/** RFC 2047 B-encoding for a header text that is not plain ASCII. */
function encodeWord(value: string): string {
  if (/^[\x20-\x7e]*$/.test(value)) return value;
  // Encoded words are at most 75 characters: encode in slices of whole characters.
  const words: string[] = [];
  let slice = '';
  for (const c of value) {
    if (Buffer.byteLength(slice + c) > 45) {
      words.push(`=?UTF-8?B?${Buffer.from(slice).toString('base64')}?=`);
      slice = '';
    }
    slice += c;
  }
  if (slice !== '') words.push(`=?UTF-8?B?${Buffer.from(slice).toString('base64')}?=`);
  return words.join('\r\n ');
}

function mailbox(value: unknown, what: string): { email: string; header: string } {
  if (!isObject(value)) throw new ComposeError(`${what} must be an object with Email`);
  const address = email(value['Email'], `${what}.Email`);
  const name = headerSafe(text(value['Name'], `${what}.Name`), `${what}.Name`);
  if (name === '') return { email: address, header: address };
  const shown = /^[\x20-\x7e]*$/.test(name) ? `"${name.replace(/(["\\])/g, '\\$1')}"` : encodeWord(name);
  return { email: address, header: `${shown} <${address}>` };
}

function list<T>(value: unknown, what: string, each: (v: unknown, what: string) => T): T[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new ComposeError(`${what} must be an array`);
  return value.map((v, i) => each(v, `${what}[${i}]`));
}

function base64Lines(data: Buffer): string {
  return (data.toString('base64').match(/.{1,76}/g) ?? []).join('\r\n');
}

function part(contentType: string, body: Buffer, extra: string[] = []): string {
  return [`Content-Type: ${contentType}`, 'Content-Transfer-Encoding: base64', ...extra, '', base64Lines(body)].join('\r\n');
}

function multipart(subtype: string, parts: string[]): string {
  const boundary = `=_tsmtpd_${randomBytes(12).toString('hex')}`;
  return [`Content-Type: multipart/${subtype}; boundary="${boundary}"`, '', ...parts.map((p) => `--${boundary}\r\n${p}`), `--${boundary}--`, ''].join('\r\n');
}

export function composeMessage(body: unknown, hostname = 'tsmtpd.localhost'): Composed {
  if (!isObject(body)) throw new ComposeError('the request body must be a JSON object');
  const from = mailbox(body['From'], 'From');
  const to = list(body['To'], 'To', mailbox);
  const cc = list(body['Cc'], 'Cc', mailbox);
  const bcc = list(body['Bcc'], 'Bcc', email);
  const replyTo = list(body['ReplyTo'], 'ReplyTo', mailbox);
  const rcptTos = [...to, ...cc].map((m) => m.email).concat(bcc);
  if (rcptTos.length === 0) throw new ComposeError('no recipients: give To, Cc or Bcc');
  const subject = headerSafe(text(body['Subject'], 'Subject'), 'Subject');
  const plain = text(body['Text'], 'Text');
  const html = text(body['HTML'], 'HTML');
  const tags = tagList(list(body['Tags'], 'Tags', text));

  const head: string[] = [
    `From: ${from.header}`,
    ...(to.length > 0 ? [`To: ${to.map((m) => m.header).join(', ')}`] : []),
    ...(cc.length > 0 ? [`Cc: ${cc.map((m) => m.header).join(', ')}`] : []),
    ...(replyTo.length > 0 ? [`Reply-To: ${replyTo.map((m) => m.header).join(', ')}`] : []),
    `Subject: ${encodeWord(subject)}`,
    `Date: ${new Date().toUTCString().replace('GMT', '+0000')}`,
    `Message-ID: <${randomBytes(12).toString('hex')}@${hostname}>`,
    'MIME-Version: 1.0',
  ];
  const custom = body['Headers'];
  if (custom !== undefined && custom !== null) {
    if (!isObject(custom)) throw new ComposeError('Headers must be an object of name: value');
    for (const [name, value] of Object.entries(custom)) {
      if (!/^[!-9;-~]+$/.test(name)) throw new ComposeError(`bad header name: ${JSON.stringify(name)}`);
      head.push(`${name}: ${encodeWord(headerSafe(text(value, `Headers.${name}`), `Headers.${name}`))}`);
    }
  }

  const alternatives = [
    ...(plain !== '' || html === '' ? [part('text/plain; charset=utf-8', Buffer.from(plain))] : []),
    ...(html !== '' ? [part('text/html; charset=utf-8', Buffer.from(html))] : []),
  ];
  const files = list(body['Attachments'], 'Attachments', (v, what) => {
    if (!isObject(v)) throw new ComposeError(`${what} must be an object`);
    const content = text(v['Content'], `${what}.Content`);
    if (!/^[A-Za-z0-9+/=\s]*$/.test(content)) throw new ComposeError(`${what}.Content must be base64`);
    const filename = headerSafe(text(v['Filename'], `${what}.Filename`), `${what}.Filename`);
    if (filename === '') throw new ComposeError(`${what}.Filename is required`);
    const type = headerSafe(text(v['ContentType'], `${what}.ContentType`), `${what}.ContentType`) || 'application/octet-stream';
    if (!/^[\w.+-]+\/[\w.+-]+$/.test(type)) throw new ComposeError(`${what}.ContentType is not a MIME type`);
    const cid = headerSafe(text(v['ContentID'], `${what}.ContentID`), `${what}.ContentID`);
    const quoted = `"${encodeWord(filename).replace(/(["\\])/g, '\\$1')}"`;
    return part(`${type}; name=${quoted}`, Buffer.from(content, 'base64'), [
      `Content-Disposition: ${cid === '' ? 'attachment' : 'inline'}; filename=${quoted}`,
      ...(cid === '' ? [] : [`Content-ID: <${cid.replace(/^<|>$/g, '')}>`]),
    ]);
  });
  const text0 = alternatives.length === 1 ? alternatives[0]! : multipart('alternative', alternatives);
  const content = files.length === 0 ? text0 : multipart('mixed', [text0, ...files]);
  const raw = Buffer.from(`${head.join('\r\n')}\r\n${content}${content.endsWith('\r\n') ? '' : '\r\n'}`, 'utf8');
  return { raw, mailFrom: from.email, rcptTos, tags };
}
