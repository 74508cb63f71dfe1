/**
 * The mail transaction (RFC 5321 §3.3): MAIL, RCPT, DATA, BDAT (RFC 3030) and RSET, and the
 * message's delivery to the handler (handleDATA, handleDATAStream, handleDeliver).
 */
import { Body, ChunkReader, DataReader } from './framing.js';
import type { MaybePromise } from './handler.js';
import { DEFAULTS } from './options.js';
import { afterKeyword, parseParams, parsePath, parseSize, type EsmtpParam } from './parse.js';
import { Reply, SUCCESS_DEFAULT } from './replies.js';
import { formatPeer, type Envelope, type MailOptions, type RcptOptions } from './session.js';
import { BodyStream } from './body-stream.js';
import { decodeXtext } from './xclient.js';
import { Engine, isThenable, type ChunkInfo } from './engine.js';

function isAsciiString(s: string): boolean {
  return !/[^\x00-\x7f]/.test(s);
}

export abstract class TransactionCommands extends Engine {
  /**
   * Starts handleDATAStream for a transaction whose body is about to arrive, if the handler
   * has it; returns where body segments go.
   */
  private startStream(env: Envelope): ((segment: Buffer) => void) | undefined {
    const h = this.handler;
    if (h.handleDATAStream === undefined) return undefined;
    const body = new BodyStream(
      () => this.socket?.pause(),
      () => this.maybeResume(),
    );
    const replies = this.dataReplies(env, () => h.handleDATAStream!(this, this.session, env, body.readable));
    if (Array.isArray(replies)) body.handlerSettled();
    else void replies.finally(() => body.handlerSettled());
    this.stream = { body, replies };
    return (segment) => body.push(segment);
  }

  protected needHelo(): boolean {
    if (this.session.hostName !== null) return false;
    this.respond(Reply.NEED_HELO);
    return true;
  }

  /** MAIL and RCPT share their argument syntax, `FROM:<path> [params]`: the parts, or the error reply. */
  private pathAndParams(arg: string, verb: 'MAIL' | 'RCPT'): { address: string; params: EsmtpParam[] } | string {
    const mail = verb === 'MAIL';
    const esmtp = this.session.extendedSmtp;
    const syntax = mail ? (esmtp ? Reply.MAIL_SYNTAX_EXT : Reply.MAIL_SYNTAX) : esmtp ? Reply.RCPT_SYNTAX_EXT : Reply.RCPT_SYNTAX;
    const rest = afterKeyword(arg, mail ? 'FROM' : 'TO');
    if (rest === null) return syntax;
    const path = parsePath(rest, { allowNull: mail, allowPostmaster: !mail, utf8: this.enableSMTPUTF8 });
    if (path === 'utf8') return Reply.NEED_UTF8;
    if (path === 'syntax') return mail ? Reply.BAD_SENDER : Reply.BAD_ADDRESS;
    if (path.params !== '' && !esmtp) return syntax;
    const params = parseParams(path.params, this.enableSMTPUTF8);
    return params === null ? Reply.BAD_PARAMS : { address: path.address, params };
  }

  protected mail(arg: string): void | Promise<void> {
    if (this.needHelo()) return;
    if (this.inTransaction) return this.respond(Reply.NESTED_MAIL);
    const parsed = this.pathAndParams(arg, 'MAIL');
    if (typeof parsed === 'string') return this.respond(parsed);
    const { address, params } = parsed;
    const options: MailOptions = {};
    for (const { keyword, value } of params) {
      if (keyword === 'SIZE') {
        const size = parseSize(value);
        if (size === null) return this.respond(Reply.BAD_SIZE);
        if (this.dataSizeLimit > 0 && size > this.dataSizeLimit) return this.respond(Reply.SIZE_EXCEEDED);
        options.size = size;
      } else if (keyword === 'BODY') {
        const body = value?.toUpperCase();
        if (body !== '7BIT' && body !== '8BITMIME' && body !== 'BINARYMIME') return this.respond(Reply.BAD_BODY);
        options.body = body;
      } else if (keyword === 'AUTH' && this.authMechanisms().size > 0) {
        // RFC 4954 §5: the submitter's identity, xtext-encoded, or <> for unknown.
        const identity = value === null ? null : value === '<>' ? '<>' : decodeXtext(value);
        if (identity === null) return this.respond(Reply.BAD_PARAMS);
        options.auth = identity;
      } else if (keyword === 'SMTPUTF8' && this.enableSMTPUTF8) {
        if (value !== null) return this.respond(Reply.BAD_PARAMS);
        options.smtputf8 = true;
      } else if (this.options.acceptUnknownParameters) {
        options[keyword] = value ?? true;
      } else {
        return this.respond(Reply.PARAM_NOT_RECOGNIZED);
      }
    }
    if (!options.smtputf8 && !isAsciiString(address)) return this.respond(Reply.NEED_UTF8);
    const env = this.envelope;
    const h = this.handler;
    const reply = h.handleMAIL ? this.replyOf(() => h.handleMAIL!(this, this.session, env, address, options), true, SUCCESS_DEFAULT.MAIL) : Reply.MAIL_OK;
    if (typeof reply === 'string') return this.mailAnswered(env, address, options, params, reply);
    return reply.then((text) => this.mailAnswered(env, address, options, params, text));
  }

