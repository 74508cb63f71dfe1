/** Small HTTP pieces for the capture server: JSON replies, JSON errors, bounded request bodies. */
import type { IncomingMessage, ServerResponse } from 'node:http';

/** A request the API refuses: the status and the text of the JSON error. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Headers every response carries: no sniffing, no framing by other origins. */
export const BASE_HEADERS = {
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'SAMEORIGIN',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-store',
} as const;

export function send(res: ServerResponse, status: number, type: string, body: string | Buffer, headers: Record<string, string> = {}): void {
  const data = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  res.writeHead(status, { ...BASE_HEADERS, 'Content-Type': type, 'Content-Length': String(data.length), ...headers });
  res.end(res.req.method === 'HEAD' ? undefined : data);
}

export function sendJSON(res: ServerResponse, value: unknown, status = 200): void {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value));
}

/** Mailpit answers "ok" as text/plain for actions that return nothing. */
export function sendOK(res: ServerResponse): void {
  send(res, 200, 'text/plain; charset=utf-8', 'ok');
}

/** `{"Error": "..."}`, the shape of Mailpit's JSONErrorResponse. */
export function sendError(res: ServerResponse, status: number, message: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJSON(res, { Error: message }, status);
}

/** The request body, refused with 413 past `limit` bytes (read no further). */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > limit) return reject(new HttpError(413, `request body over ${limit} bytes`));
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reject(new HttpError(413, `request body over ${limit} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** A JSON body: `{}` when empty (Mailpit treats a missing body as no options), 400 when not JSON. */
export async function readJSON(req: IncomingMessage, limit: number): Promise<unknown> {
  const body = await readBody(req, limit);
  if (body.length === 0 || body.toString('utf8').trim() === '') return {};
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch (error) {
    throw new HttpError(400, `the request body is not JSON: ${(error as Error).message}`);
  }
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A field that must be an array of strings when present. */
export function stringList(body: Record<string, unknown>, key: string): string[] {
  const value = body[key];
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw new HttpError(400, `${key} must be an array of strings`);
  return value as string[];
}

/** A non-negative integer query parameter, or the default. */
export function intParam(url: URL, name: string, fallback: number): number {
  const raw = url.searchParams.get(name);
  if (raw === null || raw === '') return fallback;
  if (!/^[0-9]{1,9}$/.test(raw)) throw new HttpError(400, `${name} must be a non-negative integer`);
  return Number(raw);
}

/**
 * The request's URL. Repeated slashes in the path collapse, as Go's ServeMux (Mailpit's router)
 * cleans them: cypress-mailpit asks for `//view/ID.html`, and a bare `//x` would otherwise be
 * read as a host name.
 */
export function requestURL(raw: string | undefined): URL {
  const target = raw ?? '/';
  if (!target.startsWith('/')) return new URL(target, 'http://capture.invalid');
  const q = target.search(/[?#]/);
  const path = (q < 0 ? target : target.slice(0, q)).replace(/\/{2,}/g, '/');
  return new URL(`http://capture.invalid${path}${q < 0 ? '' : target.slice(q)}`);
}
