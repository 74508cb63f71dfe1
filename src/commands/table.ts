/**
 * The SMTP and LMTP command tables. Their order is the EHLO keywords' order; HELP lists them
 * sorted. LMTP (RFC 2033) is SMTP with LHLO for HELO and EHLO (and per-recipient replies,
 * which the connection's `lmtp` flag gives).
 */
import type { CommandOverrides } from '../context.js';
import { AUTH } from './auth.js';
import { BDAT, DATA } from './body.js';
import { withOverrides, type BuiltinCommand, type CommandTable } from './dispatch.js';
import { EHLO, HELO, LHLO } from './greeting.js';
import { EXPN, HELP, NOOP, QUIT, VRFY } from './simple.js';
import { STARTTLS } from './starttls.js';
import { MAIL, RCPT, RSET } from './transaction.js';
import { XCLIENT } from './xclient.js';
import { XFORWARD } from './xforward.js';

const COMMON: Array<[string, BuiltinCommand]> = [
  ['MAIL', MAIL],
  ['RCPT', RCPT],
  ['DATA', DATA],
  ['BDAT', BDAT],
  ['RSET', RSET],
  ['NOOP', NOOP],
  ['QUIT', QUIT],
  ['VRFY', VRFY],
  ['EXPN', EXPN],
  ['STARTTLS', STARTTLS],
  ['AUTH', AUTH],
  ['XCLIENT', XCLIENT],
  ['XFORWARD', XFORWARD],
  ['HELP', HELP],
];

export const SMTP_COMMANDS: CommandTable = new Map([['HELO', HELO], ['EHLO', EHLO], ...COMMON]);
export const LMTP_COMMANDS: CommandTable = new Map([['LHLO', LHLO], ...COMMON]);

export function commandTable(lmtp: boolean, overrides: CommandOverrides | undefined): CommandTable {
  return withOverrides(lmtp ? LMTP_COMMANDS : SMTP_COMMANDS, overrides);
}
