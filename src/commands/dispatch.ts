/**
 * The command table as the connection reads it: each verb's line limit, how its line is
 * logged, HELP's list and EHLO's keywords, and the merge of a `commands` option over a
 * built-in table.
 */
import { isAscii, isUtf8 } from 'node:buffer';
import type { Command, CommandOverrides, EngineContext } from '../context.js';
import { BARE_LF, LINE_TOO_LONG, type FramedLine } from '../framing.js';
import { DEFAULTS } from '../options.js';
import { parseCommand } from '../parse.js';
import { Reply, tooManyCalls } from '../replies.js';

const FORBIDDEN_COMMANDS = ['CONNECT', 'GET', 'POST'];

/**
 * Verbs this table lacks that still pass the gates, to answer 500 as before the command table:
 * the greeting of the other protocol (EHLO or HELO to LMTP, LHLO to SMTP) tells the client it
 * speaks the wrong protocol, not that it must start TLS or authenticate first.
 */
const UNKNOWN_BEFORE_STARTTLS = new Set(['NOOP', 'EHLO', 'LHLO', 'STARTTLS', 'QUIT', 'XCLIENT']);
const UNKNOWN_BEFORE_AUTH = new Set(['AUTH', 'EHLO', 'LHLO', 'HELO', 'NOOP', 'RSET', 'QUIT', 'STARTTLS', 'HELP', 'XCLIENT']);

/** What a built-in command may say beyond the public Command. */
export interface BuiltinCommand extends Command<EngineContext> {
  /** Its argument tells where the next input ends (BDAT): a line too long to trust closes. */
  framesInput?: true;
  /** Runs instead of the plain refusal (530) before STARTTLS/AUTH, e.g. to consume a chunk. */
  refuse?(ctx: EngineContext, arg: string, refusal: string): void;
  /** The longest line for this verb, CRLF included, given the configured base. */
  lineLimit?(ctx: EngineContext, base: number): number;
  /** The line as logged, without secrets. */
  logAs?(arg: string): string;
}

export type CommandTable = ReadonlyMap<string, BuiltinCommand>;

/**
 * One command line, from framed bytes to its command's run: decoding (ASCII, or UTF-8 with
 * SMTPUTF8), the log line, forbidden verbs, the line limit, commandCallLimit, the STARTTLS and
 * AUTH gates. Returns the command's promise when it waits.
 */
export function runLine(ctx: EngineContext, framed: FramedLine): void | Promise<void> {
  if (framed === LINE_TOO_LONG) return ctx.reply(Reply.LINE_TOO_LONG);
  if (framed === BARE_LF) return ctx.reply(Reply.BARE_LF);
  let line: string;
  if (isAscii(framed)) {
    line = framed.toString('latin1');
  } else if (!ctx.enableSMTPUTF8) {
    return ctx.reply(Reply.NON_ASCII);
  } else if (!isUtf8(framed)) {
    return ctx.reply(Reply.BAD_UTF8);
  } else {
    line = framed.toString('utf8');
  }
  // NUL, bare CR and other controls have no place in a command (RFC 5321 §4.1.2).
  const parsed = /[\x00-\x08\x0a-\x1f\x7f]/.test(line) ? null : parseCommand(line);
  if (ctx.logsCommands) ctx.logCommand(logLine(ctx.table, line, parsed));
  if (parsed === null) return ctx.reply(Reply.BAD_SYNTAX);
  const { verb, arg } = parsed;
  if ((ctx.options.forbiddenCommands ?? FORBIDDEN_COMMANDS).includes(verb)) return ctx.shutdown(Reply.FORBIDDEN_COMMAND);
  const command = ctx.table.get(verb);
  if (framed.length + 2 > lineLimit(ctx, verb)) {
    // A BDAT line we cannot trust leaves the chunk's length unknown: nothing after it can be.
    if (command?.framesInput === true) return ctx.shutdown(Reply.LINE_TOO_LONG);
    return ctx.reply(Reply.LINE_TOO_LONG);
  }
  if (!ctx.spendCall(verb)) return ctx.shutdown(tooManyCalls(verb));
  // The gates come first: before STARTTLS/AUTH an unknown verb is refused like any other
  // (but for the few above).
  let refusal: string | null = null;
  if (ctx.options.requireStartTLS && ctx.session.tls === null && !(command?.allowedBeforeStartTLS ?? UNKNOWN_BEFORE_STARTTLS.has(verb))) {
    refusal = Reply.NEED_STARTTLS;
  } else if (ctx.options.authRequired && !ctx.session.authenticated && !(command?.allowedBeforeAuth ?? UNKNOWN_BEFORE_AUTH.has(verb))) {
    refusal = Reply.NEED_AUTH;
  }
  if (command === undefined || (refusal === null && !available(ctx, command))) {
    return refusal === null ? ctx.unknown(verb) : ctx.reply(refusal);
  }
  if (refusal === null) return command.run(ctx, arg);
  // A refused BDAT still consumes its chunk, so the chunk never runs as commands.
  return command.refuse !== undefined ? command.refuse(ctx, arg, refusal) : ctx.reply(refusal);
}

