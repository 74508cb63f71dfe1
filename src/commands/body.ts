/**
 * The message (RFC 5321 §4.1.1.4, RFC 3030): DATA, BDAT, and its delivery to the handler
 * (handleDATA, handleDATAStream, handleDeliver, processMessage), one reply per message in SMTP
 * and one per recipient in LMTP (RFC 2033 §4.2).
 */
import { BodyStream } from '../body-stream.js';
import type { EngineContext, ReadBody } from '../context.js';
import { Body } from '../framing.js';
import type { MaybePromise } from '../handler.js';
import { andThen } from '../hooks.js';
import { DEFAULTS } from '../options.js';
import { Reply } from '../replies.js';
import { formatPeer, type Envelope } from '../session.js';
import type { BuiltinCommand } from './dispatch.js';
import { needHelo } from './transaction.js';

/** RFC 3463 §3.7 (X.6.0, media): the enhanced code of a delivery reply whose hook gave none. */
const DATA_ENHANCED = '2.6.0';

/**
 * A chunk over the size limit is still read and dropped up to twice that limit, and at least up
 * to the default limit (a message a client sent without heeding SIZE is seldom larger).
 */
const OVERSIZE_DISCARD = DEFAULTS.dataSizeLimit;

/**
 * Starts handleDATAStream for a transaction whose body is about to arrive, if the handler has
 * it; returns where body segments go.
 */
function startStream(ctx: EngineContext, env: Envelope): ((segment: Buffer) => void) | undefined {
  const h = ctx.handler;
  if (h.handleDATAStream === undefined) return undefined;
  const body = new BodyStream(
    () => ctx.pauseInput(),
    () => ctx.resumeInput(),
  );
  const replies = dataReplies(ctx, env, () => h.handleDATAStream!(ctx.server, ctx.session, env, body.readable));
  if (Array.isArray(replies)) body.handlerSettled();
  else void replies.finally(() => body.handlerSettled());
  ctx.stream = { body, replies };
  return (segment) => body.push(segment);
}

function data(ctx: EngineContext, arg: string): void {
  if (needHelo(ctx)) return;
  const env = ctx.envelope;
  if (env.mailFrom === null) return ctx.reply(Reply.NEED_MAIL);
  if (env.rcptTos.length === 0) return ctx.reply(Reply.NEED_RCPT);
  if (arg !== '') return ctx.reply(Reply.DATA_SYNTAX);
  if (ctx.bdat !== null) return ctx.reply(Reply.DATA_AFTER_BDAT);
  if (env.mailOptions.body === 'BINARYMIME') return ctx.reply(Reply.BINARYMIME_NEEDS_BDAT);
  ctx.push(Reply.START_DATA);
  ctx.startDataTimer();
  ctx.readData(startStream(ctx, env), (body) => endOfData(ctx, body));
}

function endOfData(ctx: EngineContext, body: ReadBody): void | Promise<void> {
  const env = ctx.envelope;
  ctx.stopDataTimer(); // the body is in; the handler's time is not the client's
  // aiosmtpd reads the whole body before it refuses a line too long; the limit passed first decides.
  const refusal = body.lineTooLong ? Reply.DATA_LINE_TOO_LONG : body.overflowed ? Reply.DATA_TOO_BIG : null;
  if (refusal !== null) {
    ctx.resetTransaction(); // a streaming handler sees its stream fail
    return sendDeliveryReplies(ctx, env.rcptTos.map(() => refusal));
  }
  // server.envelope stays the hook's envelope until the reply; commands wait meanwhile.
  ctx.bdat = null;
  return andThen(deliver(ctx, env, body.content), () => ctx.resetTransaction());
}

/**
 * BDAT n [LAST] (RFC 3030): the n bytes that follow are read exactly, even when the command is
 * refused, so chunk bytes can never run as commands.
 */
function bdat(ctx: EngineContext, arg: string, refused: string | null): void {
  const m = /^([0-9]{1,15})(?: +(LAST))?$/i.exec(arg);
  if (m === null) {
    // Without a size we cannot know where the chunk ends: the rest cannot be trusted.
    ctx.push(Reply.BDAT_SYNTAX);
    return ctx.close();
  }
  const size = Number(m[1]);
  const last = m[2] !== undefined;
  const env = ctx.envelope;
  let refusal: string | null = refused;
  if (refusal === null && ctx.session.hostName === null) refusal = Reply.NEED_HELO;
  else if (refusal === null && env.mailFrom === null) refusal = Reply.NEED_MAIL;
  else if (refusal === null && env.rcptTos.length === 0) refusal = Reply.NEED_RCPT;
  if (ctx.dataSizeLimit > 0 && size > ctx.dataSizeLimit) return chunkTooBig(ctx, size, last, refusal);
  if (refusal !== null) {
    // RFC 3030 §4.2: chunks pipelined behind a failed one are discarded, not held against the
    // client (a streaming client has many in flight when the size limit hits).
    const why = refusal;
    return ctx.readChunk(size, new Body(0, () => {}), () => ctx.reply(why, false));
  }
  const body = (ctx.bdat ??= new Body(ctx.dataSizeLimit, startStream(ctx, env)));
  ctx.startDataTimer();
  ctx.readChunk(size, body, () => endOfChunk(ctx, body, size, last));
}

/**
 * A chunk that alone passes the size limit is refused before its bytes are read. A client sends
 * them anyway without waiting (RFC 3030 §2), and only their count tells where they end, so a
 * bounded amount is read and dropped and the session goes on; a larger one (`BDAT
 * 999999999999999`) would hold the connection for as long as the client likes: it is closed.
 */