  private mailAnswered(env: Envelope, address: string, options: MailOptions, params: EsmtpParam[], reply: string): void {
    if (env !== this.envelope) return this.respond(reply); // the transaction was reset meanwhile
    if (reply.startsWith('2')) {
      env.mailFrom ??= address;
      env.mailOptions = options;
      env.mailParams = params.map(({ keyword, value }) => (value === null ? keyword : `${keyword}=${value}`));
      env.smtputf8 = options.smtputf8 === true;
    } else {
      env.mailFrom = null;
    }
    this.respond(reply);
  }

  protected rcpt(arg: string): void | Promise<void> {
    if (this.needHelo()) return;
    const env = this.envelope;
    if (env.mailFrom === null) return this.respond(Reply.NEED_MAIL);
    const parsed = this.pathAndParams(arg, 'RCPT');
    if (typeof parsed === 'string') return this.respond(parsed);
    const { address, params } = parsed;
    const options: RcptOptions = {};
    for (const { keyword, value } of params) {
      if (!this.options.acceptUnknownParameters) return this.respond(Reply.PARAM_NOT_RECOGNIZED);
      options[keyword] = value ?? true;
    }
    if (!env.smtputf8 && !isAsciiString(address)) return this.respond(Reply.NEED_UTF8);
    if (env.rcptTos.length >= (this.options.maxRecipients ?? DEFAULTS.maxRecipients)) {
      return this.respond(Reply.TOO_MANY_RECIPIENTS);
    }
    const before = env.rcptTos.length;
    const h = this.handler;
    const reply = h.handleRCPT ? this.replyOf(() => h.handleRCPT!(this, this.session, env, address, options), true, SUCCESS_DEFAULT.RCPT) : Reply.RCPT_OK;
    if (typeof reply === 'string') return this.rcptAnswered(env, address, options, before, reply);
    return reply.then((text) => this.rcptAnswered(env, address, options, before, text));
  }

  private rcptAnswered(env: Envelope, address: string, options: RcptOptions, before: number, reply: string): void {
    if (reply.startsWith('2') && env.rcptTos.length === before) {
      env.rcptTos.push(address);
      env.rcptOptions.push(options);
    }
    while (env.rcptOptions.length < env.rcptTos.length) env.rcptOptions.push({});
    this.respond(reply);
  }

  protected data(arg: string): void {
    if (this.needHelo()) return;
    const env = this.envelope;
    if (env.mailFrom === null) return this.respond(Reply.NEED_MAIL);
    if (env.rcptTos.length === 0) return this.respond(Reply.NEED_RCPT);
    if (arg !== '') return this.respond(Reply.DATA_SYNTAX);
    if (this.bdatBody !== null) return this.respond(Reply.DATA_AFTER_BDAT);
    if (env.mailOptions.body === 'BINARYMIME') return this.respond(Reply.BINARYMIME_NEEDS_BDAT);
    this.push(Reply.START_DATA);
    this.startDataTimer();
    this.reader = new DataReader({ sizeLimit: this.dataSizeLimit, onSegment: this.startStream(env) });
    const rest = this.framer.takeRest();
    if (rest.length > 0) this.feedBody(rest);
  }

  protected endOfData(body: DataReader): void | Promise<void> {
    const env = this.envelope;
    this.stopDataTimer(); // the body is in; the handler's time is not the client's
    if (body.overflowed) {
      this.resetTransaction(); // a streaming handler already saw its stream fail
      // LMTP: one 552 per recipient (RFC 2033 §4.2).
      return this.sendDeliveryReplies(env.rcptTos.map(() => Reply.DATA_TOO_BIG));
    }
    // server.envelope stays the hook's envelope until the reply; commands wait meanwhile.
    this.bdatBody = null;
    const pending = this.deliver(env, body);
    if (pending === undefined) return this.resetTransaction();
    return pending.then(() => this.resetTransaction());
  }

  /**
   * BDAT n [LAST] (RFC 3030): the n bytes that follow are read exactly, even when the command
   * is refused, so chunk bytes can never run as commands.
   */
  protected bdat(arg: string, refused: string | null = null): void {
    const m = /^([0-9]{1,15})(?: +(LAST))?$/i.exec(arg);
    if (m === null) {
      // Without a size we cannot know where the chunk ends: the rest cannot be trusted.
      this.push(Reply.BDAT_SYNTAX);
      return this.close();
    }
    const size = Number(m[1]);
    const env = this.envelope;
    let refusal: string | null = refused;
    if (refusal === null && this.session.hostName === null) refusal = Reply.NEED_HELO;
    else if (refusal === null && env.mailFrom === null) refusal = Reply.NEED_MAIL;
    else if (refusal === null && env.rcptTos.length === 0) refusal = Reply.NEED_RCPT;
    const body =
      refusal === null ? (this.bdatBody ??= new Body(this.dataSizeLimit, this.startStream(env))) : new Body(0, () => {});
    if (refusal === null) this.startDataTimer();
    this.chunk = new ChunkReader(size, body);
    this.chunkInfo = { size, last: m[2] !== undefined, refusal };
    this.feedChunk(this.framer.takeRest());
  }

