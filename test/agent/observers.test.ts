import { spawnInNetns } from '../helpers/node-netns.js';
import { inState, nextState, startAgent } from '../helpers/agent.js';
import { APP_PORT } from '../helpers/app.js';
import { get } from '../helpers/http.js';
import { createInstance } from '../helpers/instance.js';
import { createNetns } from '../helpers/netns.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';
import type { Teardown } from '../helpers/teardown.js';
import { sampleFreezerStates } from '../helpers/cgroup.js';

/*
 * Observers (config observers.fromSources, docs/observers.md): a Prometheus-like scraper in another
 * namespace, routed through the node to the instance, scrapes every 200 ms on a keep-alive
 * connection, as Prometheus does.
 */

interface Scrape {
  status: number;
  body: string;
  atMs: number;
  error?: string;
}

/** A scraper process in namespace `ns`: GET `url` every `everyMs` on a keep-alive pool; every answer recorded. */
function startScraper(t: Teardown, ns: string, url: string, everyMs: number): Scrape[] {
  // A request on a reused connection that is reset before any answer is retried once on a new one,
  // as Go's http.Transport (Prometheus's) does, and as node's docs show with req.reusedSocket.
  const script = `const http=require('http');const pool=new http.Agent({keepAlive:true,maxSockets:1});
const scrape=(at,retry)=>{const req=http.get(${JSON.stringify(url)},{agent:pool,timeout:1000},(r)=>{let b='';r.on('data',(c)=>b+=c);
r.on('end',()=>console.log(JSON.stringify({status:r.statusCode,body:b,atMs:at})))});req.on('timeout',()=>req.destroy(new Error('timeout')));
req.on('error',(e)=>{if(retry&&req.reusedSocket&&e.code==='ECONNRESET')return scrape(at,false);console.log(JSON.stringify({status:0,body:'',atMs:at,error:e.message}))})};
setInterval(()=>scrape(Date.now(),true),${everyMs});`;
  const child = spawnInNetns(ns, process.execPath, ['-e', script]);
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  const scrapes: Scrape[] = [];
  let rest = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    const lines = (rest + chunk).split('\n');
    rest = lines.pop()!;
    for (const line of lines) if (line) scrapes.push(JSON.parse(line) as Scrape);
  });
  return scrapes;
}

const requestsIn = (body: string) => Number(/demo_requests_total\{app="web"\} (\d+)/.exec(body)?.[1] ?? NaN);

rootTest.serial('a scraper declared as an observer neither keeps the instance awake nor wakes it; asleep, every scrape gets 200 and the app\'s last metrics; a real request still wakes it', async (t) => {
  const inst = await createInstance(t);
  const scraper = await createNetns(t);
  // Routed through the node both ways (the namespaces know only their own /30).
  await sh('ip', ['-n', inst.ns.name, 'route', 'add', 'default', 'via', inst.ns.hostIp]);
  await sh('ip', ['-n', scraper.name, 'route', 'add', 'default', 'via', scraper.hostIp]);
  const idleMs = 600;
  // Scraping before the agent starts, as Prometheus does when doze arrives on a node.
  const scrapes = startScraper(t, scraper.name, `http://${inst.ns.instanceIp}:${APP_PORT}/metrics`, 200);
  const until = Date.now() + 5000;
  while (!scrapes.some((s) => s.status === 200) && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 50));
  t.true(scrapes.some((s) => s.status === 200), `the scraper reaches the app: ${JSON.stringify(scrapes.slice(-1))}`);
  const startedAt = Date.now();
  const agent = await startAgent(t, { observers: { fromSources: [`${scraper.instanceIp}/32`] }, instances: [inst.config({ idleTimeout: `${idleMs}ms` })] });

  // Scrapes every 200 ms, a third of the idle timeout: counted, they would keep it awake.
  const sleptAfter = await nextState(agent, 'web', 'sleeping', idleMs + 3000);
  t.log(`slept ${sleptAfter.toFixed(0)} ms after the agent started, scraped every 200 ms`);
  const asleepAt = Date.now();
  await new Promise((resolve) => setTimeout(resolve, 1500)); // seven scrapes against the sleeper
  t.is(agent.detector.get('web')!.state, 'sleeping', 'no scrape woke it');
  t.is(agent.detector.get('web')!.wakes, 0);
  const beforeSleep = scrapes.filter((s) => s.atMs >= startedAt - 1000 && s.atMs < asleepAt - 300);
  const whileAsleep = scrapes.filter((s) => s.atMs >= asleepAt);
  t.true(beforeSleep.length >= 1, `${beforeSleep.length} scrapes reached the awake app`);
  t.true(whileAsleep.length >= 5, `${whileAsleep.length} scrapes while it slept`);
  t.deepEqual(whileAsleep.filter((s) => s.status !== 200).map((s) => `${s.status} ${s.error ?? s.body}`), [], 'every scrape while asleep got 200');
  const cached = whileAsleep[0]!.body;
  t.regex(cached, /^# HELP demo_requests_total/, "the app's own metrics");
  t.true(whileAsleep.every((s) => s.body === cached), 'the same body each time: the app as it fell asleep');
  t.true(requestsIn(cached) > requestsIn(beforeSleep[0]!.body), 'fetched just before the sleep, after the scrapes it had served');
  const metrics = await (await fetch(`http://${agent.address}/metrics`)).text();
  t.regex(metrics, /doze_instance_asleep\{instance="web"\} 1/);

  // A real request (not an observer's) wakes it; the scraper then reaches the app again.
  const running = nextState(agent, 'web', 'running', 3000);
  t.regex((await get(`${inst.app.url}/`, 3000)).body, /^hello from web/);
  await running;
  t.is(agent.detector.get('web')!.wakes, 1);
  const wokeAt = Date.now();
  const deadline = Date.now() + 2000;
  while (!scrapes.some((s) => s.atMs > wokeAt && s.status === 200 && requestsIn(s.body) > requestsIn(cached)) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  t.true(scrapes.some((s) => s.atMs > wokeAt && requestsIn(s.body) > requestsIn(cached)), 'awake, the scrapes reach the app (its count moved on)');
  await inState(agent, 'web', 'sleeping', idleMs + 2000);
});

rootTest.serial('an observer of a sleeping instance whose metrics could not be fetched gets a 503 that says so, at once', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, {
    // The node itself as the observer source: a local scraper's connection leaves from the veth's host address.
    observers: { fromSources: [inst.ns.hostIp] },
    instances: [inst.config({ idleTimeout: '300ms', metricsPath: '/status/404' })],
  });
  await inState(agent, 'web', 'sleeping', 3000);
  const answer = await get(`${inst.app.url}/metrics`, 2000);
  t.is(answer.status, 503);
  t.regex(answer.body, /doze: web is asleep and has no cached metrics \(GET \/status\/404 answered 404\)/);
  t.true(answer.ms < 500, `answered in ${answer.ms.toFixed(0)} ms`);
  t.is(agent.detector.get('web')!.state, 'sleeping', 'the observer did not wake it');
});

