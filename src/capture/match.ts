/**
 * What a test waits for: a description (recipient, sender, subject, header, text, a predicate)
 * compiled to a predicate, and the same description in words for a timeout's error.
 */
import type { CapturedMessage } from './message.js';

/** A string matches case-insensitively (addresses: the whole address; other fields: a substring). */
export type TextMatch = string | RegExp;

export interface MatchSpec {
  /** An envelope recipient, or an address of the To, Cc or Bcc header. */
  to?: TextMatch;
  /** The envelope sender, or an address of the From header. */
  from?: TextMatch;
  subject?: TextMatch;
  /** Header name (any case) to the value it must have: every entry must match. */
  header?: Record<string, TextMatch>;
  /** The plain text, or the HTML's text when the message has no plain text part. */
  text?: TextMatch;
  /** The HTML source. */
  html?: TextMatch;
  /** Any test of your own, on top of the others. */
  where?: (message: CapturedMessage) => boolean;
}

/** A description, or a predicate alone. */
export type Match = MatchSpec | ((message: CapturedMessage) => boolean);

function textMatches(pattern: TextMatch, value: string): boolean {
  if (typeof pattern === 'string') return value.toLowerCase().includes(pattern.toLowerCase());
  pattern.lastIndex = 0; // a /g or /y pattern keeps state between calls otherwise
  return pattern.test(value);
}

function addressMatches(pattern: TextMatch, addresses: readonly string[]): boolean {
  if (typeof pattern === 'string') {
    const wanted = pattern.toLowerCase();
    return addresses.some((a) => a.toLowerCase() === wanted);
  }
  return addresses.some((a) => textMatches(pattern, a));
}

export function compileMatch(match: Match | undefined): (message: CapturedMessage) => boolean {
  if (match === undefined) return () => true;
  if (typeof match === 'function') return match;
  const spec = match;
  return (m) =>
    (spec.to === undefined || addressMatches(spec.to, m.recipients())) &&
    (spec.from === undefined || addressMatches(spec.from, m.senders())) &&
    (spec.subject === undefined || textMatches(spec.subject, m.subject)) &&
    (spec.header === undefined ||
      Object.entries(spec.header).every(([name, value]) => m.headerValues(name).some((v) => textMatches(value, v)))) &&
    (spec.text === undefined || textMatches(spec.text, m.text)) &&
    (spec.html === undefined || textMatches(spec.html, m.html ?? '')) &&
    (spec.where === undefined || spec.where(m));
}

function show(value: TextMatch): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/** `{ to: "a@example.com", subject: /Welcome/ }`, or `a predicate (name)`. */
export function describeMatch(match: Match | undefined): string {
  if (match === undefined) return 'any message';
  if (typeof match === 'function') return `a message passing ${match.name === '' ? 'the predicate' : match.name}`;
  const parts: string[] = [];
  for (const key of ['to', 'from', 'subject', 'text', 'html'] as const) {
    const value = match[key];
    if (value !== undefined) parts.push(`${key}: ${show(value)}`);
  }
  if (match.header !== undefined) {
    parts.push(`header: { ${Object.entries(match.header).map(([k, v]) => `${k}: ${show(v)}`).join(', ')} }`);
  }
  if (match.where !== undefined) parts.push(`where: ${match.where.name === '' ? 'a predicate' : match.where.name}`);
  return parts.length === 0 ? 'any message' : `{ ${parts.join(', ')} }`;
}
