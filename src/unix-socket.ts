/** Binding a Unix socket listener: the mode set before the name appears, and only our own file removed. */
import cluster from 'node:cluster';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { chmod, lstat, rename, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { listenOn } from './listen.js';

/** Identity of a socket file we created, so stop() never removes another server's. */
export interface SocketFile {
  dev: number;
  ino: number;
  ctimeMs: number;
}

/** Listens on `path`; returns the socket file made, or null when the cluster primary owns it. */
export async function listenUnix(server: net.Server, path: string, mode: number | undefined): Promise<SocketFile | null> {
  if (cluster.isWorker) {
    // Under --workers the cluster primary binds the path once and shares it; every worker
    // names the same path (the CLI's primary cleared a stale file before forking).
    await listenOn(server, { path });
    if (mode !== undefined) await chmod(path, mode).catch(() => undefined);
    return null;
  }
  await checkSocketPath(path);
  // Listen on a temporary name, set the mode, then rename into place: the socket never
  // appears with the umask's permissions, a stale file is replaced atomically, and libuv
  // (which unlinks the name it listened on when the server closes) never touches the
  // final path, which may belong to another server by then.
  const temp = join(dirname(path), `.tsmtpd-${process.pid}-${randomBytes(4).toString('hex')}.sock`);
  await listenOn(server, { path: temp });
  if (mode !== undefined) await chmod(temp, mode);
  await rename(temp, path);
  const { dev, ino, ctimeMs } = await lstat(path);
  return { dev, ino, ctimeMs };
}

/** Removes the socket file at `path` if it is still `mine`. */
export async function removeSocketFile(path: string, mine: SocketFile): Promise<void> {
  try {
    const now = await lstat(path);
    // Inode numbers are reused at once on some file systems: the change time tells them apart.
    if (now.dev === mine.dev && now.ino === mine.ino && now.ctimeMs === mine.ctimeMs) await unlink(path);
  } catch (error) {
    // Gone already, or no longer ours to remove (privileges dropped after binding): leave it;
    // the next start replaces a stale socket anyway.
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'EACCES' && code !== 'EPERM') throw error;
  }
}

/**
 * A socket file left by an earlier run may be replaced; a socket some live server still answers
 * on may not (EADDRINUSE, as for a TCP port), nor anything that is not a socket.
 */
export async function checkSocketPath(path: string): Promise<void> {
  try {
    if (!(await lstat(path)).isSocket()) {
      throw Object.assign(new Error(`listen EADDRINUSE: ${path} exists and is not a socket`), { code: 'EADDRINUSE' });
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw Object.assign(new Error(`listen EADDRINUSE: a server is running on ${path}`), { code: 'EADDRINUSE' });
}
