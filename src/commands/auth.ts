/** AUTH (RFC 4954): the built-in SASL mechanisms with an authenticator, and the handler's own. */
import {
  AuthCancelled,
  AuthSyntaxError,
  BUILTIN_MECHANISMS,
  decodeResponse,
  handlerMechanisms,
  runMechanism,
  type AuthData,
  type AuthResult,
} from '../auth.js';
import type { EngineContext } from '../context.js';
import type { Handler, MaybePromise, SMTPServer } from '../handler.js';
import { finalReply } from '../hooks.js';
import { DEFAULTS, type SMTPOptions } from '../options.js';
import { Reply } from '../replies.js';
import type { BuiltinCommand } from './dispatch.js';
import { needHelo } from './transaction.js';

/** RFC 4954 §4: an AUTH line with an initial response may reach 12288 octets. */
/** RFC 4954 §6: the enhanced code of a successful AUTH whose hook reply carries none. */
const AUTH_ENHANCED = '2.7.0';

const AUTH_LINE_LIMIT = 12_288;

const mechanismCache = new WeakMap<Handler, WeakMap<SMTPOptions, Map<string, string>>>();

/**
 * Offered mechanisms, name → handler method name ('' for a built-in one): built-ins when there
 * is an authenticator, and the handler's own. The same for every connection of a handler and
 * options: computed once, shared.
 */
export function authMechanisms(ctx: EngineContext): Map<string, string> {
  const o = ctx.options;
  let perOptions = mechanismCache.get(ctx.handler);
  if (perOptions === undefined) mechanismCache.set(ctx.handler, (perOptions = new WeakMap()));
  const cached = perOptions.get(o);
  if (cached !== undefined) return cached;
  const exclude = new Set((o.authExcludeMechanism ?? []).map((m) => m.toUpperCase()));
  const include = new Set((o.authIncludeMechanism ?? []).map((m) => m.toUpperCase()));
  const found = new Map<string, string>();
  if (o.authenticator !== undefined) {
    for (const m of BUILTIN_MECHANISMS) if (m !== 'CRAM-MD5' || include.has(m)) found.set(m, '');
  }
  for (const [name, method] of handlerMechanisms(ctx.handler)) found.set(name, method);
  for (const name of exclude) found.delete(name);
  perOptions.set(o, found);
  return found;
}

/**
 * Sends `334 <base64 challenge>` and returns the client's decoded answer (aiosmtpd's
 * challenge_auth). Throws AuthCancelled on `*` and AuthSyntaxError on bad base64.
 */
export async function challengeAuth(ctx: EngineContext, challenge: string | Buffer): Promise<Buffer> {
  ctx.push(`334 ${Buffer.from(challenge).toString('base64')}`);
  const line = await ctx.nextFramedLine();
  if (line === null) throw new AuthCancelled('connection closed');
  if (typeof line === 'symbol') throw new AuthSyntaxError('malformed response line');
  return decodeResponse(line.toString('latin1'));
}

type CustomMechanism = (server: SMTPServer, args: string[]) => MaybePromise<AuthResult | boolean | null>;

async function auth(ctx: EngineContext, arg: string): Promise<void> {
  const mechanisms = authMechanisms(ctx);
  if (mechanisms.size === 0) return ctx.reply(Reply.AUTH_NOT_AVAILABLE);
  if (needHelo(ctx)) return;
  if (!ctx.session.extendedSmtp) return ctx.reply(Reply.AUTH_NEEDS_EHLO);
  if (ctx.session.tls === null && ctx.options.authRequireTLS !== false) return ctx.reply(Reply.AUTH_NEEDS_TLS);
  if (ctx.session.authenticated) return ctx.reply(Reply.ALREADY_AUTHENTICATED);
  if (ctx.inTransaction) return ctx.reply(Reply.AUTH_IN_TRANSACTION);
  const args = arg.split(' ');
  if (arg === '' || args.length > 2) return ctx.reply(Reply.AUTH_SYNTAX);
  const mechanism = args[0]!.toUpperCase();
  const method = mechanisms.get(mechanism);
  if (method === undefined) return ctx.reply(Reply.AUTH_UNKNOWN_MECHANISM);
  let outcome: AuthResult;
  let login: string | null = null;
  try {
    const h = ctx.handler;
    if (h.handleAUTH !== undefined) {
      // The handler takes over the whole exchange, as aiosmtpd's handle_AUTH.
      return ctx.reply(await ctx.hook('handleAUTH', [args], Reply.AUTH_FAILED, AUTH_ENHANCED));
    }
    let result: AuthResult | boolean | null | undefined;
    if (method === '') {
      const initial = args[1] === undefined ? null : decodeResponse(args[1]);
      const data: AuthData = await runMechanism(
        mechanism as (typeof BUILTIN_MECHANISMS)[number],
        initial,
        { challenge: (c) => challengeAuth(ctx, c) },
        ctx.hostname,
      );
      login = data.login;
      result = await ctx.options.authenticator!(ctx.server, ctx.session, ctx.envelope, mechanism, data);
    } else {
      const custom = (h as unknown as Record<string, CustomMechanism>)[method]!;
      result = await custom.call(h, ctx.server, args);
    }
    outcome = typeof result === 'object' && result !== null ? result : { success: result === true };
  } catch (error) {
    if (error instanceof AuthCancelled) return ctx.reply(Reply.AUTH_CANCELLED);
    if (error instanceof AuthSyntaxError) return ctx.reply(Reply.AUTH_BAD_RESPONSE);
    ctx.logError('authenticator error', error);
    return ctx.reply(Reply.AUTH_TEMPORARY_FAILURE);
  }
  // An authenticator's reply is a final one: never a 3xx that would leave the client waiting.
  const message = outcome.message === undefined ? null : finalReply(outcome.message, true);
  if (outcome.success === true) {
    ctx.session.authenticated = true;
    ctx.session.authData = outcome.authData ?? login;
    return ctx.reply(message !== null && message.startsWith('2') ? message : Reply.AUTH_OK);
  }
  const max = ctx.options.maxAuthFailures ?? DEFAULTS.maxAuthFailures;
  if (ctx.countAuthFailure() >= max && max > 0) return ctx.shutdown(Reply.TOO_MANY_AUTH_FAILURES);
  ctx.reply(message !== null && !message.startsWith('2') ? message : Reply.AUTH_FAILED);
}

export const AUTH: BuiltinCommand = {
  syntax: 'AUTH mechanism [initial-response]',
  allowedBeforeAuth: true,
  ehlo: (ctx) => {
    const mechanisms = authMechanisms(ctx);
    if (mechanisms.size === 0 || (ctx.session.tls === null && ctx.options.authRequireTLS !== false)) return null;
    return `AUTH ${[...mechanisms.keys()].join(' ')}`;
  },
  lineLimit: (_ctx, base) => Math.max(base, AUTH_LINE_LIMIT),
  logAs: (arg) => `AUTH ${arg.split(' ')[0]} ****`,
  run: auth,
};