  protected async endOfChunk(info: ChunkInfo): Promise<void> {
    // RFC 3030 §4.2: chunks pipelined behind a failed one are discarded, not held against the
    // client (a streaming client has many in flight when the size limit hits).
    if (info.refusal !== null) return this.respond(info.refusal, false);
    if (info.last) this.stopDataTimer();
    const body = this.bdatBody!;
    const env = this.envelope;
    if (body.overflowed) {
      this.resetTransaction();
      // At LAST the message's fate is told per recipient (LMTP); before, the chunk fails.
      if (info.last) return this.sendDeliveryReplies(env.rcptTos.map(() => Reply.DATA_TOO_BIG));
      return this.respond(Reply.DATA_TOO_BIG);
    }
    if (!info.last) return this.respond(`250 2.0.0 ${info.size} octets received`);
    this.bdatBody = null;
    await this.deliver(env, body);
    this.resetTransaction();
  }

  /** Hands a complete message to the handler and sends its reply (LMTP: one per recipient). */
  private deliver(env: Envelope, body: { content(): Buffer }): void | Promise<void> {
    let replies: string[] | Promise<string[]>;
    const stream = this.stream;
    if (stream !== null) {
      // Streamed: the handler has had the body all along; it answers once it has read the end.
      this.stream = null;
      stream.body.end();
      replies = stream.replies;
    } else {
      const content = body.content();
      env.originalContent = content;
      env.content = this.decodeData ? content.toString('utf8') : content;
      const h = this.handler;
      const perRecipient = h.handleDATA === undefined && h.handleDeliver !== undefined;
      replies = perRecipient ? this.perRecipient(env) : this.dataReplies(env);
    }
    if (Array.isArray(replies)) return this.delivered(replies);
    return replies.then((list) => this.delivered(list));
  }

  private delivered(replies: string[]): void {
    // Postfix's hard error limit counts errors "without delivering mail": a delivery resets it.
    if (replies.some((r) => r.startsWith('2'))) this.errorCount = this.unrecognizedCount = 0;
    this.sendDeliveryReplies(replies);
  }

  /**
   * SMTP has one reply per message: the first failure, else the first reply, so a message is
   * never answered 250 while a recipient's delivery failed (the client retries; nothing is lost).
   */
  protected sendDeliveryReplies(replies: string[]): void {
    // A refused delivery is no client error: it does not count toward maxErrors.
    this.respond(replies.find((r) => !r.startsWith('2')) ?? replies[0]!, false);
  }

  /** handleDATA's reply as a list: one reply, or one per recipient when it returned a list. */
  private dataReplies(
    env: Envelope,
    call: (() => MaybePromise<string | string[]>) | undefined = this.handler.handleDATA
      ? () => this.handler.handleDATA!(this, this.session, env)
      : undefined,
  ): string[] | Promise<string[]> {
    const h = this.handler;
    const got: { list: string[] | null } = { list: null };
    const first = this.replyOf(() => {
      if (call !== undefined) {
        const pick = (v: string | string[]): string => {
          if (!Array.isArray(v)) return v;
          if (v.length !== env.rcptTos.length) throw new TypeError('handleDATA must return one reply per recipient');
          got.list = v;
          return v[0]!;
        };
        const r = call();
        return isThenable(r) ? r.then(pick) : pick(r);
      }
      if (h.processMessage) {
        const r = h.processMessage(formatPeer(this.session.peer), env.mailFrom ?? '', env.rcptTos, env.content!);
        return isThenable(r) ? r.then((v) => v ?? Reply.DATA_OK) : (r ?? Reply.DATA_OK);
      }
      return Reply.DATA_OK;
    });
    const each = (reply: string): string[] | Promise<string[]> => {
      const list = got.list;
      if (list === null) return env.rcptTos.map(() => reply);
      const replies = list.map((r) => this.replyOf(() => r));
      return replies.every((r) => typeof r === 'string') ? (replies as string[]) : Promise.all(replies);
    };
    return typeof first === 'string' ? each(first) : first.then(each);
  }

  /** handleDeliver once per recipient, each failure its own. */
  private async perRecipient(env: Envelope): Promise<string[]> {
    const h = this.handler;
    const replies: string[] = [];
    for (const rcpt of env.rcptTos) {
      replies.push(await this.replyOf(() => h.handleDeliver!(this, this.session, env, rcpt)));
    }
    return replies;
  }

  protected rset(arg: string): void | Promise<void> {
    if (arg !== '') return this.respond(Reply.RSET_SYNTAX);
    this.resetTransaction();
    const h = this.handler;
    if (h.handleRSET === undefined) return this.respond(Reply.RSET_OK);
    return this.respondWith(this.replyOf(() => h.handleRSET!(this, this.session, this.envelope)));
  }

  /** The AUTH mechanisms offered (security-commands.ts); MAIL's AUTH= needs to know. */
  protected abstract authMechanisms(): Map<string, string>;
}
