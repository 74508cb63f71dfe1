/**
 * Pure helpers over a message's text that test suites otherwise write by hand: the HTML's
 * readable text, the links, and a one-time code. Strings in, strings out.
 */

const NAMED_ENTITIES: Record<string, string> = {
  amp: '&',
  lt: '<',
  gt: '>',
  quot: '"',
  apos: "'",
  nbsp: '\u00a0',
  copy: '\u00a9',
  reg: '\u00ae',
  hellip: '\u2026',
  mdash: '\u2014',
  ndash: '\u2013',
  laquo: '\u00ab',
  raquo: '\u00bb',
};

/** Decodes the character references a mail's HTML uses: numeric, and the common named ones. */
export function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-f]{1,6}|#[0-9]{1,7}|[a-z]{2,8});/gi, (whole, ref: string) => {
    if (ref[0] === '#') {
      const code = ref[1] === 'x' || ref[1] === 'X' ? Number.parseInt(ref.slice(2), 16) : Number(ref.slice(1));
      return code > 0 && code <= 0x10ffff && (code < 0xd800 || code > 0xdfff) ? String.fromCodePoint(code) : whole;
    }
    return NAMED_ENTITIES[ref.toLowerCase()] ?? whole;
  });
}

/** Elements whose content a reader never sees. */
const HIDDEN = new Set(['script', 'style', 'head', 'title', 'template', 'noscript']);
const BLOCK = new Set(['br', 'p', 'div', 'tr', 'li', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'table', 'ul', 'ol', 'blockquote', 'section', 'article', 'header', 'footer', 'pre', 'hr']);

type HtmlToken = { text: string } | { tag: string; closing: boolean; attrs: string };

/**
 * The HTML as text runs and tags, in one forward pass (indexOf only, never a regex that can
 * backtrack over the whole input), so a hostile body costs linear time. Comments and the
 * content of hidden elements are skipped; an unclosed tag ends the input.
 */
function* tokenize(html: string): Generator<HtmlToken> {
  const lower = html.toLowerCase();
  let i = 0;
  while (i < html.length) {
    const lt = html.indexOf('<', i);
    if (lt < 0) {
      yield { text: html.slice(i) };
      return;
    }
    if (lt > i) yield { text: html.slice(i, lt) };
    if (html.startsWith('<!--', lt)) {
      const end = html.indexOf('-->', lt + 4);
      if (end < 0) return;
      i = end + 3;
      continue;
    }
    const gt = html.indexOf('>', lt + 1);
    if (gt < 0) return;
    const inner = html.slice(lt + 1, gt);
    const name = /^\/?([a-zA-Z][a-zA-Z0-9-]*)/.exec(inner);
    i = gt + 1;
    if (name === null) continue; // <!DOCTYPE>, <?xml?>, stray '<'
    const tag = name[1]!.toLowerCase();
    const closing = inner.startsWith('/');
    if (!closing && HIDDEN.has(tag)) {
      const end = lower.indexOf(`</${tag}`, i);
      if (end < 0) return;
      const close = html.indexOf('>', end);
      i = close < 0 ? html.length : close + 1;
      continue;
    }
    yield { tag, closing, attrs: inner.slice(name[0].length) };
  }
}

/**
 * The text a reader sees in an HTML body: no script, style or head, block elements on their own
 * lines, entities decoded, runs of blanks collapsed.
 */
export function htmlToText(html: string): string {
  const parts: string[] = [];
  for (const token of tokenize(html)) {
    if ('text' in token) parts.push(token.text);
    else if (BLOCK.has(token.tag)) parts.push('\n');
  }
  return decodeEntities(parts.join(''))
    .split('\n')
    .map((line) => line.replace(/[ \t\u00a0\r]+/g, ' ').trim())
    .filter((line, i, all) => line !== '' || (i > 0 && all[i - 1] !== ''))
    .join('\n')
    .trim();
}

/** The href of an <a> tag's attribute text, or null. */
function hrefOf(attrs: string): string | null {
  const m = /(?:^|\s)href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))/i.exec(attrs);
  return m === null ? null : decodeEntities((m[1] ?? m[2] ?? m[3] ?? '').trim());
}

const URL_IN_TEXT = /\bhttps?:\/\/[^\s<>"'`]+/gi;

/** Drops punctuation that ends a sentence rather than the URL ("see https://x.test/a."). */
function trimUrl(url: string): string {
  const opened = url.split('(').length - 1;
  let closed = url.split(')').length - 1;
  let end = url.length;
  for (; end > 0; end--) {
    const last = url[end - 1]!;
    // A closing parenthesis stays when it closes one opened inside the URL (Wikipedia's style).
    if (last === ')' && closed > opened) closed--;
    else if (!/[.,;:!?\]}]/.test(last)) break;
  }
  return url.slice(0, end);
}

/**
 * The links of a message, in order of appearance, each once: every href of the HTML
 * (entity-decoded, any scheme but javascript:/data:) and every http(s) URL written in the text.
 */
export function extractLinks(text: string, html: string | null): string[] {
  const found: string[] = [];
  if (html !== null) {
    for (const token of tokenize(html)) {
      if (!('tag' in token) || token.tag !== 'a' || token.closing) continue;
      const href = hrefOf(token.attrs);
      if (href !== null && href !== '' && !/^(javascript|data|vbscript):/i.test(href.replace(/[\s\u0000-\u001f]+/g, ''))) found.push(href);
    }
    for (const m of htmlToText(html).matchAll(URL_IN_TEXT)) found.push(trimUrl(m[0]));
  }
  for (const m of text.matchAll(URL_IN_TEXT)) found.push(trimUrl(m[0]));
  return [...new Set(found)];
}

export interface CodeOptions {
  /** A pattern whose first group (or whole match) is the code. Default: digits near a word such as "code". */
  pattern?: RegExp;
  /** Digits a code has, when no pattern is given: a number or [min, max]. Default [4, 8]. */
  length?: number | [number, number];
}

/**
 * A one-time code in a text: with a pattern, its first group; otherwise a run of digits that
 * follows a word such as "code", "OTP", "PIN" or "verification", else the first run of digits
 * of the right length that is not part of a longer number, a date or a time.
 */
export function findCode(text: string, options: CodeOptions = {}): string | undefined {
  if (options.pattern !== undefined) {
    const m = options.pattern.exec(text);
    return m === null ? undefined : (m[1] ?? m[0]);
  }
  const [min, max] = typeof options.length === 'number' ? [options.length, options.length] : (options.length ?? [4, 8]);
  const digits = `[0-9]{${min},${max}}`;
  const near = new RegExp(`\\b(?:code|otp|pin|passcode|password|token|verification|verify)\\b[^0-9\\n]{0,40}?(?<![0-9.:/-])(${digits})(?![0-9.:/-])`, 'i');
  const m = near.exec(text);
  if (m !== null) return m[1];
  const alone = new RegExp(`(?<![0-9.:/\\-#])\\b(${digits})\\b(?![.:/\\-][0-9])`, 'g');
  for (const candidate of text.matchAll(alone)) return candidate[1];
  return undefined;
}
