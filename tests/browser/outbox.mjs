// Opens the dev outbox in headless Chromium after two sends and checks that both are
// listed, that one opens as rendered HTML (in the sandboxed iframe) and as text, and
// that a hostile payload shows as text and runs no script. Saves screenshots.
//
//   OUTBOX_URL=http://127.0.0.1:8080 SCREENSHOT_DIR=target/browser node outbox.mjs
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import assert from 'node:assert/strict';

const base = process.env.OUTBOX_URL ?? 'http://127.0.0.1:8080';
const shots = process.env.SCREENSHOT_DIR ?? 'target/browser';
mkdirSync(shots, { recursive: true });

async function send(body) {
  const response = await fetch(`${base}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return JSON.parse(text).messageId;
}

// Any script that ran would set a flag on its window and load an image from a
// `__pwned` URL (images are what the outbox's content policy lets through); the
// browser reports requests whichever frame makes them.
const hostile = '<script>window.__pwned = true; new Image().src = "/__pwned?script"</script><img src=x onerror="window.__pwned = true; this.src = \'/__pwned?onerror\'">';
const first = await send({ to: 'ann@example.com', type: 'SignIn', payload: { code: '135790', application: { name: 'Acme' } } });
const second = await send({ to: 'bob@example.com', type: 'SignIn', payload: { code: '246802', locale: 'fr', application: { name: hostile } } });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
  const requested = [];
  page.on('request', (r) => requested.push(r.url()));

  await page.goto(`${base}/outbox`);
  const rows = page.locator('tbody tr');
  assert.equal(await rows.count(), 2, 'both emails are listed');
  const listText = await page.locator('table').innerText();
  assert.match(listText, /ann@example\.com/);
  assert.match(listText, /bob@example\.com/);
  assert.ok(listText.includes('<script>'), 'the hostile name shows as text');
  await page.screenshot({ path: `${shots}/outbox-list.png`, fullPage: true });

  // The newest is listed first; open the first send (Ann's) from the list.
  await page.locator(`a[href="/outbox/${first}"]`).click();
  await page.waitForURL(`**/outbox/${first}`);
  const frame = page.frameLocator('iframe[title="HTML part"]');
  await frame.locator('body').waitFor();
  const html = await frame.locator('body').innerText();
  assert.ok(html.includes('135790'), 'the HTML part renders the code');
  assert.ok(html.includes('Acme'), 'the HTML part renders the branding');
  const text = await page.locator('pre.text-part').innerText();
  assert.ok(text.includes('135790'), 'the text part shows the code');
  assert.ok(!text.includes('<p'), 'the text part is text');
  await page.screenshot({ path: `${shots}/outbox-email.png`, fullPage: true });

  await page.goto(`${base}/outbox/${second}`);
  await page.frameLocator('iframe[title="HTML part"]').locator('body').waitFor();
  await page.waitForLoadState('networkidle');
  const pwned = await page.evaluate(() => window.__pwned === true);
  assert.equal(pwned, false, 'no script ran on the page');
  assert.ok(page.frames().some((f) => f !== page.mainFrame()), 'the email is in a frame');
  // The observer works: a request made on purpose is seen.
  await page.evaluate(() => { new Image().src = '/__observer-control'; });
  await page.waitForLoadState('networkidle');
  assert.ok(requested.some((u) => u.includes('/__observer-control')), 'requests are observed');
  const beacons = requested.filter((u) => u.includes('__pwned'));
  assert.deepEqual(beacons, [], 'no script ran in the email or the page');
  assert.deepEqual(dialogs, [], 'no dialogs');
  await page.screenshot({ path: `${shots}/outbox-hostile.png`, fullPage: true });
  console.log(`outbox browser check passed; screenshots in ${shots}/`);
} finally {
  await browser.close();
}
