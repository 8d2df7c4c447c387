import { mkdir } from 'node:fs/promises';
import { get } from '../helpers/http.js';
import { startAgent } from '../helpers/agent.js';
import { launchBrowser, noChromium } from '../helpers/browser.js';
import { REPO } from '../helpers/cli.js';
import { createInstance } from '../helpers/instance.js';
import { firstMissing, testIf } from '../helpers/needs.js';
import { noRoot } from '../helpers/root.js';

const TOKEN = 'page-test-token';
const browserTest = testIf(firstMissing(noRoot, noChromium));

browserTest.serial('the status page shows an instance fall asleep and wake without a reload; actions need the token', async (t) => {
  const browser = await launchBrowser(t);
  const inst = await createInstance(t);
  const agent = await startAgent(t, { token: TOKEN, instances: [inst.config({ idleTimeout: '1500ms' })] });
  const page = await browser.newPage();
  let loads = 0;
  page.on('load', () => loads++);
  await page.goto(`http://${agent.address}/`);
  const row = page.locator('tr[data-id="web"]');

  // Falls asleep, then wakes on traffic: the page follows without a reload.
  await row.and(page.locator('[data-state="sleeping"]')).waitFor({ timeout: 5000 });
  await get(`${inst.app.url}/`);
  await row.and(page.locator('[data-state="running"]')).waitFor({ timeout: 5000 });
  await page.locator('#timeline li', { hasText: 'sleeping → ' }).first().waitFor({ timeout: 5000 });
  t.is(loads, 1, 'no reload happened');

  // Actions: a sleeping instance stays asleep until someone wakes it, so this is deterministic.
  await row.and(page.locator('[data-state="sleeping"]')).waitFor({ timeout: 5000 });
  await page.locator('button[data-action="wake"][data-id="web"]').click();
  await page.locator('#message', { hasText: 'refused' }).waitFor({ timeout: 3000 });
  t.is(await inst.cgroup.freezerState(), 'FROZEN', 'without the token nothing happened');

  await page.fill('#token', TOKEN);
  await page.locator('button[data-action="wake"][data-id="web"]').click();
  await page.locator('#message', { hasText: 'wake: done' }).waitFor({ timeout: 3000 });
  t.is(await inst.cgroup.freezerState(), 'THAWED', 'with the token it woke');
  // The action's refresh and the timer's overlap: each transition is listed once.
  const byOperator = page.locator('#timeline li', { hasText: 'requested by operator' });
  await byOperator.nth(1).waitFor({ timeout: 3000 });
  const updated = await page.locator('#updated').textContent();
  await page.waitForFunction((before) => document.getElementById('updated')?.textContent !== before, updated, { timeout: 3000 });
  await page.waitForFunction((before) => document.getElementById('updated')?.textContent !== before, await page.locator('#updated').textContent(), { timeout: 3000 });
  t.is(await byOperator.count(), 2, 'sleeping → waking and waking → running, once each');

  await mkdir(`${REPO}/artifacts`, { recursive: true });
  await page.screenshot({ path: `${REPO}/artifacts/status-page.png`, fullPage: true });
});
