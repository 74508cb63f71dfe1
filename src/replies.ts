/**
 * Every reply the engine sends, with its RFC 3463 enhanced status code, in one table.
 * Texts follow aiosmtpd's where a client or a test may look for them; codes follow the RFCs
 * where aiosmtpd's differ (DESIGN.md §3).
 */
export const Reply = {
  // 2xx
  OK: '250 2.0.0 OK',
  MAIL_OK: '250 2.1.0 OK',
  RCPT_OK: '250 2.1.5 OK',
  /** RFC 3463 X.6.0 (media), as RFC 2034 §9's example answers a message: see docs/concepts.md. */
  DATA_OK: '250 2.6.0 OK',
  RSET_OK: '250 2.0.0 OK',
  NOOP_OK: '250 2.0.0 OK',
  VRFY_DEFAULT: '252 2.1.5 Cannot VRFY user, but will accept message and attempt delivery',
  BYE: '221 2.0.0 Bye',
  START_DATA: '354 End data with <CR><LF>.<CR><LF>',

  // 4xx
  TIMEOUT: '421 4.4.2 Error: timeout exceeded',
  SHUTDOWN: '421 4.3.2 Service shutting down',
  TOO_MANY_UNRECOGNIZED: '421 4.7.0 Too many unrecognized commands, goodbye',
  TOO_MANY_ERRORS: '421 4.7.0 Too many errors, goodbye',
  TOO_MANY_CONNECTIONS: '421 4.7.0 Error: too many connections, try again later',
  DATA_TIMEOUT: '421 4.4.2 Error: message transfer took too long',
  FORBIDDEN_COMMAND: '421 4.7.0 Error: this is an SMTP server, goodbye',
  HANDLER_ERROR: '451 4.3.0 Requested action aborted: error in processing',
  TOO_MANY_AUTH_FAILURES: '421 4.7.0 Too many failed authentication attempts, goodbye',
  AUTH_TEMPORARY_FAILURE: '454 4.7.0 Temporary authentication failure',
  TOO_MANY_RECIPIENTS: '452 4.5.3 Error: too many recipients',

  // STARTTLS and AUTH
  READY_FOR_TLS: '220 2.0.0 Ready to start TLS',
  AUTH_OK: '235 2.7.0 Authentication successful',
  TLS_NOT_AVAILABLE: '502 5.5.1 Error: STARTTLS not available',
  STARTTLS_SYNTAX: '501 5.5.4 Syntax: STARTTLS',
  TLS_ALREADY_ACTIVE: '503 5.5.1 Error: TLS already active',
  NEED_STARTTLS: '530 5.7.0 Must issue a STARTTLS command first',
  REQUIRETLS_NEEDS_TLS: '530 5.7.10 REQUIRETLS needs a TLS session: issue STARTTLS first',
  NEED_AUTH: '530 5.7.0 Authentication required',
  AUTH_NOT_AVAILABLE: '502 5.5.1 Error: AUTH not available',
  AUTH_NEEDS_EHLO: '503 5.5.1 Error: send EHLO first',
  AUTH_NEEDS_TLS: '538 5.7.11 Encryption required for requested authentication mechanism',
  ALREADY_AUTHENTICATED: '503 5.5.1 Error: already authenticated',
  AUTH_IN_TRANSACTION: '503 5.5.1 Error: AUTH not allowed during a mail transaction',
  AUTH_SYNTAX: '501 5.5.4 Syntax: AUTH mechanism [initial-response]',
  AUTH_UNKNOWN_MECHANISM: '504 5.5.4 Unrecognized authentication type',
  AUTH_CANCELLED: '501 5.7.0 Authentication cancelled',
  AUTH_BAD_RESPONSE: '501 5.5.2 Error: cannot decode response',
  AUTH_FAILED: '535 5.7.8 Authentication credentials invalid',
  XCLIENT_SYNTAX: '501 5.5.4 Syntax: XCLIENT attribute=value [...]',
  XCLIENT_IN_TRANSACTION: '503 5.5.1 Error: XCLIENT not allowed during a mail transaction',
  XFORWARD_SYNTAX: '501 5.5.4 Syntax: XFORWARD attribute=value [...]',
  XFORWARD_IN_TRANSACTION: '503 5.5.1 Error: MAIL transaction in progress',
  XFORWARD_NOT_ALLOWED: '550 5.7.0 Error: insufficient authorization',

  // 5xx
  BAD_SYNTAX: '500 5.5.2 Error: bad syntax',
  LINE_TOO_LONG: '500 5.5.2 Error: command line too long',
  LINE_FAR_TOO_LONG: '421 4.7.0 Error: command line too long, closing',
  BARE_LF: '500 5.5.2 Error: command line must end with <CR><LF>',
  NON_ASCII: '500 5.5.2 Error: non-ASCII command (SMTPUTF8 is not enabled)',
  BAD_UTF8: '500 5.5.2 Error: invalid UTF-8 in command',
  HELO_SYNTAX: '501 5.5.4 Syntax: HELO hostname',
  EHLO_SYNTAX: '501 5.5.4 Syntax: EHLO hostname',
  MAIL_SYNTAX: '501 5.5.4 Syntax: MAIL FROM:<address>',
  MAIL_SYNTAX_EXT: '501 5.5.4 Syntax: MAIL FROM:<address> [SP <mail-parameters>]',
  RCPT_SYNTAX: '501 5.5.4 Syntax: RCPT TO:<address>',
  RCPT_SYNTAX_EXT: '501 5.5.4 Syntax: RCPT TO:<address> [SP <rcpt-parameters>]',
  DATA_SYNTAX: '501 5.5.4 Syntax: DATA',
  RSET_SYNTAX: '501 5.5.4 Syntax: RSET',
  QUIT_SYNTAX: '501 5.5.4 Syntax: QUIT',
  VRFY_SYNTAX: '501 5.5.4 Syntax: VRFY <address>',
  VRFY_BAD_ADDRESS: '501 5.1.3 Error: not a valid user name or mailbox',
  DATA_LINE_TOO_LONG: '500 5.5.2 Line too long',
  BAD_ADDRESS: '501 5.1.3 Error: malformed address',
  BAD_SENDER: '501 5.1.7 Error: malformed sender address',
  BAD_PARAMS: '501 5.5.4 Error: malformed parameters',
  BAD_SIZE: '501 5.5.4 Error: SIZE requires a decimal number',
  BAD_BODY: '501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME, BINARYMIME',
  BDAT_SYNTAX: '501 5.5.4 Syntax: BDAT chunk-size [LAST]',
  DATA_AFTER_BDAT: '503 5.5.1 Error: DATA not allowed after BDAT in one transaction',
  BINARYMIME_NEEDS_BDAT: '503 5.5.1 Error: BODY=BINARYMIME requires BDAT',
  EXPN_UNSUPPORTED: '502 5.5.1 EXPN not supported',
  NEED_HELO: '503 5.5.1 Error: send HELO first',
  NESTED_MAIL: '503 5.5.1 Error: nested MAIL command',
  NEED_MAIL: '503 5.5.1 Error: need MAIL command',
  NEED_RCPT: '503 5.5.1 Error: need RCPT command',
  NEED_UTF8: '553 5.6.7 Error: the address needs SMTPUTF8',
  PARAM_NOT_RECOGNIZED: '555 5.5.4 Error: MAIL FROM/RCPT TO parameter not recognized',
  SIZE_EXCEEDED: '552 5.3.4 Error: message size exceeds fixed maximum message size',
  DATA_TOO_BIG: '552 5.3.4 Error: message too big for system',
} as const;

