/**
 * Mailpit's search syntax (its internal/storage/search.go, read for behaviour): words are
 * ANDed; "quoted phrases" are one word; a leading `-` or `!` negates. Prefixes: to: from: cc:
 * bcc: reply-to: addressed: subject: message-id: tag: is:read is:unread is:tagged has:attachment
 * has:inline after: before: larger: smaller:; anything else is searched in the whole text
 * (headers' addresses, subject and body), ignoring case. Pure: a query string to a predicate.
 */
import { isInline, type CapturedMessage } from './message.js';

/** Splits at blanks outside double quotes, dropping the quotes (Mailpit's tools.ArgsParser). */
export function splitQuery(query: string): string[] {
  const words: string[] = [];
  let word = '';
  let quoted = false;
  for (const c of query) {
    if (c === '"') quoted = !quoted;
    else if (!quoted && /\s/.test(c)) {
      if (word !== '') words.push(word);
      word = '';
    } else word += c;
  }
  if (word !== '') words.push(word);
  return words;
}

/** `2kb`, `4MB`, `1.5m`, `100` (bytes); 0 for anything else, which Mailpit treats as text. */
export function sizeToBytes(value: string): number {
  const m = /^(\d+)(\.\d+)?\s?([a-z]{1,2})?$/.exec(value.toLowerCase());
  if (m === null) return 0;
  const n = Number(m[1]! + (m[2] ?? ''));
  const unit = m[3] ?? '';
  if (unit === '') return Math.floor(n);
  if (unit === 'k' || unit === 'kb') return Math.floor(n * 1024);
  if (unit === 'm' || unit === 'mb') return Math.floor(n * 1024 * 1024);
  return 0;
}

/** How far `zone`'s wall clock is ahead of UTC at `instant`, ms; null for a zone Intl does not know. */
function zoneOffset(zone: string, instant: number): number | null {
  let parts: Intl.DateTimeFormatPart[];
  try {
    parts = new Intl.DateTimeFormat('en-US', { timeZone: zone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' }).formatToParts(instant);
  } catch {
    return null;
  }
  const n = (type: string) => Number(parts.find((p) => p.type === type)?.value ?? 0);
  return Date.UTC(n('year'), n('month') - 1, n('day'), n('hour'), n('minute'), n('second')) - Math.floor(instant / 1000) * 1000;
}

/**
 * A date for after:/before: (YYYY-MM-DD, an ISO timestamp, or what Date.parse takes); null when
 * invalid. A date or time without an offset is read in `zone` (Mailpit's `tz` parameter), else
 * in the server's zone; an unknown zone is ignored, as Mailpit ignores it.
 */
function parseDate(value: string, zone: string): number | null {
  const iso = /^\d{4}-\d{2}-\d{2}$/.test(value) ? `${value}T00:00:00` : value;
  if (zone !== '' && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(iso)) {
    const wall = Date.parse(`${iso}Z`);
    const first = zoneOffset(zone, wall);
    if (first !== null && !Number.isNaN(wall)) return wall - (zoneOffset(zone, wall - first) ?? first);
  }
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

type Test = (m: CapturedMessage) => boolean;

const addressText = (list: Array<{ name: string; address: string }>) =>
  list.map((a) => `${a.name} <${a.address}>`).join(', ').toLowerCase();

function field(name: string): ((m: CapturedMessage) => string) | null {
  switch (name) {
    case 'to':
      return (m) => addressText(m.to);
    case 'from':
      return (m) => addressText(m.from === null ? [] : [m.from]);
    case 'cc':
      return (m) => addressText(m.cc);
    case 'bcc':
      return (m) => addressText(m.bcc);
    case 'reply-to':
      return (m) => addressText(replyTo(m));
    case 'addressed':
      return (m) => addressText([...m.to, ...(m.from === null ? [] : [m.from]), ...m.cc, ...m.bcc, ...replyTo(m)]);
    case 'subject':
      return (m) => m.subject.toLowerCase();
    case 'message-id':
      return (m) => m.messageId.toLowerCase();
    default:
      return null;
  }
}

export function replyTo(m: CapturedMessage): Array<{ name: string; address: string }> {
  return (m.parsed.replyTo?.value ?? []).flatMap((a) => (a.address === undefined ? [] : [{ name: a.name, address: a.address }]));
}

export function attachmentCount(m: CapturedMessage): number {
  return m.parsed.attachments.filter((a) => !isInline(a)).length;
}

export function inlineCount(m: CapturedMessage): number {
  return m.parsed.attachments.length - attachmentCount(m);
}

/** The text free words are searched in (Mailpit's SearchText), made once per message. */
const searchTexts = new WeakMap<CapturedMessage, string>();
function searchText(m: CapturedMessage): string {
  let text = searchTexts.get(m);
  if (text === undefined) {
    text = [m.subject, addressText(m.to), addressText(m.from === null ? [] : [m.from]), addressText(m.cc), addressText(m.bcc), m.text]
      .join(' ')
      .toLowerCase();
    searchTexts.set(m, text);
  }
  return text;
}

function wordTest(word: string, zone: string): Test | null {
  const lower = word.toLowerCase();
  const colon = lower.indexOf(':');
  const prefix = colon > 0 ? lower.slice(0, colon) : '';
  const value = colon > 0 ? word.slice(colon + 1) : word;
  const get = field(prefix);
  if (get !== null) {
    const needle = value.trim().toLowerCase();
    return needle === '' ? null : (m) => get(m).includes(needle);
  }
  if (prefix === 'tag') {
    const tag = value.trim().toLowerCase();
    return tag === '' ? null : (m) => m.tags.some((t) => t.toLowerCase() === tag);
  }
  switch (lower) {
    case 'is:read':
      return (m) => m.read;
    case 'is:unread':
      return (m) => !m.read;
    case 'is:tagged':
      return (m) => m.tags.length > 0;
    case 'has:attachment':
    case 'has:attachments':
      return (m) => attachmentCount(m) > 0;
    case 'has:inline':
    case 'has:inlines':
      return (m) => inlineCount(m) > 0;
  }
  if (prefix === 'after' || prefix === 'before') {
    const t = parseDate(value.trim(), zone);
    if (t === null) return null; // Mailpit ignores an invalid date
    return prefix === 'after' ? (m) => m.receivedAt.getTime() >= t : (m) => m.receivedAt.getTime() <= t;
  }
  if ((prefix === 'larger' || prefix === 'smaller') && sizeToBytes(value.trim()) > 0) {
    const size = sizeToBytes(value.trim());
    return prefix === 'larger' ? (m) => m.size > size : (m) => m.size < size;
  }
  return (m) => searchText(m).includes(lower);
}

/** The predicate for a Mailpit query; an empty query matches everything. `zone`: see parseDate. */
export function compileSearch(query: string, zone = ''): Test {
  const tests: Test[] = [];
  for (let word of splitQuery(query)) {
    let negate = false;
    if (word.length > 1 && (word[0] === '-' || word[0] === '!')) {
      negate = true;
      word = word.slice(1);
    }
    const test = wordTest(word, zone);
    if (test !== null) tests.push(negate ? (m) => !test(m) : test);
  }
  return (m) => tests.every((t) => t(m));
}