export function lineLimit(ctx: EngineContext, verb: string): number {
  const base = ctx.options.commandSizeLimit ?? DEFAULTS.commandSizeLimit;
  return ctx.table.get(verb)?.lineLimit?.(ctx, base) ?? base;
}

/**
 * A command line as logged: a verb the table does not know (perhaps credentials sent behind a
 * refused AUTH) shows its size only.
 */
export function logLine(table: CommandTable, line: string, parsed: { verb: string; arg: string } | null): string {
  const command = parsed === null ? undefined : table.get(parsed.verb);
  if (parsed === null || command === undefined) return `<unrecognized, ${line.length} characters>`;
  if (command.logAs !== undefined) return command.logAs(parsed.arg);
  return line.replace(/[\x00-\x1f\x7f]/g, '?');
}

function available(ctx: EngineContext, command: Command<EngineContext>): boolean {
  return command.available === undefined || command.available(ctx);
}

/** The verbs HELP lists: every command available on this connection, sorted. */
export function helpVerbs(ctx: EngineContext): string[] {
  const verbs: string[] = [];
  for (const [verb, command] of ctx.table) if (available(ctx, command)) verbs.push(verb);
  return verbs.sort();
}

/** The EHLO keywords in table order (HELP's last). */
export function ehloKeywords(ctx: EngineContext): string[] {
  const keywords: string[] = [];
  for (const command of ctx.table.values()) {
    if (command.ehlo === undefined || !available(ctx, command)) continue;
    const k = command.ehlo(ctx);
    if (k === null) continue;
    if (typeof k === 'string') keywords.push(k);
    else keywords.push(...k);
  }
  return keywords;
}

const VERB = /^[A-Za-z][A-Za-z0-9-]*$/;
const merged = new WeakMap<CommandTable, WeakMap<CommandOverrides, CommandTable>>();

/**
 * A built-in table with the `commands` option applied: added verbs go before HELP (whose EHLO
 * keyword stays last), replaced ones keep their place, null removes. Made once per option object.
 */
export function withOverrides(base: CommandTable, overrides: CommandOverrides | undefined): CommandTable {
  if (overrides === undefined) return base;
  let perBase = merged.get(base);
  if (perBase === undefined) merged.set(base, (perBase = new WeakMap()));
  const cached = perBase.get(overrides);
  if (cached !== undefined) return cached;
  const table = new Map(base);
  const help = table.get('HELP');
  table.delete('HELP');
  for (const [name, command] of Object.entries(overrides)) {
    if (!VERB.test(name)) throw new TypeError(`commands: ${JSON.stringify(name)} is not an SMTP verb`);
    const verb = name.toUpperCase();
    if (command === null) {
      table.delete(verb);
    } else {
      if (typeof command.run !== 'function' || typeof command.syntax !== 'string') {
        throw new TypeError(`commands.${name}: a command needs syntax and run(ctx, arg)`);
      }
      table.set(verb, command as BuiltinCommand);
    }
  }
  if (help !== undefined && !(Object.keys(overrides).some((k) => k.toUpperCase() === 'HELP'))) table.set('HELP', help);
  else if (table.has('HELP')) {
    const own = table.get('HELP')!;
    table.delete('HELP');
    table.set('HELP', own);
  }
  perBase.set(overrides, table);
  return table;
}
