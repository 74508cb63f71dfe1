/**
 * The web UI in a real browser: Debian's chromium driven by playwright-core (launched by path;
 * no browser is downloaded). Use (list, live updates, search, unread, delete, the message view's
 * tabs) and attack (hostile mail must never run script in the UI's origin, remote content stays
 * blocked until switched on). Skips without chromium, except under CI=true, where it fails.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type Page } from 'playwright-core';
import { captureRig, type CaptureRig } from './capture-util.js';

const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
const HAVE = existsSync(CHROMIUM);
const skip = !HAVE && !process.env['CI'] ? 'chromium not installed (/usr/bin/chromium)' : false;

let browser: Browser;
let rig: CaptureRig;
/** A loopback server that counts requests: remote images and any script's beacon land here. */
let beacon: Server;
const hits: string[] = [];
let beaconUrl = '';

before(async () => {
  if (skip !== false) return;
  if (!HAVE) assert.fail(`${CHROMIUM} missing: CI must install chromium (.ci/run)`);
  beacon = createServer((req, res) => {
    hits.push(req.url ?? '');
    res.writeHead(200, { 'Content-Type': 'image/gif' });
    res.end(Buffer.from('R0lGODlhAQABAAAAACwAAAAAAQABAAA=', 'base64'));
  });
  await new Promise<void>((resolve) => beacon.listen(0, '127.0.0.1', resolve));
  beaconUrl = `http://127.0.0.1:${(beacon.address() as AddressInfo).port}`;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'], timeout: 30_000 });
  rig = await captureRig();
});

after(async () => {
  if (skip !== false) return;
  await browser?.close();
  await rig?.[Symbol.asyncDispose]();
  await new Promise<void>((resolve) => beacon?.close(() => resolve()));
});

async function openUI(): Promise<{ page: Page; errors: string[] }> {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('dialog', (d) => void d.accept());
  await page.goto(`${rig.base}/`);
  await page.waitForSelector('#live.on');
  return { page, errors };
}

test('the list updates live, searches, shows unread, opens and deletes messages', { skip }, async () => {
  rig.capture.inbox.clear();
  const { page, errors } = await openUI();
  await rig.send({ from: '"Alice" <alice@example.com>', to: 'bob@example.com', subject: 'Hello Bob', text: 'plain body', html: '<p>html <b>body</b></p>' });
  await page.waitForSelector('#list tbody tr.unread >> text=Hello Bob');
  await rig.send({ from: 'carol@example.com', to: 'dan@example.com', subject: 'Invoice 42', text: 'pay', attachments: [{ filename: 'inv.txt', content: 'due' }] });
  await page.waitForSelector('#list tbody tr >> text=Invoice 42');
  assert.equal(await page.locator('#list tbody tr').count(), 2);

  await page.fill('#search', 'subject:invoice');
  await page.press('#search', 'Enter');
  await page.locator('#list tbody tr').nth(1).waitFor({ state: 'detached' });
  await page.fill('#search', '');
  await page.press('#search', 'Enter');
  await page.locator('#list tbody tr').nth(1).waitFor();

  await page.click('#list tbody tr >> text=Hello Bob');
  await page.waitForSelector('#message-view:not([hidden])');
  assert.match((await page.textContent('#message-head')) ?? '', /Alice <alice@example.com>/);
  const frame = page.frameLocator('#html-frame');
  assert.equal(await frame.locator('b').textContent(), 'body');
  await page.click('#tabs button[data-tab=text]');
  assert.equal((await page.textContent('#tab-text'))?.trim(), 'plain body');
  await page.click('#tabs button[data-tab=headers]');
  await page.waitForSelector('#tab-headers td >> text=Subject');
  await page.click('#tabs button[data-tab=raw]');
  await page.locator('#tab-raw', { hasText: 'Subject: Hello Bob' }).waitFor();
  assert.equal(rig.capture.inbox.find({ subject: 'Hello Bob' })!.read, true);

  await page.goto(`${rig.base}/#/`);
  await page.waitForSelector('#list tbody tr:not(.unread) >> text=Hello Bob');
  await page.click('#list tbody tr >> text=Invoice 42');
  await page.click('#tabs button[data-tab=attachments]');
  const link = page.locator('#tab-attachments a');
  assert.equal(await link.getAttribute('download'), 'inv.txt');
  await page.click('#delete-one');
  await page.locator('#list tbody tr').nth(1).waitFor({ state: 'detached' });
  assert.equal(rig.capture.inbox.count, 1);
  await page.click('#delete-all');
  await page.waitForSelector('#empty:not([hidden])');
  assert.equal(rig.capture.inbox.count, 0);
  assert.deepEqual(errors, []);
  await page.context().close();
});

