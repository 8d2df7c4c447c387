import { inState, startAgent } from '../helpers/agent.js';
import { createInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';

const TOKEN = 'test-token-with-enough-entropy';

rootTest.serial('actions need the bearer token; unknown ids are 404; oversized bodies are refused', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { token: TOKEN, instances: [inst.config({ idleTimeout: '10m' })] });
  const base = `http://${agent.address}`;
  const post = (path: string, headers: Record<string, string> = {}, body?: string) =>
    fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });

  t.is((await post('/api/instances/web/sleep')).status, 401);
  t.is((await post('/api/instances/web/sleep', { authorization: 'Bearer wrong' })).status, 401);
  t.is((await post('/api/instances/web/sleep', { authorization: `Bearer ${TOKEN}x` })).status, 401);
  t.is(await inst.cgroup.freezerState(), 'THAWED', 'refused actions did nothing');

  t.is((await post('/api/instances/nope/sleep', { authorization: `Bearer ${TOKEN}` })).status, 404);
  t.is((await fetch(`${base}/api/instances/nope`)).status, 404);
  t.is((await post('/api/instances/web/dance', { authorization: `Bearer ${TOKEN}` })).status, 404);
  t.is((await post('/api/instances/web/sleep', { authorization: `Bearer ${TOKEN}` }, JSON.stringify({ pad: 'x'.repeat(64 * 1024) }))).status, 413);

  const slept = await post('/api/instances/web/sleep', { authorization: `Bearer ${TOKEN}` });
  t.is(slept.status, 200);
  t.is(((await slept.json()) as { state: string }).state, 'sleeping');
  t.is(await inst.cgroup.freezerState(), 'FROZEN');
  t.is((await post('/api/instances/web/sleep', { authorization: `Bearer ${TOKEN}` })).status, 409, 'sleeping twice is a conflict, not a crash');

  const woke = await post('/api/instances/web/wake', { authorization: `Bearer ${TOKEN}` });
  t.is(woke.status, 200);
  t.is(await inst.cgroup.freezerState(), 'THAWED');
});

rootTest.serial('the JSON API follows the contract and the metrics carry instance and runtime labels', async (t) => {
  const inst = await createInstance(t);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '200ms' })] });
  await inState(agent, 'web', 'sleeping', 3000);
  const list = (await (await fetch(`http://${agent.address}/api/instances`)).json()) as Array<Record<string, unknown>>;
  t.is(list.length, 1);
  for (const key of ['id', 'state', 'sleeps', 'wakes', 'lastWakeMs', 'idleForMs', 'checksAnswered']) t.true(key in list[0]!, key);
  t.is(list[0]!.state, 'sleeping');
  const metrics = await (await fetch(`http://${agent.address}/metrics`)).text();
  t.regex(metrics, /doze_instances\{state="sleeping"\} 1/);
  t.regex(metrics, /doze_sleeps_total\{instance="web",runtime="freezer"\} 1/);
  t.regex(metrics, /# TYPE doze_wake_seconds histogram/);
  t.regex(metrics, /process_cpu_seconds_total/);
  const page = await (await fetch(`http://${agent.address}/`)).text();
  t.regex(page, /<title>doze<\/title>/);
});
