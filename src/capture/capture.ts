/**
 * Capture: a handler that keeps every message it is given, for test suites (`capture.inbox`)
 * and for the dev mail catcher (`tsmtpd -c Capture --http ...`). Built on the public handler
 * API only: the body arrives through handleDATAStream, so the fault rules can cut it mid-way.
 */
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AuthData, AuthResult, Authenticator } from '../auth.js';
import type { SimpleParserOptions } from 'mailparser';
import { UsageError, type Handler, type SMTPServer } from '../handler.js';
import { DEFAULT_PARSER_OPTIONS, loadParser } from '../handlers/message.js';
import { Reply } from '../replies.js';
import type { Envelope, MailOptions, RcptOptions, Session } from '../session.js';
import { Faults, type FaultStage } from './faults.js';
import { Inbox } from './inbox.js';
import { tagsFromHeader } from './mailpit-json.js';
import { CapturedMessage, tlsSummary, type CapturedSession } from './message.js';
import { MessageStore, type StoreLimits } from './store.js';
import { MaildirPersistence } from './maildir-store.js';

export interface CaptureOptions extends StoreLimits {
  /** Keep the mail in this Maildir too (made if missing); init() loads what is there. */
  maildir?: string;
  /** Passed to mailparser: DEFAULT_PARSER_OPTIONS, then these. */
  parserOptions?: SimpleParserOptions;
}

