/** HELO, EHLO and LHLO (RFC 5321 §4.1.1.1, RFC 2033 §4.1): the client names itself. */
import type { EngineContext } from '../context.js';
import { isThenable } from '../hooks.js';
import { heloName } from '../parse.js';
import { Reply } from '../replies.js';
import { ehloKeywords, type BuiltinCommand } from './dispatch.js';

async function helo(ctx: EngineContext, arg: string): Promise<void> {
  const name = heloName(arg);
  if (name === null) return ctx.reply(Reply.HELO_SYNTAX);
  ctx.resetTransaction();
  const before = ctx.session.hostName;
  const h = ctx.handler;
  const reply = await ctx.replyOf(
    () => (h.handleHELO ? h.handleHELO(ctx.server, ctx.session, ctx.envelope, name) : `250 ${ctx.hostname}`),
    false,
  );
  if (reply.startsWith('2')) {
    if (ctx.session.hostName === before) ctx.session.hostName = name; // unless the hook chose
    ctx.session.extendedSmtp = false;
  }
  ctx.reply(reply);
}

async function ehlo(ctx: EngineContext, arg: string, verb: 'EHLO' | 'LHLO'): Promise<void> {
  const name = heloName(arg);
  if (name === null) return ctx.reply(`501 5.5.4 Syntax: ${verb} hostname`);
  ctx.resetTransaction();
  let lines = [ctx.hostname, ...ehloKeywords(ctx)];
  const h = ctx.handler;
  if (h.handleEHLO) {
    try {
      let result = h.handleEHLO(ctx.server, ctx.session, ctx.envelope, name, lines);
      if (isThenable(result)) {
        ctx.flush();
        result = await result;
      }
      if (!Array.isArray(result) || result.length === 0 || !result.every((l) => typeof l === 'string')) {
        throw new TypeError('handleEHLO must return the list of EHLO lines');
      }
      // aiosmtpd's handlers return lines with their "250-" prefixes: accept those too.
      lines = result.map((l) => l.replace(/^250[ -]/, ''));
      if (lines.some((l) => /[\r\n]/.test(l))) throw new TypeError('EHLO lines must not contain CR or LF');
    } catch (error) {
      return ctx.reply(await ctx.exceptionReply(error));
    }
  }
  ctx.session.hostName = name;
  ctx.session.extendedSmtp = true;
  ctx.reply(lines.map((l, i) => `250${i === lines.length - 1 ? ' ' : '-'}${l}`).join('\r\n'));
}

export const HELO: BuiltinCommand = {
  syntax: 'HELO hostname',
  allowedBeforeAuth: true,
  run: helo,
};

export const EHLO: BuiltinCommand = {
  syntax: 'EHLO hostname',
  allowedBeforeStartTLS: true,
  allowedBeforeAuth: true,
  run: (ctx, arg) => ehlo(ctx, arg, 'EHLO'),
};

export const LHLO: BuiltinCommand = {
  syntax: 'LHLO hostname',
  allowedBeforeStartTLS: true,
  allowedBeforeAuth: true,
  run: (ctx, arg) => ehlo(ctx, arg, 'LHLO'),
};
