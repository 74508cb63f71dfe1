/** The envelope of a mail transaction (RFC 5321 §3.3): MAIL, RCPT and RSET. */
import type { EngineContext } from '../context.js';
import { DsnError, isDsnKeyword, parseMailDsn, parseRcptDsn, type DsnParam } from '../dsn.js';
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
/** RFC 3461 §4: DSN lengthens the MAIL line by up to 100 characters (RET, ENVID), RCPT's by 500 (NOTIFY, ORCPT). */
const DSN_MAIL_ALLOWANCE = 100;
const DSN_RCPT_ALLOWANCE = 500;
/** ` REQUIRETLS`. */
const REQUIRETLS_ALLOWANCE = 11;
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

/** With enableDSN, RET/ENVID/NOTIFY/ORCPT go to src/dsn.ts (on either command, so a misplaced one gets its 555 there). */
function isDsnParam(ctx: EngineContext, keyword: string): boolean {
  return ctx.options.enableDSN === true && (isDsnKeyword('MAIL', keyword) || isDsnKeyword('RCPT', keyword));
}

/** The DSN options parsed, or the DsnError's reply. */
function dsnOptions<T>(parse: () => T): T | string {
  try {
    return parse();
  } catch (error) {
    if (error instanceof DsnError) return error.reply;
    throw error;
  }
}

/** MAIL's parameters, typed; a string is the error reply. */
function mailOptions(ctx: EngineContext, params: EsmtpParam[]): MailOptions | string {
  const options: MailOptions = {};
  const dsn: DsnParam[] = [];
  for (const { keyword, value } of params) {
    if (isDsnParam(ctx, keyword)) {
      dsn.push({ keyword, value });
    } else if (keyword === 'REQUIRETLS' && ctx.options.offerRequireTLS === true) {
      if (value !== null || options.requireTLS === true) return Reply.BAD_PARAMS;
      // RFC 8689 §2: the option is only for a session that itself runs over TLS.
      if (ctx.session.tls === null) return Reply.REQUIRETLS_NEEDS_TLS;
      options.requireTLS = true;
    } else if (keyword === 'SIZE') {
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
  if (dsn.length === 0) return options;
  const typed = dsnOptions(() => parseMailDsn(dsn));
  return typeof typed === 'string' ? typed : Object.assign(options, typed);
}

/** RCPT's parameters, typed; a string is the error reply. */
function rcptOptions(ctx: EngineContext, params: EsmtpParam[]): RcptOptions | string {
  const options: RcptOptions = {};
  const dsn: DsnParam[] = [];
  for (const { keyword, value } of params) {
    if (isDsnParam(ctx, keyword)) dsn.push({ keyword, value });
    else if (ctx.options.acceptUnknownParameters) (options.unknown ??= {})[keyword] = value ?? true;
    else return Reply.PARAM_NOT_RECOGNIZED;
  }
  if (dsn.length === 0) return options;
  const typed = dsnOptions(() => parseRcptDsn(dsn, { utf8: ctx.envelope.smtputf8 }));
  return typeof typed === 'string' ? typed : Object.assign(options, typed);
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
  const options = rcptOptions(ctx, params);
  if (typeof options === 'string') return ctx.reply(options);
  if (!env.smtputf8 && !isAsciiString(address)) return ctx.reply(Reply.NEED_UTF8);
  if (env.rcptTos.length >= (ctx.options.maxRecipients ?? DEFAULTS.maxRecipients)) {
    return ctx.reply(Reply.TOO_MANY_RECIPIENTS, ctx.overshoot());
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
    // Appended after the keywords above, so their order stays what clients and tests have seen.
    if (ctx.options.enableDSN === true) k.push('DSN');
    if (ctx.options.offerRequireTLS === true && ctx.session.tls !== null) k.push('REQUIRETLS');
    return k;
  },
  // aiosmtpd's allowances are for ESMTP parameters, so only after EHLO.
  lineLimit: (ctx, base) =>
    ctx.session.extendedSmtp
      ? base +
        SIZE_ALLOWANCE +
        (ctx.enableSMTPUTF8 ? SMTPUTF8_ALLOWANCE : 0) +
        (ctx.options.enableDSN === true ? DSN_MAIL_ALLOWANCE : 0) +
        (ctx.options.offerRequireTLS === true ? REQUIRETLS_ALLOWANCE : 0)
      : base,
  run: mail,
};

export const RCPT: BuiltinCommand = {
  syntax: 'RCPT TO:<address> [SP <rcpt-parameters>]',
  lineLimit: (ctx, base) => (ctx.session.extendedSmtp && ctx.options.enableDSN === true ? base + DSN_RCPT_ALLOWANCE : base),
  run: rcpt,
};

export const RSET: BuiltinCommand = { syntax: 'RSET', allowedBeforeAuth: true, run: rset };
