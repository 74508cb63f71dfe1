/**
 * Message and AsyncMessage: abstract handlers that parse each received message and hand the
 * result to `handleMessage`, as aiosmtpd's do with Python's email package. Parsing is mailparser's
 * `simpleParser` (the nodemailer family's parser: charsets through iconv-lite, which decodes
 * windows-1252 correctly where Node 20's TextDecoder does not).
 */
import type { ParsedMail, SimpleParserOptions } from 'mailparser';
import type { Handler, SMTPServer } from '../handler.js';
import type { Envelope, Session } from '../session.js';
import { prepareMessage as rawWithTraceHeaders, traceValues } from './headers.js';

export type { ParsedMail, SimpleParserOptions };

export type SimpleParser = (input: Buffer, options?: SimpleParserOptions) => Promise<ParsedMail>;
let parserLoad: Promise<SimpleParser> | null = null;

/**
 * mailparser and its dependencies take 200-400 ms to import; loaded on the first message so
 * that `import 'tsmtpd'` and every CLI start without a Message handler do not pay for it.
 */
export function loadParser(): Promise<SimpleParser> {
  parserLoad ??= import('mailparser').then((m) => m.simpleParser as SimpleParser);
  return parserLoad;
}

/**
 * mailparser's defaults, changed where a step runs synchronously on the whole text and so stalls
 * every other connection while it runs (measured on Node 20): turning an HTML-only message into
 * text (about 1 s per MiB of HTML: capped at 256 KiB, a longer HTML part keeps `html` but gets no
 * `text`, and `textConversionError` says why) and building `textAsHtml` with links (2 s for a
 * 30 MiB text against 0.4 s without: off). Pass `{ skipTextToHtml: false }` to have it back.
 */
export const DEFAULT_PARSER_OPTIONS: Readonly<SimpleParserOptions> = {
  maxHtmlLengthToParse: 256 * 1024,
  skipTextToHtml: true,
};

export abstract class Message implements Handler {
  /** Passed to mailparser's simpleParser for every message: DEFAULT_PARSER_OPTIONS, then the caller's. */
  readonly parserOptions: SimpleParserOptions;

  constructor(parserOptions: SimpleParserOptions = {}) {
    this.parserOptions = { ...DEFAULT_PARSER_OPTIONS, ...parserOptions };
  }

  /** Parses the message and calls handleMessage; an error thrown there becomes the engine's 451. */
  async handleDATA(_server: SMTPServer, session: Session, envelope: Envelope): Promise<string> {
    const message = await this.prepareMessage(session, envelope);
    // Awaited in Message too: a subclass that returns a promise anyway gets its rejection
    // answered as a 451 instead of an unhandled rejection.
    await this.handleMessage(message);
    return '250 OK';
  }

  /**
   * aiosmtpd's prepare_message: the parsed message with X-Peer, X-MailFrom and X-RcptTo added.
   * `message.headers.get('x-peer')` (and `'x-mailfrom'`, `'x-rcptto'`) is always the server's value,
   * a string; copies of those headers that the client put in the message stay visible in
   * `message.headerLines`, after ours.
   */
  async prepareMessage(session: Session, envelope: Envelope): Promise<ParsedMail> {
    const simpleParser = await loadParser();
    const message = await simpleParser(rawWithTraceHeaders(session, envelope), this.parserOptions);
    // A forged header of the same name would otherwise turn the value into an array.
    const values = traceValues(session, envelope);
    message.headers.set('x-peer', values.peer);
    message.headers.set('x-mailfrom', values.mailFrom);
    message.headers.set('x-rcptto', values.rcptTo);
    return message;
  }

  /** Called once per accepted message. Throw to refuse it (the client gets a 451). */
  abstract handleMessage(message: ParsedMail): void;
}

/** Message for an asynchronous handleMessage, as aiosmtpd's AsyncMessage: it is awaited. */
export abstract class AsyncMessage extends Message {
  /** Awaited before the reply; a rejection refuses the message (the client gets a 451). */
  abstract override handleMessage(message: ParsedMail): Promise<void>;
}
