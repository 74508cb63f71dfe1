/** The envelope of a mail transaction (RFC 5321 §3.3): MAIL, RCPT and RSET. */
import type { EngineContext } from '../context.js';
import { andThen } from '../hooks.js';
import { DEFAULTS } from '../options.js';
import { afterKeyword, parseParams, parsePath, parseSize, type EsmtpParam } from '../parse.js';
import { Reply } from '../replies.js';
import type { Envelope, MailOptions, RcptOptions } from '../session.js';
import { decodeXtext } from '../xclient.js';
import { authMechanisms } from './auth.js';
import type { BuiltinCommand } from './dispatch.js';

/** aiosmtpd's allowances over the base line limit for MAIL parameters (SIZE=, SMTPUTF8). */
const SIZE_ALLOWANCE = 26;
const SMTPUTF8_ALLOWANCE = 10;
/** The enhanced codes of a bare 2xx from handleMAIL / handleRCPT (RFC 3463 §3.2: sender, destination). */
const MAIL_ENHANCED = '2.1.0';
const RCPT_ENHANCED = '2.1.5';

function isAsciiString(s: string): boolean {
  return !/[^\x00-\x7f]/.test(s);
}

/** 503 unless the client greeted; true when it was refused. */
export function needHelo(ctx: EngineContext): boolean {
  if (ctx.session.hostName !== null) return false;
  ctx.reply(Reply.NEED_HELO);
  return true;
}

/** MAIL and RCPT share their argument syntax, `FROM:<path> [params]`: the parts, or the error reply. */
function pathAndParams(ctx: EngineContext, arg: string, mail: boolean): { address: string; params: EsmtpParam[] } | string {
  const esmtp = ctx.session.extendedSmtp;
  const syntax = mail ? (esmtp ? Reply.MAIL_SYNTAX_EXT : Reply.MAIL_SYNTAX) : esmtp ? Reply.RCPT_SYNTAX_EXT : Reply.RCPT_SYNTAX;
  const rest = afterKeyword(arg, mail ? 'FROM' : 'TO');
  if (rest === null) return syntax;
  const path = parsePath(rest, { allowNull: mail, allowPostmaster: !mail, utf8: ctx.enableSMTPUTF8 });
  if (path === 'utf8') return Reply.NEED_UTF8;
  if (path === 'syntax') return mail ? Reply.BAD_SENDER : Reply.BAD_ADDRESS;
  if (path.params !== '' && !esmtp) return syntax;
  const params = parseParams(path.params, ctx.enableSMTPUTF8);
  return params === null ? Reply.BAD_PARAMS : { address: path.address, params };
}

/** MAIL's parameters, typed; a string is the error reply. */
function mailOptions(ctx: EngineContext, params: EsmtpParam[]): MailOptions | string {
  const options: MailOptions = {};
  for (const { keyword, value } of params) {
    if (keyword === 'SIZE') {
      const size = parseSize(value);
      if (size === null) return Reply.BAD_SIZE;
      if (ctx.dataSizeLimit > 0 && size > ctx.dataSizeLimit) return Reply.SIZE_EXCEEDED;
      options.size = size;
    } else if (keyword === 'BODY') {
      const body = value?.toUpperCase();
      if (body !== '7BIT' && body !== '8BITMIME' && body !== 'BINARYMIME') return Reply.BAD_BODY;
      options.body = body;
    } else if (keyword === 'AUTH' && authMechanisms(ctx).size > 0) {
      // RFC 4954 §5: the submitter's identity, xtext-encoded, or <> for unknown.
      const identity = value === null ? null : value === '<>' ? '<>' : decodeXtext(value);
      if (identity === null) return Reply.BAD_PARAMS;
      options.auth = identity;
    } else if (keyword === 'SMTPUTF8' && ctx.enableSMTPUTF8) {
      if (value !== null) return Reply.BAD_PARAMS;
      options.smtputf8 = true;
    } else if (ctx.options.acceptUnknownParameters) {
      (options.unknown ??= {})[keyword] = value ?? true;
    } else {
      return Reply.PARAM_NOT_RECOGNIZED;
    }
  }
  return options;
}

