/**
 * Mailbox: delivers each message into a Maildir (https://cr.yp.to/proto/maildir.html), the
 * format Python's `mailbox.Maildir`, Dovecot, mutt and friends read. Unlike aiosmtpd's Mailbox
 * (which re-serializes through Python's email package) the body is stored byte for byte, and
 * a message is only answered 250 once it is durably in new/.
 */
import { link, mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { UsageError, type Handler, type SMTPServer } from '../handler.js';
import type { Envelope, Session } from '../session.js';
import { bodyOf, lineEnding, traceHeaders, tracePrefix } from './headers.js';

/**
 * mkdir -p, mode 0700. Not `mkdir(..., { recursive: true })`: on Node 20 that loops forever where
 * a parent exists but refuses new entries with ENOENT (`/proc/x`), and the server never starts.
 */
async function makeDirectory(path: string, parentMade = false): Promise<void> {
  try {
    await mkdir(path, { mode: 0o700 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' && (await stat(path)).isDirectory()) return;
    // Once past a made parent, ENOENT is the filesystem's answer, not a missing parent.
    if (code !== 'ENOENT' || parentMade || dirname(path) === path) throw error;
    await makeDirectory(dirname(path));
    await makeDirectory(path, true);
  }
}

/** Per process, shared by every Mailbox, as Python's Maildir._count: keeps names unique. */
let counter = 0;

export class Mailbox implements Handler {
  readonly mailDir: string;
  private ready: Promise<void> | null = null;

  constructor(mailDir: string) {
    this.mailDir = mailDir;
  }

  /** `-c Mailbox DIR`, with aiosmtpd's messages. */
  static fromCli(...args: string[]): Mailbox {
    if (args.length < 1) throw new UsageError('The directory for the maildir is required');
    if (args.length > 1) throw new UsageError('Too many arguments for Mailbox handler');
    return new Mailbox(args[0]!);
  }

  /** Creates mailDir/{tmp,new,cur} (0700: mail is private). Delivery calls it on first use. */
  init(): Promise<void> {
    this.ready ??= (async () => {
      await makeMaildir(this.mailDir);
    })().catch((error: unknown) => {
      this.ready = null; // let a later delivery try again (e.g. after the disk was remounted)
      throw error;
    });
    return this.ready;
  }

  /**
   * One file per message, for SMTP and LMTP alike: LMTP's recipients (RFC 2033) all get the same
   * file in the same Maildir, so a thousand recipients cost one write, not a thousand. Each gets
   * its own reply, all 250 or all 451, since they share the one write.
   */
  async handleDATA(server: SMTPServer, session: Session, envelope: Envelope): Promise<string | string[]> {
    if (!server.lmtp) {
      await this.deliver(session, envelope);
      return '250 OK';
    }
    const delivered = await this.deliver(session, envelope).then(
      () => true,
      () => false,
    );
    return envelope.rcptTos.map((rcpt) =>
      delivered ? `250 2.0.0 <${rcpt}> delivered` : `451 4.3.0 <${rcpt}> delivery failed, try again later`,
    );
  }

  /**
   * Writes one message to new/ and returns its path. `recipients` fills X-RcptTo (default:
   * every envelope recipient). Throws on failure, leaving nothing behind in tmp/ or new/.
   */
  async deliver(session: Session, envelope: Envelope, recipients: string[] = envelope.rcptTos): Promise<string> {
    await this.init();
    const body = bodyOf(envelope);
    const eol = lineEnding(body);
    // Prepended, so these come first and win over any X- header the client forged.
    const header = tracePrefix(traceHeaders(session, envelope, eol, recipients), body, eol);
    return writeMaildirFile(this.mailDir, [header, body]);
  }
}

/**
 * Writes one message into mailDir/new (tmp/ first, synced, then linked into new/) and returns its
 * path. Throws on failure, leaving nothing behind in tmp/ or new/. The directories must exist.
 */
export async function writeMaildirFile(mailDir: string, parts: Buffer[]): Promise<string> {
  const name = uniqueName();
  const tmpPath = join(mailDir, 'tmp', name);
  const newPath = join(mailDir, 'new', name);
  // 'wx': never reuse or clobber a file someone else is writing.
  const file = await open(tmpPath, 'wx', 0o600);
  try {
    try {
      // Written piece by piece (writeFile continues from the current position), so a large
      // body is not copied once more to join it to its header.
      for (const part of parts) await file.writeFile(part);
      await file.sync(); // the data is on disk before its name appears in new/
    } finally {
      await file.close();
    }
    await moveIntoNew(tmpPath, newPath);
  } catch (error) {
    await unlink(tmpPath).catch(() => undefined);
    throw error;
  }
  await syncDir(join(mailDir, 'new'));
  return newPath;
}

/** mailDir/{tmp,new,cur}, mode 0700. */
export async function makeMaildir(mailDir: string): Promise<void> {
  for (const sub of ['tmp', 'new', 'cur']) await makeDirectory(join(mailDir, sub));
}

/** `${secs}.M${usecs}P${pid}Q${counter}.${host}`, as Python's mailbox.Maildir names files. */
function uniqueName(): string {
  const nowMs = performance.timeOrigin + performance.now();
  const secs = Math.floor(nowMs / 1000);
  const usecs = Math.min(999999, Math.floor((nowMs - secs * 1000) * 1000));
  const host = hostname().replace(/\//g, '\\057').replace(/:/g, '\\072');
  counter += 1;
  return `${secs}.M${usecs}P${process.pid}Q${counter}.${host}`;
}

/**
 * link + unlink, as Python's Maildir does: link refuses to overwrite an existing message.
 * Filesystems without hard links get rename. A leftover tmp/ name after a successful link is
 * harmless (Maildir readers clean tmp/), so its unlink is best effort.
 */
async function moveIntoNew(tmpPath: string, newPath: string): Promise<void> {
  try {
    await link(tmpPath, newPath);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'ENOSYS' && code !== 'EOPNOTSUPP') throw error;
    await rename(tmpPath, newPath);
    return;
  }
  await unlink(tmpPath).catch(() => undefined);
}

/** Makes the new directory entry survive a crash; some platforms cannot fsync a directory. */
async function syncDir(dir: string): Promise<void> {
  try {
    const handle = await open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // best effort
  }
}
