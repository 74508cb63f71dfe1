/**
 * cypress-mailpit 2.0.0 (Cypress commands for Mailpit) against tsmtpd's capture server. The
 * package cannot be a devDependency: npm installs its peer dependency cypress, which downloads
 * a browser binary (and this registry has no matching cypress, so `npm install` fails). So this
 * replays exactly the requests its commands make (dist/src/MailpitCommands.js: the same URLs,
 * built the same way, the same bodies, `qs` and the fields it reads), through a stand-in for
 * cy.request with its defaults: JSON bodies, JSON responses parsed, redirects followed, and a
 * failure on a status outside 2xx/3xx (failOnStatusCode).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { captureRig } from './capture-util.js';

interface CyRequest {
  method: string;
  url: string;
  qs?: Record<string, string | number>;
  body?: unknown;
  auth?: { user: string; pass: string };
}
interface CyResponse {
  status: number;
  body: unknown;
}

async function cyRequest(options: CyRequest): Promise<CyResponse> {
  const url = new URL(options.url);
  for (const [k, v] of Object.entries(options.qs ?? {})) url.searchParams.set(k, String(v));
  const headers: Record<string, string> = {};
  if (options.body !== undefined) headers['Content-Type'] = 'application/json';
  if (options.auth !== undefined) headers['Authorization'] = `Basic ${Buffer.from(`${options.auth.user}:${options.auth.pass}`).toString('base64')}`;
  const res = await fetch(url, {
    method: options.method,
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    redirect: 'follow',
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  if (res.status >= 400) throw new Error(`cy.request() failed on ${options.method} ${url}: ${res.status} ${text}`);
  const isJSON = /json/i.test(res.headers.get('content-type') ?? '');
  return { status: res.status, body: isJSON ? (JSON.parse(text) as unknown) : text };
}

interface Address {
  Address: string;
  Name: string;
}
interface ListResult {
  messages_count: number;
  messages: Array<{ ID: string; Subject: string }>;
}
interface Message {
  ID: string;
  Subject: string;
  From: Address;
  To: Address[];
  Attachments: Array<{ FileName: string }>;
}

/** MailpitCommands, request for request (`mailpitUrl(path, isApi)` included, double slash and all). */
class Commands {
  constructor(
    readonly baseUrl: string,
    readonly auth?: { user: string; pass: string },
  ) {}
  mailpitUrl(path: string, isApi = true): string {
    return `${this.baseUrl}/${isApi ? 'api' : ''}${path}`;
  }
  request(options: CyRequest): Promise<CyResponse> {
    return cyRequest({ ...options, auth: this.auth });
  }
  async mailpitGetAllMails(start = 0, limit = 50): Promise<ListResult> {
    return (await this.request({ method: 'GET', url: this.mailpitUrl(`/v1/messages?start=${start}&limit=${limit}`) })).body as ListResult;
  }
  async mailpitGetMail(id = 'latest'): Promise<Message> {
    return (await this.request({ method: 'GET', url: this.mailpitUrl(`/v1/message/${id}`) })).body as Message;
  }
  async mailpitSendMail(options: { subject?: string; to?: Array<{ Email: string; Name: string }>; attachments?: unknown[] } = {}): Promise<{ ID: string }> {
    const body = {
      Attachments: options.attachments ?? [],
      Bcc: ['bcc@example.com'],
      Cc: [{ Email: 'cc@example.com', Name: 'CC' }],
      From: { Email: 'from@example.com', Name: 'From' },
      HTML: '<p>hello from mailpit</p>',
      Headers: {},
      ReplyTo: [{ Email: 'replyto@example.com', Name: 'ReplyTo' }],
      Subject: options.subject ?? 'Hello Mailpit',
      Tags: [],
      Text: 'hello from mailpit',
      To: options.to ?? [{ Email: 'jane@example.com', Name: 'Jane' }],
    };
    return (await this.request({ method: 'POST', url: this.mailpitUrl('/v1/send'), body })).body as { ID: string };
  }
  async mailpitSearchEmails(query: string, start = 0, limit = 50): Promise<ListResult> {
    return (await this.request({ method: 'GET', url: this.mailpitUrl('/v1/search'), qs: { query, start, limit } })).body as ListResult;
  }
  mailpitGetEmailsBySubject(subject: string): Promise<ListResult> {
    return this.mailpitSearchEmails(`subject:${subject}`);
  }
  mailpitGetEmailsByTo(email: string): Promise<ListResult> {
    return this.mailpitSearchEmails(`to:${email}`);
  }
  // mailpitHas*/NotHas*: poll the search above until messages_count > 0 (=== 0).
  async mailpitHasEmailsBySearch(query: string, want: (n: number) => boolean): Promise<ListResult> {
    for (let i = 0; i < 50; i++) {
      const result = await this.mailpitSearchEmails(query);
      if (want(result.messages_count)) return result;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error('Timed out waiting for condition');
  }
  mailpitDeleteAllEmails(): Promise<CyResponse> {
    return this.request({ method: 'DELETE', url: this.mailpitUrl('/v1/messages') });
  }
  mailpitDeleteEmailsBySearch(query: string): Promise<CyResponse> {
    return this.request({ method: 'DELETE', url: this.mailpitUrl('/v1/search'), qs: { query } });
  }
  // Child commands: what they read from a message.
  mailpitGetSubject = (m: Message) => m.Subject;
  mailpitGetRecipientAddress = (m: Message) => m.To.map((r) => r.Address);
  mailpitGetFromAddress = (m: Message) => m.From.Address;
  mailpitGetAttachments = (m: Message) => m.Attachments.map((a) => a.FileName);
  async mailpitGetMailSpamAssassinSummary(m: Message): Promise<unknown> {
    return (await this.request({ method: 'GET', url: this.mailpitUrl(`/v1/message/${m.ID}/sa-check`) })).body;
  }
  async mailpitGetMailHTMlBody(m: Message): Promise<unknown> {
    return (await this.request({ method: 'GET', url: this.mailpitUrl(`/view/${m.ID}.html`, false) })).body;
  }
  async mailpitGetMailTextBody(m: Message): Promise<unknown> {
    return (await this.request({ method: 'GET', url: this.mailpitUrl(`/view/${m.ID}.txt`, false) })).body;
  }
  async setReadStatus(messages: Message | Message[] | null, isRead: boolean): Promise<unknown> {
    const IDs = messages === null ? [] : Array.isArray(messages) ? messages.map((m) => m.ID) : [messages.ID];
    return (await this.request({ method: 'PUT', url: this.mailpitUrl('/v1/messages'), body: { IDs, Read: isRead } })).body;
  }
}

test('cypress-mailpit: every command, replayed against the capture API', async () => {
  await using rig = await captureRig();
  const cy = new Commands(rig.base);

  const sent = await cy.mailpitSendMail({ attachments: [{ Content: Buffer.from('pdf?').toString('base64'), Filename: 'file.pdf', ContentType: 'application/pdf' }] });
  assert.match(sent.ID, /\S/);
  await rig.send({ from: 'app@example.com', to: 'user@example.com', subject: 'Reset your password', text: 'code 424242', html: '<p>code <b>424242</b></p>' });

  const all = await cy.mailpitGetAllMails();
  assert.equal(all.messages_count, 2);
  assert.deepEqual(all.messages.map((m) => m.Subject), ['Reset your password', 'Hello Mailpit']);
  assert.equal((await cy.mailpitGetAllMails(1, 1)).messages[0]!.Subject, 'Hello Mailpit');

  const mail = await cy.mailpitGetMail(sent.ID);
  assert.equal(cy.mailpitGetSubject(mail), 'Hello Mailpit');
  assert.deepEqual(cy.mailpitGetRecipientAddress(mail), ['jane@example.com']);
  assert.equal(cy.mailpitGetFromAddress(mail), 'from@example.com');
  assert.deepEqual(cy.mailpitGetAttachments(mail), ['file.pdf']);
  assert.equal((await cy.mailpitGetMail()).Subject, 'Reset your password');

  // /view/ID.html and .txt are asked for as //view/...: the path is cleaned, as Mailpit's router does.
  assert.match(String(await cy.mailpitGetMailHTMlBody(mail)), /<p>hello from mailpit<\/p>/);
  assert.match(String(await cy.mailpitGetMailTextBody(await cy.mailpitGetMail())), /code 424242/);

  assert.equal((await cy.mailpitGetEmailsBySubject('Hello Mailpit')).messages_count, 1);
  assert.equal((await cy.mailpitGetEmailsByTo('user@example.com')).messages[0]!.Subject, 'Reset your password');
  assert.equal((await cy.mailpitHasEmailsBySearch('subject:Reset', (n) => n > 0)).messages_count, 1);
  assert.equal((await cy.mailpitHasEmailsBySearch('to:nobody@example.com', (n) => n === 0)).messages_count, 0);

  assert.equal(await cy.setReadStatus(null, true), 'ok'); // mailpitSetAllEmailStatusAsRead: IDs [] means all
  assert.equal(rig.capture.store.all().filter((m) => !m.read).length, 0);
  assert.equal(await cy.setReadStatus(null, false), 'ok'); // mailpitSetAllEmailStatusAsUnRead
  assert.equal(rig.capture.store.all().filter((m) => !m.read).length, 2);
  assert.equal(await cy.setReadStatus(mail, true), 'ok'); // mailpitSetStatusAsRead
  assert.deepEqual(rig.capture.store.all().filter((m) => m.read).map((m) => m.id), [sent.ID]);
  assert.equal(await cy.setReadStatus([mail], false), 'ok'); // mailpitSetStatusAsUnRead
  assert.equal(rig.capture.store.all().filter((m) => m.read).length, 0);

  // SpamAssassin is one of the checks tsmtpd does not run: the command fails with the reason.
  await assert.rejects(cy.mailpitGetMailSpamAssassinSummary(mail), /501 .*not available in tsmtpd/);

  assert.equal((await cy.mailpitDeleteEmailsBySearch('subject:Reset')).status, 200);
  assert.deepEqual((await cy.mailpitGetAllMails()).messages.map((m) => m.Subject), ['Hello Mailpit']);
  assert.equal((await cy.mailpitDeleteAllEmails()).status, 200);
  assert.equal((await cy.mailpitGetAllMails()).messages_count, 0);
});

test('cypress-mailpit: MAILPIT_USERNAME/MAILPIT_PASSWORD become basic auth on every request', async () => {
  await using rig = await captureRig({ http: { authenticate: (u, p) => u === 'cy' && p === 'pw' } });
  await new Commands(rig.base, { user: 'cy', pass: 'pw' }).mailpitSendMail({ subject: 'auth ok' });
  const cy = new Commands(rig.base, { user: 'cy', pass: 'pw' });
  assert.equal((await cy.mailpitGetMail()).Subject, 'auth ok');
  assert.match(String(await cy.mailpitGetMailTextBody(await cy.mailpitGetMail())), /hello from mailpit/);
  await assert.rejects(new Commands(rig.base).mailpitGetAllMails(), /401/);
});
