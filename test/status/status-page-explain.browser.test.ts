import test from 'ava';
import http from 'node:http';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import type { RehearsedEvent } from '../../agent/detector/detector.js';
import { startAgent } from '../helpers/agent.js';
import { CHROMIUM, launchBrowser } from '../helpers/browser.js';
import { REPO } from '../helpers/cli.js';
import { get } from '../helpers/http.js';
import { createInstance } from '../helpers/instance.js';
import { isRoot } from '../helpers/root.js';

// Real skips (counted as such): Debian's Chromium against a real agent (root: namespaces, tc, bpf, cgroups).
const browserTest = isRoot && existsSync(CHROMIUM) ? test.serial : test.serial.skip;

browserTest('the status page shows a dry run\'s would-sleep spans and why an awake instance is awake', async (t) => {
  const browser = (await launchBrowser(t))!;
  const rehearsed = await createInstance(t, 'rehearsed');
  const busy = await createInstance(t, 'busy');
  const agent = await startAgent(t, {
    instances: [rehearsed.config({ idleTimeout: '300ms', dryRun: true }), busy.config({ idleTimeout: '300ms', idlePolicy: 'requests' })],
  });
  const next = (kind: RehearsedEvent['kind']) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${kind} within 5 s`)), 5000);
      const listener = (e: RehearsedEvent) => {
        if (e.instance.id !== 'rehearsed' || e.kind !== kind) return;
        clearTimeout(timer);
        agent.detector.off('rehearsed', listener);
        resolve();
      };
      agent.detector.on('rehearsed', listener);
    });
  // Would sleep, a request would wake it, would sleep again.
  await next('would-sleep');
  const woke = next('would-wake');
  t.is((await get(`${rehearsed.app.url}/`)).status, 200);
  await woke;
  await next('would-sleep');
  // The other one is held by a slow request from the host.
  const req = http.get(`${busy.app.url}/slow?ms=10000`, { agent: false });
  req.on('response', (res) => res.resume());
  req.on('error', () => undefined); // destroyed at teardown
  t.teardown(() => void req.destroy());
  await new Promise((resolve) => setTimeout(resolve, 800));

  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(`http://${agent.address}/`);
  const spans = await page.locator('#timelines .timeline-row[data-id="rehearsed"] .span').evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.state!));
  t.is(spans.filter((s) => s === 'would-sleep').length, 2, spans.join(' '));
  t.false(spans.includes('sleeping'), 'never drawn as a real sleep');
  t.regex(await page.locator('#timelines .timeline-row[data-id="rehearsed"] .timeline-label').innerText(), /dry run, 1 would-be/);
  const row = (id: string) => page.locator(`#rows tr[data-id="${id}"]`);
  t.regex(await row('rehearsed').locator('td.why').innerText(), /^dry run: would be asleep since \d\d:\d\d:\d\d$/);
  t.regex(await row('rehearsed').innerText(), /dry run: 2× \d/);
  t.regex(await row('busy').locator('td.why').innerText(), new RegExp(`1 request\\(s\\) in flight from ${busy.ns.hostIp.replaceAll('.', '\\.')}:\\d+ \\([\\d.]+ m?s\\)`));
  t.regex(await page.locator('#summary [data-card="savings"]').innerText(), /asleep today/);
  t.is(agent.detector.get('rehearsed')!.sleeps, 0);

  await mkdir(`${REPO}/artifacts`, { recursive: true });
  await page.screenshot({ path: `${REPO}/artifacts/status-page-explain.png`, fullPage: true });
});
