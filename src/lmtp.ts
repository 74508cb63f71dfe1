/**
 * LMTP (RFC 2033): the SMTP connection with the LMTP command table. LHLO replaces HELO and
 * EHLO, and after the body the server answers once per accepted recipient, in RCPT order, so
 * one mailbox's failure does not fail the others.
 */
import { SMTP } from './smtp.js';

export class LMTP extends SMTP {
  override get lmtp(): boolean {
    return true;
  }
}
