/** The commands of no group: NOOP, QUIT, VRFY, EXPN, HELP. */
import { andThen } from '../hooks.js';
import { Reply } from '../replies.js';
import { unknownHelpTopic } from '../replies.js';
import { helpVerbs, type BuiltinCommand } from './dispatch.js';

/** A user name (any text without '@'), or a mailbox: local@domain, neither part empty. */
function verifiable(address: string): boolean {
  return !address.includes('@') || /^[^\s@]+@[^\s@]+$/.test(address);
}

export const NOOP: BuiltinCommand = {
  syntax: 'NOOP [string]',
  allowedBeforeStartTLS: true,
  allowedBeforeAuth: true,
  run(ctx, arg) {
    return andThen(ctx.hook('handleNOOP', [arg], Reply.NOOP_OK), (text) => ctx.reply(text));
  },
};

export const QUIT: BuiltinCommand = {
  syntax: 'QUIT',
  allowedBeforeStartTLS: true,
  allowedBeforeAuth: true,
  async run(ctx, arg) {
    if (arg !== '') return ctx.reply(Reply.QUIT_SYNTAX);
    ctx.push(await ctx.hook('handleQUIT', [], Reply.BYE));
    ctx.close();
  },
};

export const VRFY: BuiltinCommand = {
  syntax: 'VRFY <address>',
  async run(ctx, arg) {
    if (arg === '') return ctx.reply(Reply.VRFY_SYNTAX);
    const address = arg.replace(/^<(.*)>$/, '$1');
    if (!verifiable(address)) return ctx.reply(Reply.VRFY_BAD_ADDRESS);
    ctx.reply(await ctx.hook('handleVRFY', [address], Reply.VRFY_DEFAULT));
  },
};

export const EXPN: BuiltinCommand = {
  syntax: 'EXPN <mailing-list>',
  run: (ctx) => ctx.reply(Reply.EXPN_UNSUPPORTED),
};

export const HELP: BuiltinCommand = {
  syntax: 'HELP [command]',
  allowedBeforeAuth: true,
  ehlo: () => 'HELP',
  run(ctx, arg) {
    const verbs = helpVerbs(ctx);
    if (arg === '') return ctx.reply(`214 2.0.0 Supported commands: ${verbs.join(' ')}`);
    const verb = arg.toUpperCase();
    const command = verbs.includes(verb) ? ctx.table.get(verb) : undefined;
    // RFC 5321 §4.1.1.8: 214 with the syntax, or 504 for a topic the server does not know.
    if (command === undefined) return ctx.reply(unknownHelpTopic(verbs));
    ctx.reply(`214 2.0.0 Syntax: ${command.syntax}`);
  },
};