/** The AUTH login of a session, when the authenticator kept it (the default keeps the login name). */
function authUser(session: Session): string | null {
  if (!session.authenticated) return null;
  const data = session.authData;
  if (typeof data === 'string') return data;
  if (typeof data === 'object' && data !== null && typeof (data as { login?: unknown }).login === 'string') {
    return (data as { login: string }).login;
  }
  return null;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Any login, any password: the development default (Mailpit's --smtp-auth-accept-any). */
export const acceptAnyAuthenticator: Authenticator = (_server, _session, _envelope, _mechanism, data) => ({ success: true, authData: data.login });

/** The reply a dropped connection's hook settles with, should the engine still be listening. */
const DROPPED = '421 4.4.2 Connection dropped (fault rule)';


export class Capture implements Handler {
  readonly store: MessageStore;
  /** Every captured message; `inbox.isolate()` and `inbox.forRecipient()` give narrower views. */
  readonly inbox: Inbox;
  readonly parserOptions: SimpleParserOptions;
  /** SMTP messages accepted and refused since start (Mailpit's RuntimeStats). */
  readonly stats = { accepted: 0, acceptedBytes: 0, rejected: 0 };
  /** Fault rules and Mailpit's chaos triggers, applied at MAIL, RCPT, DATA and (through authenticator()) AUTH. */
  readonly faults = new Faults();
  /** The Maildir behind the store, when there is one. */
  readonly persistence: MaildirPersistence | null;
  private ready: Promise<void> | null = null;

  constructor(options: CaptureOptions = {}) {
    this.store = new MessageStore(options);
    this.inbox = new Inbox(this.store);
    this.parserOptions = { ...DEFAULT_PARSER_OPTIONS, ...options.parserOptions };
    this.persistence = options.maildir === undefined ? null : new MaildirPersistence(options.maildir);
    this.persistence?.attach(this.store);
  }

  /** `-c Capture [MAILDIR]`: in memory, or kept in (and reloaded from) a Maildir. */
  static fromCli(...args: string[]): Capture {
    if (args.length > 1) throw new UsageError('Capture takes at most one argument, a Maildir directory');
    return new Capture(args.length === 1 ? { maildir: args[0]! } : {});
  }

  /**
   * With a Maildir: makes it if missing and loads the messages in it (the index is rebuilt from
   * the files), then prunes to the limits. The first message calls it too; call it yourself to
   * see the stored mail at once, or to fail early on a bad directory.
   */
  init(): Promise<void> {
    this.ready ??= (async () => {
      if (this.persistence === null) return;
      await this.persistence.init();
      const parse = await loadParser();
      for (const m of await this.persistence.load((raw) => parse(raw, this.parserOptions))) {
        m.tags = tagsFromHeader(m);
        this.store.add(m);
      }
    })().catch((error: unknown) => {
      this.ready = null;
      throw error;
    });
    return this.ready;
  }

  /** A fault's reply, or null to go on (after its delay, if it is one). A drop cuts the connection. */
  private async fault(server: SMTPServer, stage: FaultStage, addresses: readonly string[], stream?: Readable): Promise<string | null> {
    const action = this.faults.check(stage, addresses);
    if (action === null) return null;
    if ('delay' in action) {
      await sleep(action.delay);
      return null;
    }
    if ('reply' in action) {
      this.stats.rejected++;
      return action.reply;
    }
    // Mid-DATA: let the first bytes of the body arrive, then cut.
    if (stream !== undefined) await new Promise<void>((resolve) => stream.once('data', () => resolve()).once('end', resolve).once('error', () => resolve()));
    server.destroy();
    return DROPPED;
  }

  async handleMAIL(server: SMTPServer, _session: Session, _envelope: Envelope, address: string, _options: MailOptions): Promise<string> {
    return (await this.fault(server, 'MAIL', [address])) ?? Reply.MAIL_OK;
  }

  async handleRCPT(server: SMTPServer, _session: Session, _envelope: Envelope, address: string, _options: RcptOptions): Promise<string> {
    return (await this.fault(server, 'RCPT', [address])) ?? Reply.RCPT_OK;
  }

  /**
   * An authenticator with the AUTH fault rules and chaos in front of `inner` (default: accept
   * any credentials). Pass it as the server's `authenticator` option.
   */
  authenticator(inner: Authenticator = acceptAnyAuthenticator): Authenticator {
    return async (server, session, envelope, mechanism, data: AuthData): Promise<AuthResult | boolean> => {
      const reply = await this.fault(server, 'AUTH', [data.login]);
      if (reply !== null) return { success: false, message: reply };
      return inner(server, session, envelope, mechanism, data);
    };
  }

  async handleDATAStream(server: SMTPServer, session: Session, envelope: Envelope, stream: Readable): Promise<string | string[]> {
    const refused = await this.fault(server, 'DATA', envelope.rcptTos, stream);
    if (refused !== null) return server.lmtp ? envelope.rcptTos.map(() => refused) : refused;
    const raw = await readAll(stream);
    const message = await this.capture(raw, {
      mailFrom: envelope.mailFrom ?? '',
      rcptTos: [...envelope.rcptTos],
      mailOptions: { ...envelope.mailOptions },
      rcptOptions: envelope.rcptOptions.map((o) => ({ ...o })),
    }, {
      peer: { ...session.peer },
      heloName: session.hostName,
      tls: tlsSummary(session.tls),
      authUser: authUser(session),
      lmtp: server.lmtp,
    });
    const reply = message === null ? '250 2.0.0 Ok: discarded (its isolated inbox is closed)' : `250 2.0.0 Ok: queued as ${message.id}`;
    return server.lmtp ? envelope.rcptTos.map(() => reply) : reply;
  }

  /**
   * Parses and stores a message as if it had arrived over SMTP (the HTTP API's send uses it).
   * Returns null for mail addressed only to closed isolated inboxes, which is not kept.
   */
  async capture(raw: Buffer, envelope: CapturedMessage['envelope'], session: CapturedSession): Promise<CapturedMessage | null> {
    if (this.store.isOrphan(envelope.rcptTos)) return null;
    await this.init();
    const parse = await loadParser();
    const parsed = await parse(raw, this.parserOptions);
    const message = new CapturedMessage({ envelope, session, raw, parsed });
    message.tags = tagsFromHeader(message);
    await this.persistence?.write(message); // on disk before the 250
    this.stats.accepted++;
    this.stats.acceptedBytes += raw.length;
    this.store.add(message);
    return message;
  }
}