/** "500 5.5.1 Error: command "X" not recognized", with the verb made safe to echo. */
export function unrecognized(verb: string): string {
  return `500 5.5.1 Error: command "${verb.replace(/[^\x21-\x7e]/g, '?').slice(0, 32)}" not recognized`;
}

/** Postfix's reply to an XFORWARD value its attribute does not allow; `name` is one of XFORWARD's own. */
export function xforwardBadValue(name: string): string {
  return `501 5.5.4 Bad XFORWARD ${name} syntax`;
}

export function tooManyCalls(verb: string): string {
  return `421 4.7.0 ${verb} sent too many times`;
}

/** RFC 5321 §4.1.1.8 via §4.2.4: a HELP topic the server does not know is a parameter it does not implement. */
export function unknownHelpTopic(commands: readonly string[]): string {
  return `504 5.5.4 HELP topic unknown; supported commands: ${commands.join(' ')}`;
}

/** RFC 3463 §3.1: the class default for a reply whose text carries no enhanced code. */
const CLASS_DEFAULT: Record<string, string> = { '2': '2.0.0', '4': '4.0.0', '5': '5.0.0' };
const REPLY_LINE = /^([2-5][0-9][0-9])(?:([ -])(.*))?$/s;
const ENHANCED = /^[245]\.[0-9]{1,3}\.[0-9]{1,3}(?: |$)/;
/** Codes that RFC 2034 leaves without an enhanced status code. */
const NO_ENHANCED = new Set(['220', '334', '354']);