test('hostile mail never runs script in the UI origin; remote content loads only when switched on', { skip }, async () => {
  rig.capture.inbox.clear();
  hits.length = 0;
  const { page, errors } = await openUI();
  await page.evaluate('window.pwned = 0');
  const html = [
    `<script>parent.pwned = 1; top.document.title = 'pwned'; new Image().src = '${beaconUrl}/script';</script>`,
    `<img src="x" onerror="parent.pwned = 2; new Image().src = '${beaconUrl}/onerror'">`,
    `<a id="js" href="javascript:parent.pwned = 3; new Image().src = '${beaconUrl}/jslink'">click me</a>`,
    `<meta http-equiv="refresh" content="0; url=${beaconUrl}/refresh">`,
    `<img id="remote" src="${beaconUrl}/remote.gif">`,
    `<svg onload="parent.pwned = 4"><script>parent.pwned = 5</script></svg>`,
    `<form action="${beaconUrl}/form"><button id="go">go</button></form>`,
    '<p>hostile body</p>',
  ].join('\n');
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" onload="fetch('${beaconUrl}/svg-attachment')"><script>fetch('${beaconUrl}/svg-script')</script></svg>`;
  await rig.send({
    from: '"<img src=x onerror=window.pwned=6>" <evil@example.com>',
    to: 'victim@example.com',
    subject: '<script>window.pwned=7</script><img src=x onerror="window.pwned=8">',
    html,
    attachments: [{ filename: 'evil.svg', content: svg, contentType: 'image/svg+xml' }],
  });
  await page.waitForSelector('#list tbody tr');
  assert.equal(await page.textContent('#list tbody tr td:nth-child(3) >> nth=0').then((t) => t?.startsWith('<script>window.pwned=7</script>')), true, 'the subject shows as text');
  await page.click('#list tbody tr');
  const frame = page.frameLocator('#html-frame');
  await frame.locator('text=hostile body').waitFor();
  await frame.locator('#js').click();
  await frame.locator('#go').click().catch(() => undefined);
  await page.waitForTimeout(500); // give any script that could run the chance to (not a timing assertion)
  assert.equal(await page.evaluate('window.pwned'), 0);
  assert.notEqual(await page.title(), 'pwned');
  assert.equal(hits.length, 0, `no script ran, no remote content loaded, no refresh, no form post: ${JSON.stringify(hits)}`);
  const frameOrigin = await page.evaluate<string>(`(() => {
    try { return String(document.getElementById('html-frame').contentWindow.document.domain); }
    catch (e) { return 'opaque: ' + e.name; }
  })()`);
  assert.match(frameOrigin, /^opaque/, 'the message document is not in the UI origin');

  // The SVG attachment: downloaded, and under a sandboxing CSP even when opened directly.
  const part = await page.evaluate<{ download: string | null; disposition: string | null; csp: string | null }>(`(async () => {
    const a = document.querySelector('#tab-attachments a');
    const res = await fetch(a.href);
    return { download: a.getAttribute('download'), disposition: res.headers.get('content-disposition'), csp: res.headers.get('content-security-policy') };
  })()`);
  assert.equal(part.download, 'evil.svg');
  assert.match(part.disposition ?? '', /^attachment/);
  assert.match(part.csp ?? '', /^sandbox/);
  const direct = await browser.newPage();
  const href = `${rig.base}${await page.locator('#tab-attachments a').getAttribute('href')}`;
  await direct.goto(href).catch(() => undefined); // a download aborts the navigation
  await direct.close();

  // Remote content, switched on: the image loads; scripts still do not run.
  await page.check('#remote');
  await frame.locator('#remote').waitFor();
  await frame.locator('text=hostile body').waitFor();
  await page.waitForTimeout(500);
  const later: string[] = hits.slice();
  assert.ok(later.includes('/remote.gif'), `remote image loaded after the switch: ${JSON.stringify(later)}`);
  assert.deepEqual(later.filter((h) => h !== '/remote.gif'), [], 'still no script, refresh or form');
  assert.equal(await page.evaluate('window.pwned'), 0);
  assert.deepEqual(errors, []);
  await page.context().close();
});
