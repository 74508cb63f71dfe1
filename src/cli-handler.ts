/** -c CLASSPATH: the handler class (built-in or MODULE:EXPORT), its classargs, and its setup at start. */
import { unlink, writeFile } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import { UsageError, type Handler, type HandlerClass } from './handler.js';
import { Mailbox } from './handlers/mailbox.js';
import { builtinLoaders } from './handlers/builtin.js';
import { CliError } from './cli-error.js';
import { asServingUser } from './cli-privileges.js';

/** True for a class (or a constructor function with methods), not a plain function. */
function isClass(value: unknown): value is HandlerClass {
  if (typeof value !== 'function') return false;
  if (/^class\b/.test(Function.prototype.toString.call(value))) return true;
  if (typeof (value as { fromCli?: unknown }).fromCli === 'function') return true;
  const proto = (value as { prototype?: object }).prototype;
  return proto !== undefined && Object.getOwnPropertyNames(proto).some((name) => name !== 'constructor');
}

export async function loadHandlerClass(classpath: string): Promise<HandlerClass> {
  // aiosmtpd spells built-ins as aiosmtpd.handlers.Name: accept that too.
  const bare = classpath.replace(/^(?:aiosmtpd|tsmtpd)\.handlers\./, '');
  const builtin = builtinLoaders[bare];
  if (builtin !== undefined) return builtin();
  const colon = classpath.lastIndexOf(':');
  if (colon <= 0 || colon === classpath.length - 1) {
    throw new CliError(`argument -c/--class: unknown handler class '${classpath}': use a built-in name (${Object.keys(builtinLoaders).join(', ')}) or MODULE:EXPORT`);
  }
  const modulePath = classpath.slice(0, colon);
  const exportName = classpath.slice(colon + 1);
  const specifier =
    modulePath.startsWith('.') || modulePath.startsWith('/') ? pathToFileURL(resolvePath(modulePath)).href : modulePath;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(specifier)) as Record<string, unknown>;
  } catch (error) {
    throw new CliError(`argument -c/--class: cannot load module '${modulePath}': ${(error as Error).message.split('\n')[0]}`);
  }
  const cls = mod[exportName];
  if (cls === undefined) throw new CliError(`argument -c/--class: module '${modulePath}' has no export '${exportName}'`);
  if (!isClass(cls)) throw new CliError(`argument -c/--class: '${classpath}' is not a handler class (got a ${typeof cls === 'function' ? 'function' : typeof cls})`);
  return cls;
}

export function makeHandler(cls: HandlerClass, classargs: string[]): Handler {
  if (typeof cls.fromCli !== 'function' && classargs.length > 0) throw new CliError(`-c ${cls.name}: takes no arguments`);
  try {
    return typeof cls.fromCli === 'function' ? cls.fromCli(...classargs) : new cls();
  } catch (error) {
    // The handler's own complaint about its arguments, in its words (docs/cli.md shows them).
    if (error instanceof UsageError) throw error;
    throw new CliError(`argument -c/--class: cannot make a ${cls.name}: ${(error as Error).message.split('\n')[0]}`);
  }
}

/**
 * A handler with setup to do (Mailbox creates its Maildir, as aiosmtpd's does at start) does it
 * now, so a bad path is an error at start, not at the first message.
 */
export async function setUpHandler(handler: Handler, asNobody: boolean): Promise<void> {
  const init = (handler as { init?: () => unknown }).init;
  const mailbox = handler instanceof Mailbox ? handler : null;
  const setup = async () => {
    if (typeof init === 'function') await init.call(handler);
    if (mailbox !== null) await probeWritable(join(mailbox.mailDir, 'tmp'));
  };
  try {
    await (asNobody ? asServingUser(setup) : setup());
  } catch (error) {
    const why = (error as Error).message;
    const code = (error as NodeJS.ErrnoException).code;
    if (asNobody && (code === 'EACCES' || code === 'EPERM')) {
      throw new CliError(`handler setup failed as user nobody (the user tsmtpd serves as when started as root): ${why}; chown it to nobody, or run with -n`);
    }
    throw new CliError(`handler setup failed: ${why}`);
  }
}

/** Mailbox's check that its Maildir takes files: a directory nobody may enter but not write in. */
async function probeWritable(dir: string): Promise<void> {
  const probe = join(dir, `.tsmtpd-probe-${process.pid}`);
  await writeFile(probe, '', { flag: 'wx' });
  await unlink(probe);
}