rootTest.serial('an IPv6 observer (a dual-stack instance scraped over IPv6) neither keeps it awake nor wakes it, and reads its last metrics while it sleeps', async (t) => {
  const inst = await createInstance(t, 'web', { dualStack: true });
  const url6 = `http://[${inst.ns.instanceIp6!}]:${APP_PORT}/metrics`;
  const agent = await startAgent(t, {
    // The node itself scrapes over IPv6: its connections leave from the veth's IPv6 address.
    observers: { fromSources: [`${inst.ns.hostIp6!}/128`] },
    instances: [inst.config({ idleTimeout: '400ms', addresses: [`[${inst.ns.instanceIp6!}]:${APP_PORT}`] })],
  });
  const scrapes: Array<{ status: number; body: string; atMs: number }> = [];
  let scraping = true;
  const loop = (async () => {
    while (scraping) {
      const atMs = Date.now();
      scrapes.push(await get(url6, 1000).then((r) => ({ ...r, atMs }), (e: Error) => ({ status: 0, body: e.message, atMs })));
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
  })();
  t.teardown(async () => {
    scraping = false;
    await loop;
  });
  await nextState(agent, 'web', 'sleeping', 3000);
  const asleepAt = Date.now();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  t.is(agent.detector.get('web')!.state, 'sleeping', 'no IPv6 scrape woke it');
  const whileAsleep = scrapes.filter((s) => s.atMs >= asleepAt);
  t.true(whileAsleep.length >= 4, `${whileAsleep.length} scrapes while it slept`);
  t.deepEqual(whileAsleep.filter((s) => s.status !== 200).map((s) => `${s.status} ${s.body}`), [], 'every scrape while asleep got 200');
  t.true(whileAsleep.every((s) => /^# HELP demo_requests_total/.test(s.body)), "the app's own metrics");
  const running = nextState(agent, 'web', 'running', 3000);
  t.regex((await get(`${inst.app.url}/`, 3000)).body, /^hello from web/);
  await running;
});

rootTest.serial('an observer\'s request in flight when the sleep is due postpones it: answered in full, never frozen under it', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { observers: { fromSources: [inst.ns.hostIp] }, instances: [inst.config({ idleTimeout: '300ms' })] });
  const sampling = sampleFreezerStates(inst.cgroup);
  const states = sampling.states;
  // Not activity (an observer's), so the idle timeout runs out while it is answered.
  const answer = await get(`${inst.app.url}/slow?ms=1200`, 5000);
  await sampling.stop();
  t.is(answer.status, 200);
  t.regex(answer.body, /slow answer after 1200 ms/);
  t.deepEqual([...states], ['THAWED'], 'never frozen while the observer waited');
  await inState(agent, 'web', 'sleeping', 3000);
});
