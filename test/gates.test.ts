/**
 * The STARTTLS and AUTH gates against unknown verbs, over the wire: the greeting of the other
 * protocol (EHLO or HELO to LMTP, LHLO to SMTP) answers 500 5.5.1 as before the command table,
 * any other unknown verb is refused by the gate, and a known verb behind the gate gets 530.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Sink } from '../src/handlers/index.js';
import { RawClient, startServer } from './helpers.js';
import { makeCertsIfPossible, needCerts, type Certs } from './tls-util.js';

const certs: Certs | null = makeCertsIfPossible();
after(() => certs?.cleanup());

const cases: [name: string, lmtp: boolean, gate: 'tls' | 'auth', line: string, code: number, enhanced: string][] = [
  ['LMTP, STARTTLS required: EHLO', true, 'tls', 'EHLO client.example', 500, '5.5.1'],
  ['SMTP, STARTTLS required: LHLO', false, 'tls', 'LHLO client.example', 500, '5.5.1'],
  ['LMTP, STARTTLS required: an unknown verb', true, 'tls', 'FOO bar', 530, '5.7.0'],
  ['LMTP, STARTTLS required: MAIL', true, 'tls', 'MAIL FROM:<a@example.com>', 530, '5.7.0'],
  ['LMTP, AUTH required: HELO', true, 'auth', 'HELO client.example', 500, '5.5.1'],
  ['LMTP, AUTH required: EHLO', true, 'auth', 'EHLO client.example', 500, '5.5.1'],
  ['SMTP, AUTH required: LHLO', false, 'auth', 'LHLO client.example', 500, '5.5.1'],
  ['SMTP, AUTH required: an unknown verb', false, 'auth', 'FOO bar', 530, '5.7.0'],
];

for (const [name, lmtp, gate, line, code, enhanced] of cases) {
  test(`gates: ${name} answers ${code} ${enhanced}`, async (t) => {
    if (!needCerts(t, certs)) return;
    await using server = await startServer(new Sink(), {
      lmtp,
      tlsContext: { cert: certs.server.cert, key: certs.server.key },
      ...(gate === 'tls' ? { requireStartTLS: true } : { authRequired: true, authRequireTLS: false, authenticator: () => ({ success: true }) }),
    });
    const c = await RawClient.connect(server.port);
    try {
      assert.equal((await c.reply()).code, 220);
      const r = await c.cmd(line);
      assert.equal(r.code, code, r.text);
      assert.ok(r.text.startsWith(`${code} ${enhanced}`), r.text);
    } finally {
      c.close();
    }
  });
}
