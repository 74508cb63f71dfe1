/** XCLIENT (Postfix): a trusted proxy names the original client. */
import { isIPv6 } from 'node:net';
import { Reply } from '../replies.js';
import { Session } from '../session.js';
import { parseXclient } from '../xclient.js';
import type { BuiltinCommand } from './dispatch.js';

export const XCLIENT: BuiltinCommand = {
  syntax: 'XCLIENT attribute=value [...]',
  allowedBeforeStartTLS: true,
  // A trusted proxy may vouch for the client's login (XCLIENT LOGIN=).
  allowedBeforeAuth: true,
  // Only for the proxies the operator trusts; to anyone else it is no command at all.
  available: (ctx) => ctx.xclientAllowed,
  ehlo: () => 'XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT',
  run(ctx, arg) {
    if (ctx.inTransaction) return ctx.reply(Reply.XCLIENT_IN_TRANSACTION);
    const data = parseXclient(arg);
    if (data === null) return ctx.reply(Reply.XCLIENT_SYNTAX);
    const peer = { ...ctx.session.peer };
    if (data.ADDR) {
      peer.address = data.ADDR;
      peer.family = isIPv6(data.ADDR) ? 'IPv6' : 'IPv4';
    }
    if (data.PORT) peer.port = Number(data.PORT);
    // As after a new connection: the client greets again (Postfix sends a fresh 220).
    const { tls, proxyData } = ctx.session;
    const session = new Session(peer);
    session.tls = tls;
    session.proxyData = proxyData;
    session.xclient = data;
    if (data.LOGIN) {
      session.authenticated = true;
      session.authData = data.LOGIN;
    }
    ctx.replaceSession(session);
    ctx.push(`220 ${ctx.hostname} ${ctx.ident}`);
  },
};
