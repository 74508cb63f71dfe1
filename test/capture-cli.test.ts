/** `tsmtpd -c Capture --http ...`: the dev mail catcher from the command line, over real sockets. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import nodemailer from 'nodemailer';
import { CliProcess, freePort, runCli } from './cli-util.js';
import { json } from './capture-util.js';

test('-c Capture --http: SMTP with AUTH accept-any, the API sees the mail and the user', async () => {
  const [smtpPort, httpPort] = [await freePort(), await freePort()];
  const cli = new CliProcess(['-n', '-c', 'Capture', '-l', `127.0.0.1:${smtpPort}`, '--http', `127.0.0.1:${httpPort}`, '--auth-accept-any', '--auth-allow-insecure', '--max-messages', '2', '--fault', 'RCPT/*@bad.example 550 5.1.1 No such user']);
  try {
    await cli.listening();
    await cli.until(() => /web UI and API on http:\/\/127\.0\.0\.1:\d+/.test(cli.stderr), 'the web UI line');
    const smtp = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort, secure: false, ignoreTLS: true, auth: { user: 'anyone', pass: 'anything' } });
    await assert.rejects(smtp.sendMail({ from: 'a@example.com', to: 'x@bad.example', subject: 'refused', text: 'x' }), /550 5\.1\.1 No such user/);
    for (let i = 0; i < 3; i++) await smtp.sendMail({ from: 'a@example.com', to: 'b@example.com', subject: `cli ${i}`, text: 'hello' });
    smtp.close();
    const list = await json<{ total: number; messages: Array<{ Subject: string; Username: string }> }>(`http://127.0.0.1:${httpPort}/api/v1/messages`);
    assert.equal(list.body.total, 2, '--max-messages pruned the oldest');
    assert.deepEqual(list.body.messages.map((m) => m.Subject), ['cli 2', 'cli 1']);
    assert.equal(list.body.messages[0]!.Username, 'anyone');
    cli.child.kill('SIGTERM');
    assert.equal((await cli.waitExit()).code, 0);
  } finally {
    await cli.stop();
  }
});

test('capture options are refused without -c Capture, and accept-any without TLS or --auth-allow-insecure', async () => {
  const sink = await runCli(['-n', '-c', 'Sink', '--http', '127.0.0.1:0']);
  assert.equal(sink.code, 2);
  assert.match(sink.stderr, /the capture options need -c Capture/);
  const insecure = await runCli(['-n', '-c', 'Capture', '--auth-accept-any']);
  assert.equal(insecure.code, 2);
  assert.match(insecure.stderr, /--auth-accept-any needs/);
  const badPort = await runCli(['-n', '-c', 'Capture', '--http', 'host:99999']);
  assert.equal(badPort.code, 2);
  const help = await runCli(['-h']);
  assert.match(help.stdout, /--http \[HOST:PORT\]/);
});
