/**
 * Capture's optional persistence: every message is a file in a Maildir (readable by mutt,
 * Dovecot and Python's `mailbox`), written and synced before the client gets its 250. Unread
 * mail is in new/, read mail in cur/ with the S flag; deletes and pruning unlink. The first
 * header of each file, X-Tsmtpd-Capture, holds the envelope and session facts (base64 JSON), so
 * the index is rebuilt at start; files without it (mail put there by other tools) are loaded too.
 */
import { readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { makeMaildir, writeMaildirFile } from '../handlers/mailbox.js';
import { CapturedMessage, newId, type CapturedEnvelope, type CapturedSession } from './message.js';
import type { MessageStore, StoreEvent } from './store.js';

const META = 'X-Tsmtpd-Capture';

interface Meta {
  v: 1;
  id: string;
  receivedAt: string;
  envelope: CapturedEnvelope;
  session: CapturedSession;
}

interface FileState {
  path: string;
  read: boolean;
}

/** The first header, folded at 76 columns, in the message's own line ending. */
export function metaHeader(message: CapturedMessage): Buffer {
  const meta: Meta = { v: 1, id: message.id, receivedAt: message.receivedAt.toISOString(), envelope: message.envelope, session: message.session };
  const eol = message.raw.includes('\r\n') || message.raw.length === 0 ? '\r\n' : '\n';
  const data = Buffer.from(JSON.stringify(meta), 'utf8').toString('base64');
  return Buffer.from(`${META}:${eol} ${(data.match(/.{1,76}/g) ?? ['']).join(`${eol} `)}${eol}`, 'latin1');
}

/** Splits our header off a stored file: the facts, and the message as it arrived. */
export function splitMeta(file: Buffer): { meta: Meta | null; raw: Buffer } {
  const prefix = Buffer.from(`${META}:`, 'latin1');
  if (file.subarray(0, prefix.length).compare(prefix) !== 0) return { meta: null, raw: file };
  let at = file.indexOf(0x0a) + 1;
  let data = '';
  while (at > 0 && at < file.length && (file[at] === 0x20 || file[at] === 0x09)) {
    const end = file.indexOf(0x0a, at);
    const stop = end < 0 ? file.length : end + 1;
    data += file.subarray(at, stop).toString('latin1').trim();
    at = stop;
  }
  try {
    const meta = JSON.parse(Buffer.from(data, 'base64').toString('utf8')) as Meta;
    if (meta.v !== 1 || typeof meta.id !== 'string') return { meta: null, raw: file };
    return { meta, raw: file.subarray(at) };
  } catch {
    return { meta: null, raw: file };
  }
}

/** `name:2,FLAGS` -> name; Maildir's info suffix after the colon. */
function baseName(file: string): string {
  const colon = file.indexOf(':');
  return colon < 0 ? file : file.slice(0, colon);
}

export class MaildirPersistence {
  readonly dir: string;
  private readonly files = new Map<string, FileState>();
  /** Where a failed unlink or rename is told (the message is gone from the index anyway). */
  onError: (error: unknown) => void = () => {};
  /** File operations run one after another, so a rename and a later unlink cannot cross. */
  private queue: Promise<void> = Promise.resolve();

  constructor(dir: string) {
    this.dir = dir;
  }

  init(): Promise<void> {
    return makeMaildir(this.dir);
  }

  /** Durably writes a message (before it is acknowledged). */
  async write(message: CapturedMessage): Promise<void> {
    const path = await writeMaildirFile(this.dir, [metaHeader(message), message.raw]);
    this.files.set(message.id, { path, read: false });
  }

  /** Reads new/ and cur/ back: the stored facts, the raw bytes; `parse` makes the rest. Oldest first. */
  async load(parse: (raw: Buffer) => Promise<CapturedMessage['parsed']>): Promise<CapturedMessage[]> {
    const out: CapturedMessage[] = [];
    for (const sub of ['new', 'cur']) {
      for (const name of await readdir(join(this.dir, sub))) {
        if (name.startsWith('.')) continue;
        const path = join(this.dir, sub, name);
        let file: Buffer;
        try {
          file = await readFile(path);
        } catch {
          continue; // removed meanwhile
        }
        const { meta, raw } = splitMeta(file);
        const parsed = await parse(raw);
        const receivedAt = meta !== null ? new Date(meta.receivedAt) : (await stat(path)).mtime;
        const message = new CapturedMessage({
          id: meta?.id ?? newId(),
          receivedAt,
          raw,
          parsed,
          envelope: meta?.envelope ?? { mailFrom: '', rcptTos: [], mailOptions: {}, rcptOptions: [] },
          session: meta?.session ?? { peer: { address: '', port: 0, family: 'unix' }, heloName: null, tls: null, authUser: null, lmtp: false },
        });
        const flags = name.includes(':2,') ? name.slice(name.indexOf(':2,') + 3) : '';
        message.read = sub === 'cur' && flags.includes('S');
        this.files.set(message.id, { path, read: message.read });
        out.push(message);
      }
    }
    return out.sort((a, b) => a.receivedAt.getTime() - b.receivedAt.getTime());
  }

  /** Mirrors the store's deletes and read changes on disk. */
  attach(store: MessageStore): () => void {
    return store.on((event: StoreEvent) => {
      if (event.type === 'delete') for (const id of event.ids) this.remove(id);
      else if (event.type === 'truncate') for (const id of [...this.files.keys()]) this.remove(id);
      else if (event.type === 'update') this.setRead(event.message.id, event.message.read);
    });
  }

  private remove(id: string): void {
    const state = this.files.get(id);
    if (state === undefined) return;
    this.files.delete(id);
    this.run(() => unlink(state.path));
  }

  private setRead(id: string, read: boolean): void {
    const state = this.files.get(id);
    if (state === undefined || state.read === read) return;
    const name = baseName(basename(state.path));
    const next = read ? join(this.dir, 'cur', `${name}:2,S`) : join(this.dir, 'new', name);
    const from = state.path;
    state.path = next;
    state.read = read;
    this.run(() => rename(from, next));
  }

  private run(op: () => Promise<void>): void {
    this.queue = this.queue.then(op).catch((error: unknown) => this.onError(error));
  }

  /** Resolves once every pending file operation is done (tests, shutdown). */
  flush(): Promise<void> {
    return this.queue;
  }
}