function chunkTooBig(ctx: EngineContext, size: number, last: boolean, refusal: string | null): void {
  // LMTP answers a BDAT LAST once per recipient (RFC 2033 §4.2), refused or not.
  const count = refusal === null && last && ctx.lmtp ? ctx.envelope.rcptTos.length : 1;
  if (refusal === null) ctx.resetTransaction();
  for (let i = 0; i < count; i++) ctx.reply(refusal ?? Reply.DATA_TOO_BIG, false);
  if (size > Math.max(2 * ctx.dataSizeLimit, OVERSIZE_DISCARD)) return ctx.close();
  ctx.readChunk(size, new Body(0, () => {}), () => {});
}

function endOfChunk(ctx: EngineContext, body: Body, size: number, last: boolean): void | Promise<void> {
  if (last) ctx.stopDataTimer();
  const env = ctx.envelope;
  if (body.overflowed) {
    ctx.resetTransaction();
    // At LAST the message's fate is told per recipient (LMTP); before, the chunk fails.
    if (last) return sendDeliveryReplies(ctx, env.rcptTos.map(() => Reply.DATA_TOO_BIG));
    return ctx.reply(Reply.DATA_TOO_BIG);
  }
  if (!last) return ctx.reply(`250 2.0.0 ${size} octets received`);
  ctx.bdat = null;
  return andThen(deliver(ctx, env, body.content()), () => ctx.resetTransaction());
}

/** Hands a complete message to the handler and sends its reply (LMTP: one per recipient). */
function deliver(ctx: EngineContext, env: Envelope, content: Buffer): void | Promise<void> {
  let replies: string[] | Promise<string[]>;
  const stream = ctx.stream;
  if (stream !== null) {
    // Streamed: the handler has had the body all along; it answers once it has read the end.
    ctx.stream = null;
    stream.body.end();
    replies = stream.replies;
  } else {
    env.originalContent = content;
    env.content = ctx.decodeData ? content.toString('utf8') : content;
    const h = ctx.handler;
    const perRecipient = h.handleDATA === undefined && h.handleDeliver !== undefined;
    replies = perRecipient ? deliverEach(ctx, env) : dataReplies(ctx, env, h.handleDATA ? () => h.handleDATA!(ctx.server, ctx.session, env) : undefined);
  }
  return andThen(replies, (list) => delivered(ctx, list));
}

function delivered(ctx: EngineContext, replies: string[]): void {
  // Postfix's hard error limit counts errors "without delivering mail": a delivery resets it.
  if (replies.some((r) => r.startsWith('2'))) ctx.resetErrorCounts();
  sendDeliveryReplies(ctx, replies);
}

/**
 * LMTP sends one reply per recipient. SMTP has one reply per message: the first failure, else
 * the first reply, so a message is never answered 250 while a recipient's delivery failed.
 */
function sendDeliveryReplies(ctx: EngineContext, replies: string[]): void {
  // A refused delivery is no client error: it does not count toward maxErrors.
  if (ctx.lmtp) for (const reply of replies) ctx.reply(reply, false);
  else ctx.reply(replies.find((r) => !r.startsWith('2')) ?? replies[0]!, false);
}

/** handleDATA's reply as a list: one reply, or one per recipient when it returned a list. */
function dataReplies(
  ctx: EngineContext,
  env: Envelope,
  call: (() => MaybePromise<string | string[]>) | undefined,
): string[] | Promise<string[]> {
  const h = ctx.handler;
  const got: { list: string[] | null } = { list: null };
  const first = ctx.replyOf(() => {
    if (call !== undefined) {
      const pick = (v: string | string[]): string => {
        if (!Array.isArray(v)) return v;
        if (v.length !== env.rcptTos.length) throw new TypeError('handleDATA must return one reply per recipient');
        got.list = v;
        return v[0]!;
      };
      const r = call();
      return andThen(r, pick);
    }
    if (h.processMessage) {
      const r = h.processMessage(formatPeer(ctx.session.peer), env.mailFrom ?? '', env.rcptTos, env.content!);
      return andThen(r, (v) => v ?? Reply.DATA_OK);
    }
    return Reply.DATA_OK;
  }, true, DATA_ENHANCED);
  const each = (reply: string): string[] | Promise<string[]> => {
    const list = got.list;
    if (list === null) return env.rcptTos.map(() => reply);
    const replies = list.map((r) => ctx.replyOf(() => r, true, DATA_ENHANCED));
    return replies.every((r) => typeof r === 'string') ? (replies as string[]) : Promise.all(replies);
  };
  return andThen(first, each);
}

/** handleDeliver once per recipient, each failure its own. */
async function deliverEach(ctx: EngineContext, env: Envelope): Promise<string[]> {
  const replies: string[] = [];
  for (const rcpt of env.rcptTos) replies.push(await ctx.hook('handleDeliver', [rcpt], Reply.DATA_OK, DATA_ENHANCED));
  return replies;
}

export const DATA: BuiltinCommand = { syntax: 'DATA', run: data };

export const BDAT: BuiltinCommand = {
  syntax: 'BDAT chunk-size [LAST]',
  ehlo: () => ['CHUNKING', 'BINARYMIME'],
  framesInput: true,
  refuse: (ctx, arg, refusal) => bdat(ctx, arg, refusal),
  run: (ctx, arg) => bdat(ctx, arg, null),
};
