/**
 * LMTP (RFC 2033): what differs from SMTP. LHLO replaces HELO and EHLO, and after the body the
 * server answers once per accepted recipient, in RCPT order, so one mailbox's failure does not
 * fail the others.
 */
import { SMTP } from './smtp.js';

export class LMTP extends SMTP {
  override get lmtp(): boolean {
    return true;
  }

  protected override dispatch(verb: string, arg: string): void | Promise<void> {
    if (verb === 'HELO' || verb === 'EHLO') return this.unknown(verb);
    if (verb === 'LHLO') return this.ehlo(arg, 'LHLO');
    return super.dispatch(verb, arg);
  }

  protected override helpCommands(): string[] {
    return super.helpCommands().map((c) => (c === 'EHLO' ? 'LHLO' : c)).filter((c) => c !== 'HELO');
  }

  /** RFC 2033 §4.2: one reply per recipient that RCPT accepted, in order. */
  protected override sendDeliveryReplies(replies: string[]): void {
    for (const reply of replies) this.respond(reply, false);
  }
}
