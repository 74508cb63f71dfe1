/** STARTTLS (RFC 3207). */
import type { EngineContext } from '../context.js';
import { Reply } from '../replies.js';
import { secureContextOf } from '../tls-info.js';
import type { BuiltinCommand } from './dispatch.js';
import { needHelo } from './transaction.js';

function offered(ctx: EngineContext): boolean {
  return secureContextOf(ctx.options.tlsContext) !== null;
}

export const STARTTLS: BuiltinCommand = {
  syntax: 'STARTTLS',
  allowedBeforeStartTLS: true,
  allowedBeforeAuth: true,
  ehlo: (ctx) => (offered(ctx) && ctx.session.tls === null ? 'STARTTLS' : null),
  run(ctx, arg) {
    if (!offered(ctx)) return ctx.reply(Reply.TLS_NOT_AVAILABLE);
    if (arg !== '') return ctx.reply(Reply.STARTTLS_SYNTAX);
    if (ctx.session.tls !== null) return ctx.reply(Reply.TLS_ALREADY_ACTIVE);
    if (needHelo(ctx)) return;
    ctx.push(Reply.READY_FOR_TLS);
    ctx.startTLS();
  },
};