function mail(ctx: EngineContext, arg: string): void | Promise<void> {
  if (needHelo(ctx)) return;
  if (ctx.inTransaction) return ctx.reply(Reply.NESTED_MAIL);
  const parsed = pathAndParams(ctx, arg, true);
  if (typeof parsed === 'string') return ctx.reply(parsed);
  const { address, params } = parsed;
  const options = mailOptions(ctx, params);
  if (typeof options === 'string') return ctx.reply(options);
  if (!options.smtputf8 && !isAsciiString(address)) return ctx.reply(Reply.NEED_UTF8);
  const env = ctx.envelope;
  const reply = ctx.hook('handleMAIL', [address, options], Reply.MAIL_OK, MAIL_ENHANCED);
  return andThen(reply, (text) => mailAnswered(ctx, env, address, options, params, text));
}

function mailAnswered(ctx: EngineContext, env: Envelope, address: string, options: MailOptions, params: EsmtpParam[], reply: string): void {
  if (env !== ctx.envelope) return ctx.reply(reply); // the transaction was reset meanwhile
  if (reply.startsWith('2')) {
    env.mailFrom ??= address;
    env.mailOptions = options;
    env.mailParams = params.map(({ keyword, value }) => (value === null ? keyword : `${keyword}=${value}`));
    env.smtputf8 = options.smtputf8 === true;
  } else {
    env.mailFrom = null;
  }
  ctx.reply(reply);
}

function rcpt(ctx: EngineContext, arg: string): void | Promise<void> {
  if (needHelo(ctx)) return;
  const env = ctx.envelope;
  if (env.mailFrom === null) return ctx.reply(Reply.NEED_MAIL);
  const parsed = pathAndParams(ctx, arg, false);
  if (typeof parsed === 'string') return ctx.reply(parsed);
  const { address, params } = parsed;
  const options: RcptOptions = {};
  for (const { keyword, value } of params) {
    if (!ctx.options.acceptUnknownParameters) return ctx.reply(Reply.PARAM_NOT_RECOGNIZED);
    (options.unknown ??= {})[keyword] = value ?? true;
  }
  if (!env.smtputf8 && !isAsciiString(address)) return ctx.reply(Reply.NEED_UTF8);
  if (env.rcptTos.length >= (ctx.options.maxRecipients ?? DEFAULTS.maxRecipients)) {
    return ctx.reply(Reply.TOO_MANY_RECIPIENTS);
  }
  const before = env.rcptTos.length;
  const reply = ctx.hook('handleRCPT', [address, options], Reply.RCPT_OK, RCPT_ENHANCED);
  return andThen(reply, (text) => rcptAnswered(ctx, env, address, options, before, text));
}

function rcptAnswered(ctx: EngineContext, env: Envelope, address: string, options: RcptOptions, before: number, reply: string): void {
  if (reply.startsWith('2') && env.rcptTos.length === before) {
    env.rcptTos.push(address);
    env.rcptOptions.push(options);
  }
  while (env.rcptOptions.length < env.rcptTos.length) env.rcptOptions.push({});
  ctx.reply(reply);
}

function rset(ctx: EngineContext, arg: string): void | Promise<void> {
  if (arg !== '') return ctx.reply(Reply.RSET_SYNTAX);
  ctx.resetTransaction();
  return andThen(ctx.hook('handleRSET', [], Reply.RSET_OK), (text) => ctx.reply(text));
}

export const MAIL: BuiltinCommand = {
  syntax: 'MAIL FROM:<address> [SP <mail-parameters>]',
  ehlo: (ctx) => {
    const k = [ctx.dataSizeLimit > 0 ? `SIZE ${ctx.dataSizeLimit}` : 'SIZE', '8BITMIME', 'PIPELINING'];
    if (ctx.enableSMTPUTF8) k.push('SMTPUTF8');
    k.push('ENHANCEDSTATUSCODES');
    return k;
  },
  // aiosmtpd's allowances are for ESMTP parameters, so only after EHLO.
  lineLimit: (ctx, base) =>
    ctx.session.extendedSmtp ? base + SIZE_ALLOWANCE + (ctx.enableSMTPUTF8 ? SMTPUTF8_ALLOWANCE : 0) : base,
  run: mail,
};

export const RCPT: BuiltinCommand = { syntax: 'RCPT TO:<address> [SP <rcpt-parameters>]', run: rcpt };

export const RSET: BuiltinCommand = { syntax: 'RSET', allowedBeforeAuth: true, run: rset };
