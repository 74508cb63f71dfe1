/**
 * /view/ID.html and /view/ID.txt: a captured message's HTML as a document that can do nothing.
 * Its Content-Security-Policy sandboxes it (an opaque origin, no script, no forms, no plugins)
 * wherever it is opened, in the web UI's iframe or on its own; remote images, styles and fonts
 * load only when asked (`?remote=1`); meta refresh is removed, inline (cid:) images are embedded.
 */
import type { ServerResponse } from 'node:http';
import { HttpError, send } from './http-util.js';
import type { CapturedMessage } from './message.js';

export function viewPolicy(remote: boolean): string {
  const far = remote ? ' http: https:' : '';
  return [
    'sandbox allow-popups allow-popups-to-escape-sandbox',
    "default-src 'none'",
    `img-src data:${far}`,
    `style-src 'unsafe-inline' data:${far}`,
    `font-src data:${far}`,
    "form-action 'none'",
    "frame-ancestors 'self'",
  ].join('; ');
}

/** Removes every <meta> that carries http-equiv (refresh, set-cookie, a competing CSP). Linear. */
export function stripMetaEquiv(html: string): string {
  const lower = html.toLowerCase();
  const out: string[] = [];
  let at = 0;
  for (;;) {
    const start = lower.indexOf('<meta', at);
    if (start < 0) break;
    const end = lower.indexOf('>', start);
    if (end < 0) break;
    if (lower.slice(start, end).includes('http-equiv')) {
      out.push(html.slice(at, start));
      at = end + 1;
    } else {
      out.push(html.slice(at, end + 1));
      at = end + 1;
    }
  }
  out.push(html.slice(at));
  return out.join('');
}

/** cid:xyz references replaced by data: URLs of the message's own parts. */
export function embedInline(html: string, message: CapturedMessage): string {
  const parts = new Map<string, { type: string; data: Buffer }>();
  for (const a of message.parsed.attachments) {
    const cid = (a.contentId ?? a.cid ?? '').replace(/^<|>$/g, '').toLowerCase();
    if (cid !== '') parts.set(cid, { type: a.contentType, data: a.content });
  }
  if (parts.size === 0) return html;
  return html.replace(/cid:([^"'\s)>]+)/gi, (whole, id: string) => {
    const part = parts.get(id.toLowerCase());
    // Only images: a data: URL of HTML or SVG in an <img> cannot script, elsewhere it might.
    if (part === undefined || !/^image\/(png|jpe?g|gif|webp|bmp)$/i.test(part.type)) return whole;
    return `data:${part.type};base64,${part.data.toString('base64')}`;
  });
}

/**
 * The HTML as it came (test suites load it in a page and click its links, as with Mailpit), or,
 * with `embed` (the web UI's iframe, Mailpit's `?embed=1`), with links opening a new window.
 * A message without HTML is a 404, as in Mailpit.
 */
export function renderHTML(res: ServerResponse, message: CapturedMessage, options: { remote: boolean; embed: boolean }): void {
  if (message.html === null || message.html === '') throw new HttpError(404, 'This message does not contain a HTML part');
  const html = embedInline(stripMetaEquiv(message.html), message);
  const doc = options.embed ? `<!DOCTYPE html><base target="_blank">${html}` : html;
  send(res, 200, 'text/html; charset=utf-8', doc, { 'Content-Security-Policy': viewPolicy(options.remote) });
}

export function renderText(res: ServerResponse, message: CapturedMessage): void {
  send(res, 200, 'text/plain; charset=utf-8', message.parsed.text ?? message.htmlText(), { 'Content-Security-Policy': "sandbox; default-src 'none'" });
}
