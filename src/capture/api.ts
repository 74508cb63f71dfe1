/**
 * Mailpit's REST API v1 over a Capture (its swagger.json, read for the shapes; behaviour
 * checked against its Go handlers where the spec is silent). Where we differ on purpose:
 * errors are JSON `{"Error": ...}` with a fitting status (Mailpit answers text, mostly 400);
 * parts are served under a sandboxing CSP, and inline only for raster images.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { VERSION } from '../version.js';
import type { Capture } from './capture.js';
import { ComposeError, composeMessage } from './compose.js';
import { HttpError, intParam, isRecord, readJSON, send, sendJSON, sendOK, stringList } from './http-util.js';
import { headers, message, partId, summary } from './mailpit-json.js';
import type { CapturedMessage } from './message.js';
import { relayMessage, type RelayOptions } from './relay.js';
import { compileSearch } from './search.js';
import { checkRule, FaultSyntaxError, ruleToJSON } from './faults.js';
import { APP_CSS, APP_JS, INDEX_HTML, UI_POLICY } from './ui-assets.js';
import { cleanTag, tagList } from './tags.js';
import { renderHTML, renderText } from './view.js';

export interface ApiOptions {
  /** Where release sends messages; null: release is off (400). */
  relay: RelayOptions | null;
  /** Shown by /api/v1/webui. */
  label: string;
  /** The largest request body accepted (send with attachments), bytes. */
  maxBody: number;
  /** Where the store lives on disk, for /api/v1/info ('' in memory). */
  database: string;
}

export interface RequestContext {
  capture: Capture;
  options: ApiOptions;
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  params: string[];
  /** The HTTP user (basic auth), or null. */
  user: string | null;
  startedAt: number;
}

type RouteHandler = (ctx: RequestContext) => void | Promise<void>;

const UNAVAILABLE: RouteHandler = (ctx) => {
  throw new HttpError(501, `${ctx.url.pathname.split('/').pop()} is not available in tsmtpd: it needs the internet or rule sets (SpamAssassin, caniemail, image processing) that a local capture server does not ship`);
};

/** A message by ID; `latest` is the newest, or with `?query=` the newest that matches (as Mailpit's LatestID). */
function lookup(ctx: RequestContext, id = ctx.params[0]!): CapturedMessage {
  if (id !== 'latest') {
    const m = ctx.capture.store.get(id);
    if (m === undefined) throw new HttpError(404, `message not found: ${id}`);
    return m;
  }
  const query = ctx.url.searchParams.get('query')?.trim() ?? '';
  const m = query === '' ? ctx.capture.store.latest() : ctx.capture.store.all().findLast(compileSearch(query, ctx.url.searchParams.get('tz') ?? ''));
  if (m === undefined) throw new HttpError(404, query === '' ? 'no messages' : `no message matches: ${query}`);
  return m;
}

function allTags(capture: Capture): string[] {
  return tagList(capture.store.all().flatMap((m) => m.tags)).sort((a, b) => a.localeCompare(b));
}

/** Newest first, as Mailpit lists. */
function page(ctx: RequestContext, matching: readonly CapturedMessage[]): void {
  const start = intParam(ctx.url, 'start', 0);
  const limit = intParam(ctx.url, 'limit', 50);
  const all = ctx.capture.store.all();
  const newestFirst = [...matching].reverse();
  sendJSON(ctx.res, {
    total: all.length,
    unread: all.filter((m) => !m.read).length,
    count: Math.min(limit, Math.max(0, newestFirst.length - start)),
    messages_count: matching.length,
    messages_unread: matching.filter((m) => !m.read).length,
    start,
    tags: allTags(ctx.capture),
    messages: newestFirst.slice(start, start + limit).map(summary),
  });
}

function searchResults(ctx: RequestContext): CapturedMessage[] {
  const query = ctx.url.searchParams.get('query');
  if (query === null || query.trim() === '') throw new HttpError(400, 'query is required');
  const test = compileSearch(query, ctx.url.searchParams.get('tz') ?? '');
  return ctx.capture.store.all().filter(test);
}

function setRead(ctx: RequestContext, messages: Iterable<CapturedMessage>, read: boolean): void {
  for (const m of messages) {
    if (m.read === read) continue;
    m.read = read;
    ctx.capture.store.updated(m);
  }
}

