/** XFORWARD (Postfix): the MTA in front of a content filter forwards the original client's attributes. */
import { Reply, xforwardBadValue } from '../replies.js';
import { parseXforward } from '../xforward.js';
import type { BuiltinCommand } from './dispatch.js';

/** Seven attributes of up to 255 octets, xtext-encoded, do not fit in 512 (Postfix's smtpd takes 2048). */
const XFORWARD_LINE_LIMIT = 2048;

export const XFORWARD: BuiltinCommand = {
  syntax: 'XFORWARD attribute=value [...]',
  allowedBeforeStartTLS: true,
  allowedBeforeAuth: true,
  // Offered only to the MTAs the operator trusts; anyone else is told no (550), as Postfix does.
  ehlo: (ctx) => (ctx.xforwardAllowed ? 'XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE' : null),
  lineLimit: (_ctx, base) => Math.max(base, XFORWARD_LINE_LIMIT),
  run(ctx, arg) {
    if (!ctx.xforwardAllowed) return ctx.reply(Reply.XFORWARD_NOT_ALLOWED);
    if (ctx.inTransaction) return ctx.reply(Reply.XFORWARD_IN_TRANSACTION);
    const parsed = parseXforward(arg);
    if (!parsed.ok) return ctx.reply(parsed.attribute === null ? Reply.XFORWARD_SYNTAX : xforwardBadValue(parsed.attribute));
    // Attributes come incrementally (Postfix sends two XFORWARD lines); a later one wins.
    ctx.session.xforward = { ...ctx.session.xforward, ...parsed.data };
    ctx.reply(Reply.OK);
  },
};