/**
 * Turns a reply given by a handler (one line, or lines separated by CRLF or LF) into wire
 * form: every line carries the same code, continuation marks are set by the engine (a handler
 * cannot end a multi-line reply early or inject a line), and an enhanced status code is
 * inserted where it is missing (`enhancedDefault` when its class fits, as 2.1.0 for MAIL). Returns null for text that is not an SMTP reply.
 */
export function normalizeReply(text: string, enhanced: boolean, enhancedDefault?: string): string | null {
  if (text.length > CACHED_REPLY_MAX) return normalize(text, enhanced, enhancedDefault);
  const key = `${enhanced ? (enhancedDefault ?? '+') : '-'}|${text}`;
  let wire = normalized.get(key);
  if (wire === undefined) {
    wire = normalize(text, enhanced, enhancedDefault);
    if (normalized.size >= CACHED_REPLIES) normalized.clear();
    normalized.set(key, wire);
  }
  return wire;
}

/** A handler gives the same few replies over and over: their wire forms are kept (bounded). */
const normalized = new Map<string, string | null>();
const CACHED_REPLIES = 256;
const CACHED_REPLY_MAX = 512;

function normalize(text: string, enhanced: boolean, enhancedDefault: string | undefined): string | null {
  const lines = text.split(/\r?\n|\r/);
  while (lines.length > 1 && lines[lines.length - 1] === '') lines.pop();
  let code = '';
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = REPLY_LINE.exec(lines[i]!);
    if (m === null) return null;
    if (i === 0) code = m[1]!;
    else if (m[1] !== code) return null;
    let rest = m[3] ?? '';
    if (/[\x00-\x08\x0a-\x1f\x7f]/.test(rest)) return null;
    if (enhanced && !NO_ENHANCED.has(code)) {
      const given = ENHANCED.exec(rest);
      const dflt = enhancedDefault !== undefined && enhancedDefault[0] === code[0] ? enhancedDefault : CLASS_DEFAULT[code[0]!];
      // RFC 3463 §2: the class digit of the enhanced code is the reply's outcome. One that is
      // missing, or contradicts the reply code (`250 5.1.1`), gets the class default in front.
      if ((given === null || rest[0] !== code[0]) && dflt !== undefined) {
        rest = rest === '' ? dflt : `${dflt} ${rest}`;
      }
    }
    out.push(`${code}${i === lines.length - 1 ? ' ' : '-'}${rest}`);
  }
  return out.join('\r\n');
}