async function body(ctx: RequestContext): Promise<Record<string, unknown>> {
  const value = await readJSON(ctx.req, ctx.options.maxBody);
  if (!isRecord(value)) throw new HttpError(400, 'the request body must be a JSON object');
  return value;
}

/** Raster images display inline; anything else (HTML, SVG, scripts) downloads. */
const INLINE_SAFE = /^image\/(png|jpe?g|gif|webp|bmp|x-icon|avif)$/i;
const SANDBOX_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'";

const routes: Array<[string, RegExp, RouteHandler]> = [
  ['GET', /^\/api\/v1\/messages$/, (ctx) => page(ctx, ctx.capture.store.all())],
  [
    'PUT',
    /^\/api\/v1\/messages$/,
    async (ctx) => {
      const b = await body(ctx);
      const ids = stringList(b, 'IDs');
      const search = typeof b['Search'] === 'string' ? b['Search'] : '';
      if (ids.length > 0 && search !== '') throw new HttpError(400, 'You may specify either IDs or a search query, not both');
      const read = b['Read'] === true;
      const store = ctx.capture.store;
      // An ID that is gone is skipped, as Mailpit's UPDATE ... WHERE ID IN (...) skips it.
      const byId = () => ids.flatMap((id) => store.get(id) ?? []);
      const targets = search !== '' ? store.all().filter(compileSearch(search, ctx.url.searchParams.get('tz') ?? '')) : ids.length === 0 ? store.all() : byId();
      setRead(ctx, targets, read);
      sendOK(ctx.res);
    },
  ],
  [
    'DELETE',
    /^\/api\/v1\/messages$/,
    async (ctx) => {
      const ids = stringList(await body(ctx), 'IDs');
      if (ids.length === 0) ctx.capture.store.clear();
      else ctx.capture.store.remove(ids);
      sendOK(ctx.res);
    },
  ],
  ['GET', /^\/api\/v1\/search$/, (ctx) => page(ctx, searchResults(ctx))],
  [
    'DELETE',
    /^\/api\/v1\/search$/,
    (ctx) => {
      ctx.capture.store.remove(searchResults(ctx).map((m) => m.id));
      sendOK(ctx.res);
    },
  ],
  [
    'GET',
    /^\/api\/v1\/message\/([^/]+)$/,
    (ctx) => {
      const m = lookup(ctx);
      setRead(ctx, [m], true); // Mailpit marks a message read when it is fetched
      sendJSON(ctx.res, message(m));
    },
  ],
  ['GET', /^\/api\/v1\/message\/([^/]+)\/headers$/, (ctx) => sendJSON(ctx.res, headers(lookup(ctx)))],
  [
    'GET',
    /^\/api\/v1\/message\/([^/]+)\/raw$/,
    (ctx) => {
      const m = lookup(ctx);
      const download: Record<string, string> = ctx.url.searchParams.get('dl') === '1' ? { 'Content-Disposition': `attachment; filename="${m.id}.eml"` } : {};
      send(ctx.res, 200, 'text/plain; charset=utf-8', m.raw, { 'Content-Security-Policy': SANDBOX_CSP, ...download });
    },
  ],
  [
    'GET',
    /^\/api\/v1\/message\/([^/]+)\/part\/([^/]+)$/,
    (ctx) => {
      const m = lookup(ctx);
      const wanted = ctx.params[1]!;
      const index = m.parsed.attachments.findIndex((a, i) => partId(a, i) === wanted);
      const a = m.parsed.attachments[index];
      if (a === undefined) throw new HttpError(404, `part not found: ${wanted}`);
      const name = encodeURIComponent(a.filename ?? `part-${wanted}`);
      const disposition = INLINE_SAFE.test(a.contentType) ? 'inline' : 'attachment';
      send(ctx.res, 200, a.contentType, a.content, {
        'Content-Disposition': `${disposition}; filename="${name}"; filename*=UTF-8''${name}`,
        'Content-Security-Policy': SANDBOX_CSP,
      });
    },
  ],
  ['GET', /^\/api\/v1\/message\/([^/]+)\/part\/([^/]+)\/thumb$/, UNAVAILABLE],
  ['GET', /^\/api\/v1\/message\/([^/]+)\/(html-check|link-check|sa-check)$/, UNAVAILABLE],
  [
    'POST',
    /^\/api\/v1\/message\/([^/]+)\/release$/,
    async (ctx) => {
      const m = lookup(ctx);
      const to = stringList(await body(ctx), 'To');
      if (ctx.options.relay === null) throw new HttpError(400, 'release is off: start tsmtpd with --relay HOST:PORT');
      if (to.length === 0) throw new HttpError(400, 'No valid addresses found');
      await relayMessage(ctx.options.relay, m, to);
      sendOK(ctx.res);
    },
  ],
  [
    'POST',
    /^\/api\/v1\/send$/,
    async (ctx) => {
      let composed;
      try {
        composed = composeMessage(await body(ctx));
      } catch (error) {
        if (error instanceof ComposeError) throw new HttpError(400, error.message);
        throw error;
      }
      const peer = ctx.req.socket;
      const m = await ctx.capture.capture(
        composed.raw,
        { mailFrom: composed.mailFrom, rcptTos: composed.rcptTos, mailOptions: {}, rcptOptions: composed.rcptTos.map(() => ({})) },
        {
          peer: { address: peer.remoteAddress ?? '', port: peer.remotePort ?? 0, family: peer.remoteFamily === 'IPv6' ? 'IPv6' : 'IPv4' },
          heloName: null,
          tls: null,
          authUser: ctx.user,
          lmtp: false,
        },
      );
      if (m === null) throw new HttpError(400, 'every recipient belongs to a closed isolated inbox');
      if (composed.tags.length > 0) {
        m.tags = tagList([...m.tags, ...composed.tags]);
        ctx.capture.store.updated(m);
      }
      sendJSON(ctx.res, { ID: m.id });
    },
  ],
  ['GET', /^\/api\/v1\/chaos$/, (ctx) => sendJSON(ctx.res, ctx.capture.faults.chaos)],
  [
    'PUT',
    /^\/api\/v1\/chaos$/,
    async (ctx) => {
      const triggers = await body(ctx);
      sendJSON(ctx.res, faultInput(() => ctx.capture.faults.setChaos(triggers)));
    },
  ],
  ['GET', /^\/api\/v1\/faults$/, (ctx) => sendJSON(ctx.res, ctx.capture.faults.rules.map(ruleToJSON))],
  [
    'PUT',
    /^\/api\/v1\/faults$/,
    async (ctx) => {
      const rules = await readJSON(ctx.req, ctx.options.maxBody);
      if (!Array.isArray(rules)) throw new HttpError(400, 'the body must be an array of fault rules');
      faultInput(() => ctx.capture.faults.set(rules.map(checkRule)));
      sendJSON(ctx.res, ctx.capture.faults.rules.map(ruleToJSON));
    },
  ],
  [
    'DELETE',
    /^\/api\/v1\/faults$/,
    (ctx) => {
      ctx.capture.faults.clear();
      sendOK(ctx.res);
    },
  ],
  ['GET', /^\/api\/v1\/tags$/, (ctx) => sendJSON(ctx.res, allTags(ctx.capture))],
  [
    'PUT',
    /^\/api\/v1\/tags$/,
    async (ctx) => {
      const b = await body(ctx);
      const tags = tagList(stringList(b, 'Tags'));
      for (const m of stringList(b, 'IDs').map((id) => lookup(ctx, id))) {
        m.tags = tags;
        ctx.capture.store.updated(m);
      }
      sendOK(ctx.res);
    },
  ],
  [
    'PUT',
    /^\/api\/v1\/tags\/([^/]+)$/,
    async (ctx) => {
      const b = await body(ctx);
      const name = typeof b['Name'] === 'string' ? cleanTag(b['Name']) : '';
      if (name === '') throw new HttpError(400, 'Name is required: a tag of a-z A-Z 0-9 - _ . @ and spaces');
      retag(ctx, ctx.params[0]!, name);
      sendOK(ctx.res);
    },
  ],
  [
    'DELETE',
    /^\/api\/v1\/tags\/([^/]+)$/,
    (ctx) => {
      retag(ctx, ctx.params[0]!, null);
      sendOK(ctx.res);
    },
  ],
  [
    'GET',
    /^\/api\/v1\/info$/,
    (ctx) => {
      const all = ctx.capture.store.all();
      const tags: Record<string, number> = {};
      for (const m of all) for (const t of m.tags) tags[t] = (tags[t] ?? 0) + 1;
      sendJSON(ctx.res, {
        Version: VERSION,
        LatestVersion: '',
        Database: ctx.options.database,
        DatabaseSize: ctx.capture.store.bytes,
        Messages: all.length,
        Unread: all.filter((m) => !m.read).length,
        Tags: tags,
        RuntimeStats: {
          Uptime: Math.floor((Date.now() - ctx.startedAt) / 1000),
          Memory: process.memoryUsage().rss,
          MessagesDeleted: ctx.capture.store.deletedCount,
          SMTPAccepted: ctx.capture.stats.accepted,
          SMTPAcceptedSize: ctx.capture.stats.acceptedBytes,
          SMTPRejected: ctx.capture.stats.rejected,
          SMTPIgnored: 0,
        },
      });
    },
  ],
  [
    'GET',
    /^\/api\/v1\/webui$/,
    (ctx) => {
      const relay = ctx.options.relay;
      sendJSON(ctx.res, {
        Label: ctx.options.label,
        MessageRelay: {
          Enabled: relay !== null,
          SMTPServer: relay === null ? '' : `${relay.host}:${relay.port}`,
          ReturnPath: '',
          AllowedRecipients: '',
          BlockedRecipients: '',
          OverrideFrom: '',
          PreserveMessageIDs: false,
          RecipientAllowlist: '',
        },
        SpamAssassin: false,
        ChaosEnabled: true,
        DuplicatesIgnored: false,
        HideDeleteAllButton: false,
      });
    },
  ],
  [
    'GET',
    /^\/view\/([^/]+)\.html$/,
    (ctx) => renderHTML(ctx.res, lookup(ctx), { remote: ctx.url.searchParams.get('remote') === '1', embed: ctx.url.searchParams.get('embed') === '1' }),
  ],
  ['GET', /^\/view\/([^/]+)\.txt$/, (ctx) => renderText(ctx.res, lookup(ctx))],
  ['GET', /^\/(livez|readyz)$/, (ctx) => sendOK(ctx.res)],
  ['GET', /^\/$/, (ctx) => send(ctx.res, 200, 'text/html; charset=utf-8', INDEX_HTML, { 'Content-Security-Policy': UI_POLICY })],
  ['GET', /^\/ui\/app\.js$/, (ctx) => send(ctx.res, 200, 'text/javascript; charset=utf-8', APP_JS)],
  ['GET', /^\/ui\/app\.css$/, (ctx) => send(ctx.res, 200, 'text/css; charset=utf-8', APP_CSS)],
];

