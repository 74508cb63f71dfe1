/**
 * The capture's HTTP side: Mailpit's API v1, the rendered views, the web UI and the WebSocket
 * event feed (/api/events), on node:http. Loopback by default; optional HTTP basic auth.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { VERSION } from '../version.js';
import { dispatch, type ApiOptions } from './api.js';
import type { Capture } from './capture.js';
import { HttpError, requestURL, sendError } from './http-util.js';
import { summary } from './mailpit-json.js';
import type { RelayOptions } from './relay.js';
import type { StoreEvent } from './store.js';
import { WebSocketHub } from './websocket.js';

export interface CaptureHttpOptions {
  /** Default '127.0.0.1'. */
  host?: string;
  /** Default 8026; 0 picks a free port. */
  port?: number;
  /** Checks HTTP basic credentials; without it, no authentication is asked. */
  authenticate?: (user: string, password: string) => boolean | Promise<boolean>;
  /** Where POST /api/v1/message/ID/release sends mail; without it release is refused. */
  relay?: RelayOptions;
  /** The instance's label in the web UI. */
  label?: string;
  /** Largest request body (POST /api/v1/send), bytes. Default 32 MiB. */
  maxBody?: number;
  /** Shown as Database by /api/v1/info. */
  database?: string;
}

/** Mailpit sends mailbox stats at most 4 times a second. */
const STATS_DELAY_MS = 250;

function parseBasic(header: string | undefined): { user: string; password: string } | null {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
  if (m === null) return null;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 ? null : { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

export class CaptureHttpServer {
  readonly capture: Capture;
  private readonly server: Server;
  private readonly hub = new WebSocketHub();
  private readonly options: CaptureHttpOptions;
  private readonly api: ApiOptions;
  private readonly startedAt = Date.now();
  private unsubscribe: (() => void) | null = null;
  private statsTimer: NodeJS.Timeout | null = null;

  constructor(capture: Capture, options: CaptureHttpOptions = {}) {
    this.capture = capture;
    this.options = options;
    this.api = { relay: options.relay ?? null, label: options.label ?? '', maxBody: options.maxBody ?? 32 * 1024 * 1024, database: options.database ?? '' };
    this.server = createServer((req, res) => void this.onRequest(req, res));
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex) => void this.onUpgrade(req, socket));
    this.server.on('clientError', (_error, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"Error":"bad request"}');
    });
  }

  get port(): number {
    return (this.server.address() as AddressInfo | null)?.port ?? 0;
  }
  get host(): string {
    return this.options.host ?? '127.0.0.1';
  }
  /** http://host:port, for printing and for clients. */
  get url(): string {
    const h = this.host.includes(':') ? `[${this.host}]` : this.host;
    return `http://${h}:${this.port}`;
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port ?? 8026, this.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.unsubscribe = this.capture.store.on((event) => this.onStoreEvent(event));
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.statsTimer !== null) clearTimeout(this.statsTimer);
    this.hub.closeAll();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** Mailpit's event feed: {Type, Data} per change, and throttled mailbox stats. */
  private onStoreEvent(event: StoreEvent): void {
    if (this.hub.size === 0) return;
    const emit = (Type: string, Data: unknown) => this.hub.broadcast(JSON.stringify({ Type, Data }));
    if (event.type === 'new') emit('new', summary(event.message));
    else if (event.type === 'delete') for (const ID of event.ids) emit('delete', { ID });
    else if (event.type === 'update') emit('update', { ID: event.message.id, Read: event.message.read, Tags: event.message.tags });
    else emit('truncate', null);
    this.statsTimer ??= setTimeout(() => {
      this.statsTimer = null;
      const all = this.capture.store.all();
      emit('stats', { Total: all.length, Unread: all.filter((m) => !m.read).length, Version: VERSION });
    }, STATS_DELAY_MS);
  }

  /** The HTTP user, null when no authentication is set up, undefined when refused. */
  private async user(req: IncomingMessage): Promise<string | null | undefined> {
    if (this.options.authenticate === undefined) return null;
    const credentials = parseBasic(req.headers.authorization);
    if (credentials === null) return undefined;
    try {
      return (await this.options.authenticate(credentials.user, credentials.password)) ? credentials.user : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * A page elsewhere may make the browser send requests here (WebSockets and simple POSTs skip
   * CORS): a request whose Origin is another site is refused, and so is one whose Host is a
   * name that is not ours (DNS rebinding).
   */
  private crossSite(req: IncomingMessage): boolean {
    const host = req.headers.host ?? '';
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== 'null') {
      let originHost: string;
      try {
        originHost = new URL(origin).host;
      } catch {
        return true;
      }
      if (originHost !== host) return true;
    } else if (origin === 'null' && req.method !== 'GET' && req.method !== 'HEAD') return true;
    const name = host.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
    return !(name === 'localhost' || name === this.host || /^127\.\d+\.\d+\.\d+$/.test(name) || name === '::1' || this.host === '0.0.0.0' || this.host === '::');
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      if (this.crossSite(req)) throw new HttpError(403, 'cross-site request refused (Origin or Host is not this server)');
      const user = await this.user(req);
      if (user === undefined) {
        res.setHeader('WWW-Authenticate', 'Basic realm="tsmtpd", charset="UTF-8"');
        throw new HttpError(401, 'authentication required');
      }
      const url = requestURL(req.url);
      await dispatch({ capture: this.capture, options: this.api, req, res, url, user, startedAt: this.startedAt });
    } catch (error) {
      if (error instanceof HttpError) sendError(res, error.status, error.message);
      else sendError(res, 500, `internal error: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  private async onUpgrade(req: IncomingMessage, socket: Duplex): Promise<void> {
    socket.on('error', () => socket.destroy());
    const path = requestURL(req.url).pathname;
    if (path !== '/api/events') {
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"Error":"no WebSocket here: use /api/events"}');
      return;
    }
    if (this.crossSite(req)) {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"Error":"cross-site WebSocket refused"}');
      return;
    }
    if ((await this.user(req)) === undefined) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="tsmtpd"\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"Error":"authentication required"}');
      return;
    }
    this.hub.accept(req, socket);
  }
}
