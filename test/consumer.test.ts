/**
 * The built package's types, as a strict user sees them: a consumer file compiled with
 * `--strict`, `exactOptionalPropertyTypes`, `noUncheckedIndexedAccess` and no skipLibCheck
 * against dist/*.d.ts (through the package's self-reference), and no `protected` member or
 * engine insides in those .d.ts files.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import { ROOT } from './cli-util.js';

const CONSUMER = `
import { Controller, LMTP, SMTP, SMTPError, type Command, type Context, type Handler, type MailOptions,
  type RcptOptions, type Session, type SessionData, type XClientData, type PeerCertificate } from 'tsmtpd';

type Counter = { mails: number };
const handler: Handler<Counter> = {
  handleMAIL(server, session, envelope, address, mailOptions: MailOptions) {
    session.data.mails = (session.data.mails ?? 0) + 1;
    const size: number | undefined = mailOptions.size;
    const extra: string | true | undefined = mailOptions.unknown?.['X-EXTRA'];
    // @ts-expect-error no index signature: a typo does not compile
    void mailOptions.sise;
    void [size, extra, server.hostname, envelope.mailFrom, address];
    if (address === '') throw new SMTPError(550, 'no null sender', '5.7.1');
    return '250 OK';
  },
  handleRCPT(_server, session: Session<Counter>, _envelope, _address, rcptOptions: RcptOptions) {
    const x: XClientData | null = session.xclient;
    const cert: PeerCertificate | null | undefined = session.tls?.peerCertificate;
    void [x?.ADDR, cert?.subject, rcptOptions.unknown];
    return '250 OK';
  },
};
const xping: Command = {
  syntax: 'XPING',
  allowedBeforeAuth: true,
  ehlo: () => 'XPING',
  run(ctx: Context) {
    const data: SessionData = ctx.session.data;
    void data;
    ctx.reply('250 2.0.0 PONG');
  },
};
const controller = new Controller(handler, { port: 0, commands: { XPING: xping, VRFY: null }, dataLineLimit: 0 });
const port: number = controller.port;
// @ts-expect-error read-only
controller.port = 1;
// @ts-expect-error read-only
controller.server = null;
// @ts-expect-error internal options are not public
void controller.connectionGate;
new SMTP(handler, { hostname: 'x' });
new LMTP({}, {});
void port;
`;

test('a strict consumer compiles against dist/*.d.ts', () => {
  const dir = join(ROOT, 'build', 'consumer');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'consumer.ts');
  writeFileSync(file, CONSUMER);
  const program = ts.createProgram([file], {
    strict: true,
    exactOptionalPropertyTypes: true,
    noUncheckedIndexedAccess: true,
    skipLibCheck: false,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    lib: ['lib.es2023.d.ts', 'lib.esnext.disposable.d.ts'],
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: ['node'],
  });
  const errors = ts.getPreEmitDiagnostics(program).map((d) => {
    const where = d.file === undefined ? '' : `${d.file.fileName}:${d.file.getLineAndCharacterOfPosition(d.start ?? 0).line + 1}: `;
    return `${where}TS${d.code} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
  });
  assert.deepEqual(errors, []);
});

test('the .d.ts files have no protected members and no connection insides', () => {
  const dist = join(ROOT, 'dist');
  const files = readdirSync(dist, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.d.ts'));
  assert.ok(files.includes('index.d.ts'));
  for (const f of files) {
    const text = readFileSync(join(dist, f), 'utf8');
    assert.doesNotMatch(text, /\bprotected\b/, f);
  }
  const smtp = readFileSync(join(dist, 'smtp.d.ts'), 'utf8');
  for (const inside of ['framer', 'bdatBody', 'pump', 'feedBody', 'errorCount', 'dispatch']) {
    assert.ok(!smtp.includes(inside), `smtp.d.ts shows ${inside}`);
  }
  const index = readFileSync(join(dist, 'index.d.ts'), 'utf8');
  assert.doesNotMatch(index, /connection\.js|INTERNAL/);
  // The public classes do not reach the Connection's declarations.
  for (const f of ['smtp.d.ts', 'lmtp.d.ts', 'controller.d.ts', 'handler.d.ts', 'context.d.ts']) {
    assert.doesNotMatch(readFileSync(join(dist, f), 'utf8'), /from '\.\/connection\.js'/, f);
  }
});