/** Runs a change to the fault rules; a rule that does not check out is the client's 400. */
function faultInput<T>(change: () => T): T {
  try {
    return change();
  } catch (error) {
    if (error instanceof FaultSyntaxError) throw new HttpError(400, error.message);
    throw error;
  }
}

/** Renames (or with null deletes) a tag on every message; as in Mailpit, names match ignoring case. */
function retag(ctx: RequestContext, from: string, to: string | null): void {
  const old = from.toLowerCase();
  const existing = allTags(ctx.capture).map((t) => t.toLowerCase());
  if (!existing.includes(old)) throw new HttpError(404, `tag not found: ${from}`);
  if (to !== null && to.toLowerCase() !== old && existing.includes(to.toLowerCase())) throw new HttpError(409, `tag already exists: ${to}`);
  for (const m of ctx.capture.store.all()) {
    if (!m.tags.some((t) => t.toLowerCase() === old)) continue;
    const kept = m.tags.filter((t) => t.toLowerCase() !== old);
    m.tags = to === null ? kept : tagList([...kept, to]);
    ctx.capture.store.updated(m);
  }
}

/** Runs the matching route; 404 or 405 (with Allow) when none. */
export async function dispatch(ctx: Omit<RequestContext, 'params'>): Promise<void> {
  const path = ctx.url.pathname;
  const allowed: string[] = [];
  const method = ctx.req.method === 'HEAD' ? 'GET' : (ctx.req.method ?? 'GET');
  for (const [m, pattern, run] of routes) {
    const match = pattern.exec(path);
    if (match === null) continue;
    if (m !== method) {
      allowed.push(m);
      continue;
    }
    let params: string[];
    try {
      params = match.slice(1).map((p) => decodeURIComponent(p));
    } catch {
      throw new HttpError(400, 'bad percent-encoding in the path');
    }
    await run({ ...ctx, params });
    return;
  }
  if (allowed.length > 0) {
    ctx.res.setHeader('Allow', [...new Set(allowed)].join(', '));
    throw new HttpError(405, `${ctx.req.method} not allowed on ${path}`);
  }
  throw new HttpError(404, `no such endpoint: ${path}`);
}
