import test from 'ava';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { nextState, startAgent } from '../helpers/agent.js';
import { CHROMIUM, launchBrowser } from '../helpers/browser.js';
import { REPO } from '../helpers/cli.js';
import { get } from '../helpers/http.js';
import { createInstance } from '../helpers/instance.js';
import { isRoot } from '../helpers/root.js';

const TOKEN = 'timeline-test-token';

// Real skips (counted as such): the page is drawn by Debian's Chromium (package chromium) against a
// real agent, which needs root for namespaces, tc, bpf and cgroups.
const browserTest = isRoot && existsSync(CHROMIUM) ? test.serial : test.serial.skip;

/** The spans' states in order, with the transitional ones (pausing, waking) left out and repeats merged. */
function restingStates(states: string[]): string[] {
  const resting = states.filter((s) => s !== 'pausing' && s !== 'waking');
  return resting.filter((s, n) => n === 0 || resting[n - 1] !== s);
}

browserTest('the status page draws each instance’s last hour, the node at a glance, both wake phases and each instance’s reasons', async (t) => {
  const browser = (await launchBrowser(t))!;
  const inst = await createInstance(t);
  const web = inst.config({ idleTimeout: '10m', memory: 256 });
  // A second instance behind the same interface whose wakes fail: a failed span and a last error.
  const broken = { id: 'broken', address: '10.254.0.9:80', interface: web.interface, idleTimeout: '10m', memory: 128, runtime: { kind: 'fake', failResume: true } };
  const agent = await startAgent(t, { token: TOKEN, budget: { maxActive: 2, maxActiveMemory: 1024 }, instances: [web, broken] });
  const base = `http://${agent.address}`;
  const act = async (id: string, action: 'sleep' | 'wake') =>
    (await fetch(`${base}/api/instances/${id}/${action}`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } })).status;

  // A known sequence: web sleeps, a request wakes it, it sleeps and a request wakes it again;
  // broken sleeps and its wake fails.
  for (let n = 0; n < 2; n++) {
    t.is(await act('web', 'sleep'), 200);
    t.is((await get(`${inst.app.url}/`)).status, 200);
    await nextState(agent, 'web', 'running', 5000).catch(() => undefined);
    t.is(agent.detector.get('web')!.state, 'running');
    // The tc program's first-response record comes on its own: let it land before the next sleep
    // (a record that arrives after the next wake began is rightly not taken for that wake's).
    const until = Date.now() + 5000;
    while (agent.detector.get('web')!.lastFirstResponseMs === undefined && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10));
    t.not(agent.detector.get('web')!.lastFirstResponseMs, undefined, `wake ${n + 1}: first response seen`);
  }
  t.is(await act('web', 'sleep'), 200);
  t.is(await act('broken', 'sleep'), 200);
  t.is(await act('broken', 'wake'), 502);

  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(`${base}/`);
  // The first response is stamped by the tc program and reported as its own event: wait for both wakes' to show.
  await page.waitForFunction(() => [...document.querySelectorAll('#wakes tr[data-instance="web"] .first-response')].filter((td) => /ms$/.test(td.textContent ?? '')).length === 2, undefined, { timeout: 5000 });

  const spans = (id: string) => page.locator(`#timelines .timeline-row[data-id="${id}"] .span`).evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.state!));
  const webSpans = await spans('web');
  t.deepEqual(restingStates(webSpans), ['running', 'sleeping', 'running', 'sleeping', 'running', 'sleeping'], webSpans.join(' '));
  t.true(webSpans.includes('waking') || webSpans.includes('pausing'), 'transitions are drawn too');
  t.deepEqual(restingStates(await spans('broken')), ['running', 'sleeping', 'failed']);
  // Spans tile the bar: each starts where the one before ended, the last ends now.
  const bounds = await page.locator('#timelines .timeline-row[data-id="web"] .span').evaluateAll((els) => els.map((e) => [Number((e as HTMLElement).dataset.from), Number((e as HTMLElement).dataset.to)]));
  for (let n = 1; n < bounds.length; n++) t.is(bounds[n]![0], bounds[n - 1]![1]);
  t.regex(await page.locator('#timelines .timeline-row[data-id="web"] .timeline-label').innerText(), /2 wakes/);

  // The node at a glance: awake of the budget, instances, awake memory of the budget, memory freed by sleepers.
  const card = (key: string) => page.locator(`#summary [data-card="${key}"]`).innerText();
  t.regex(await card('awake'), /^0\s*\/ 2\s+awake of the budget/);
  t.regex(await card('instances'), /^2\b/);
  t.regex(await card('memory'), /^0\s*\/ 1024\s*MiB\s+awake memory of the budget/);
  t.regex(await card('freed'), /^0\s*MiB\s+freed by sleeping instances/, 'a frozen process keeps its memory');

  // Each instance's reason, last error and memory awake / asleep.
  const row = (id: string) => page.locator(`#rows tr[data-id="${id}"]`);
  t.regex(await row('web').locator('td.why').innerText(), /^asleep since \d\d:\d\d:\d\d$/);
  t.regex(await row('broken').locator('td.why').innerText(), /wake failed: fake runtime/);
  t.regex(await row('broken').locator('td.last-error').innerText(), /wake failed: fake runtime: resume failed on purpose/);
  t.regex(await row('web').locator('td.last-error').innerText(), /^–$/);
  t.regex(await row('web').locator('td.memory').innerText(), /256 MiB awake\s+256 MiB asleep/);

  // Wake latency: the page's distribution is the agent's histogram (2 web wakes; the failed one is no wake).
  const counts = async (box: string) => (await page.locator(`${box} .hist-row`).evaluateAll((els) => els.map((e) => Number((e as HTMLElement).dataset.count)))).reduce((a, b) => a + b, 0);
  t.is(await counts('#latency-wake'), 2, 'wake histogram on the page');
  t.is(await counts('#latency-first'), 2, 'first-response histogram on the page');
  const metrics = await (await fetch(`${base}/metrics`)).text();
  t.regex(metrics, /doze_wake_seconds_count\{instance="web",runtime="freezer"\} 2/);

  // Live: a wake by traffic shows without a reload, with its idle reason.
  t.is((await get(`${inst.app.url}/`)).status, 200);
  await row('web').and(page.locator('[data-state="running"]')).waitFor({ timeout: 5000 });
  await page.waitForFunction(() => /^idle /.test(document.querySelector('#rows tr[data-id="web"] td.why')?.textContent ?? ''), undefined, { timeout: 5000 });
  t.deepEqual(restingStates(await spans('web')).slice(-2), ['sleeping', 'running']);

  // Zoomed to the last minute, the same spans fill the bar: the sequence above took seconds.
  const widthOf = async () => (await page.locator('#timelines .timeline-row[data-id="web"] .span').evaluateAll((els) => els.map((e) => parseFloat((e as HTMLElement).style.width)))).reduce((a, b) => a + b, 0);
  const hourWidth = await widthOf();
  await page.selectOption('#window', '60000');
  t.regex(await page.locator('#timelines .axis').innerText(), /−1 min/);
  const minuteWidth = await widthOf();
  t.true(minuteWidth > hourWidth * 10, `${hourWidth}% of the hour, ${minuteWidth}% of the minute`);

  await mkdir(`${REPO}/artifacts`, { recursive: true });
  await page.screenshot({ path: `${REPO}/artifacts/status-page-timeline.png`, fullPage: true });
});
