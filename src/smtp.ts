/**
 * SMTP: the per-connection protocol engine (RFC 5321, with RFC 1870 SIZE, RFC 6152 8BITMIME,
 * RFC 2920 PIPELINING, RFC 2034/3463 ENHANCEDSTATUSCODES, RFC 6531 SMTPUTF8, RFC 3030 CHUNKING
 * and BINARYMIME). This file holds the command table (dispatch) and the commands of no other
 * group: HELO, EHLO, NOOP, QUIT, VRFY, EXPN, HELP. The layers below: security-commands.ts,
 * transaction-commands.ts, engine.ts.
 */
import type { MaybePromise } from './handler.js';
import { heloName } from './parse.js';
import { Reply, unknownHelpTopic } from './replies.js';
import { SYNTAX, isThenable } from './engine.js';
import { SecurityCommands } from './security-commands.js';

export { ATTACH } from './engine.js';

const COMMANDS = Object.keys(SYNTAX).filter((c) => c !== 'LHLO');

export class SMTP extends SecurityCommands {
  /**
   * Runs one command; LMTP and custom servers override it to add or replace verbs. A command
   * that finishes at once returns nothing; one that waits for a hook returns its promise.
   */
  protected dispatch(verb: string, arg: string): void | Promise<void> {
    switch (verb) {
      case 'HELO':
        return this.helo(arg);
      case 'EHLO':
        return this.ehlo(arg);
      case 'MAIL':
        return this.mail(arg);
      case 'RCPT':
        return this.rcpt(arg);
      case 'DATA':
        return this.data(arg);
      case 'BDAT':
        return this.bdat(arg);
      case 'RSET':
        return this.rset(arg);
      case 'NOOP':
        return this.respondWith(this.replyOf(() => this.hookNOOP(arg)));
      case 'QUIT':
        return this.quit(arg);
      case 'VRFY':
        return this.vrfy(arg);
      case 'EXPN':
        return this.respond(Reply.EXPN_NOT_IMPLEMENTED);
      case 'HELP':
        return this.help(arg);
      case 'STARTTLS':
        return this.startTLS(arg);
      case 'AUTH':
        return this.auth(arg);
      case 'XCLIENT':
        if (this.xclientAllowed()) return this.xclient(arg);
        return this.unknown(verb);
      default:
        return this.unknown(verb);
    }
  }

  private hookNOOP(arg: string): MaybePromise<string> {
    const h = this.handler;
    return h.handleNOOP ? h.handleNOOP(this, this.session, this.envelope, arg) : Reply.NOOP_OK;
  }

  private async helo(arg: string): Promise<void> {
    const name = heloName(arg);
    if (name === null) return this.respond(Reply.HELO_SYNTAX);
    this.resetTransaction();
    const before = this.session.hostName;
    const h = this.handler;
    const reply = await this.replyOf(
      () => (h.handleHELO ? h.handleHELO(this, this.session, this.envelope, name) : `250 ${this.hostname}`),
      false,
    );
    if (reply.startsWith('2')) {
      if (this.session.hostName === before) this.session.hostName = name; // unless the hook chose
      this.session.extendedSmtp = false;
    }
    this.respond(reply);
  }

  /** The EHLO keywords, in a stable order. */
  protected extensions(): string[] {
    const ext = [this.dataSizeLimit > 0 ? `SIZE ${this.dataSizeLimit}` : 'SIZE', '8BITMIME', 'PIPELINING'];
    if (this.enableSMTPUTF8) ext.push('SMTPUTF8');
    ext.push('ENHANCEDSTATUSCODES', 'CHUNKING', 'BINARYMIME');
    if (this.secureContext !== null && this.session.tls === null) ext.push('STARTTLS');
    const mechanisms = this.authMechanisms();
    if (mechanisms.size > 0 && (this.session.tls !== null || this.options.authRequireTLS === false)) {
      ext.push(`AUTH ${[...mechanisms.keys()].join(' ')}`);
    }
    if (this.xclientAllowed()) ext.push('XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT');
    ext.push('HELP');
    return ext;
  }

  protected async ehlo(arg: string, verb: 'EHLO' | 'LHLO' = 'EHLO'): Promise<void> {
    const name = heloName(arg);
    if (name === null) return this.respond(`501 5.5.4 Syntax: ${verb} hostname`);
    this.resetTransaction();
    let lines = [this.hostname, ...this.extensions()];
    const h = this.handler;
    if (h.handleEHLO) {
      try {
        let result = h.handleEHLO(this, this.session, this.envelope, name, lines);
        if (isThenable(result)) {
          this.flush();
          result = await result;
        }
        if (!Array.isArray(result) || result.length === 0 || !result.every((l) => typeof l === 'string')) {
          throw new TypeError('handleEHLO must return the list of EHLO lines');
        }
        // aiosmtpd's handlers return lines with their "250-" prefixes: accept those too.
        lines = result.map((l) => l.replace(/^250[ -]/, ''));
        if (lines.some((l) => /[\r\n]/.test(l))) throw new TypeError('EHLO lines must not contain CR or LF');
      } catch (error) {
        return this.respond(await this.exceptionReply(error));
      }
    }
    this.session.hostName = name;
    this.session.extendedSmtp = true;
    this.respond(lines.map((l, i) => `250${i === lines.length - 1 ? ' ' : '-'}${l}`).join('\r\n'));
  }

  private async quit(arg: string): Promise<void> {
    if (arg !== '') return this.respond(Reply.QUIT_SYNTAX);
    const h = this.handler;
    this.push(await this.replyOf(() => (h.handleQUIT ? h.handleQUIT(this, this.session, this.envelope) : Reply.BYE)));
    this.close();
  }

  private async vrfy(arg: string): Promise<void> {
    if (arg === '') return this.respond(Reply.VRFY_SYNTAX);
    const address = arg.replace(/^<(.*)>$/, '$1');
    const h = this.handler;
    this.respond(
      await this.replyOf(() =>
        h.handleVRFY ? h.handleVRFY(this, this.session, this.envelope, address) : Reply.VRFY_DEFAULT,
      ),
    );
  }

  protected helpCommands(): string[] {
    return COMMANDS;
  }

  private help(arg: string): void {
    const commands = this.helpCommands();
    if (arg === '') return this.respond(`214 2.0.0 Supported commands: ${commands.join(' ')}`);
    const verb = arg.toUpperCase();
    if (!commands.includes(verb)) return this.respond(unknownHelpTopic(commands));
    this.respond(`214 2.0.0 Syntax: ${SYNTAX[verb]}`);
  }
}
