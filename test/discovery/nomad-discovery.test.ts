import test, { type ExecutionContext } from 'ava';
import type { AnnotatedAllocation } from '../../agent/discovery/allocation-instance.js';
import { NomadClient, type NomadError } from '../../agent/nomad/nomad-client.js';
import { NomadDiscovery, type DiscoveryStatus, type NomadDiscoveryOptions } from '../../agent/discovery/nomad-discovery.js';
import { webJob } from '../doubles/nomad/fixtures.js';
import type { NomadDouble } from '../doubles/nomad/nomad-double.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';
import { until } from '../helpers/until.js';

const enabled = { 'doze.enabled': 'true' };

function startDiscovery(t: ExecutionContext, nomad: NomadDouble, options: Partial<NomadDiscoveryOptions> = {}, address = nomad.url) {
  const controller = new AbortController();
  const log: string[] = [];
  const added: AnnotatedAllocation[] = [];
  const statuses: DiscoveryStatus[] = [];
  const errors: NomadError[] = [];
  const discovery = new NomadDiscovery(new NomadClient({ address }), {
    nodeId: 'n1',
    signal: controller.signal,
    minBackoffMs: 20,
    maxBackoffMs: 100,
    onInstance: (i) => {
      added.push(i);
      log.push(`+${i.allocId}`);
    },
    onRemove: (allocId, reason) => log.push(`-${allocId} (${reason})`),
    onInvalid: (allocId, reason) => log.push(`!${allocId} ${reason}`),
    onStatus: (s) => statuses.push(s),
    onError: (e) => errors.push(e),
    ...options,
  });
  const running = discovery.run();
  t.teardown(async () => {
    controller.abort();
    await running;
  });
  const waitFor = (predicate: () => boolean, what: string, timeoutMs = 3000) => until(what, predicate, { timeoutMs, everyMs: 5, detail: () => `log: ${log.join(' | ')}` });
  return { discovery, log, added, statuses, errors, until: waitFor };
}

test('an allocation placed on the node becomes a managed instance in well under a second', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob({ groupMeta: enabled }));
  const d = startDiscovery(t, nomad);
  await d.until(() => d.statuses.some((s) => s.connected && s.source === 'stream'), 'the stream');
  const started = performance.now();
  const alloc = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1', bridgeAddress: '172.26.64.20' });
  await d.until(() => d.added.length === 1, 'the instance', 1000);
  const took = performance.now() - started;
  t.true(took < 1000, `took ${took.toFixed(1)} ms`);
  t.log(`allocation → instance in ${took.toFixed(1)} ms`);
  t.like(d.added[0], { allocId: alloc.ID, address: '172.26.64.20:8080', mode: 'pause' });
});

test('allocations already on the node when discovery starts are picked up from the list', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob({ groupMeta: enabled }));
  const here = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' });
  nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'elsewhere' });
  const d = startDiscovery(t, nomad);
  await d.until(() => d.added.length === 1, 'the instance');
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.deepEqual(d.log, [`+${here.ID}`]);
  const stream = nomad.requests.find((r) => r.path === '/v1/event/stream')!;
  t.is(Number(stream.query.get('index')), (here.ModifyIndex as number) + 1, 'the stream starts right after the list');
  t.is(stream.query.get('namespace'), '*');
});

test('a stopped allocation is removed; unmanaged and other nodes\' allocations are left alone', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob({ groupMeta: enabled }));
  nomad.registerJob(webJob({ id: 'plain' }));
  const d = startDiscovery(t, nomad);
  await d.until(() => d.statuses.some((s) => s.source === 'stream'), 'the stream');
  const managed = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' });
  nomad.addAllocation({ jobId: 'plain', group: 'web', nodeId: 'n1' });
  nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n2' });
  await d.until(() => d.added.length === 1, 'the managed instance');
  nomad.stopAllocation(managed.ID as string);
  await d.until(() => d.log.length === 2, 'the removal');
  t.deepEqual(d.log, [`+${managed.ID}`, `-${managed.ID} (allocation is stop/running)`]);
  t.deepEqual(d.discovery.instances(), []);
});

test('a stream dropped mid-way resumes from its index: an allocation placed meanwhile is not missed', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob({ groupMeta: enabled }));
  const d = startDiscovery(t, nomad);
  const first = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' });
  await d.until(() => d.added.length === 1, 'the first instance');
  nomad.dropEventStreams();
  const second = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' });
  nomad.stopAllocation(first.ID as string);
  await d.until(() => d.log.length === 3, 'the missed changes');
  // The re-list after the reconnect may see them before the replayed events do.
  t.deepEqual(d.log.slice(0, 1), [`+${first.ID}`]);
  t.true(d.log.includes(`+${second.ID}`));
  t.true(d.log.some((l) => new RegExp(`^-${first.ID} \\(allocation is stop/(running|complete)\\)$`).test(l)));
});

test('Nomad down: known instances stay, the status says so, and discovery reconnects', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob({ groupMeta: enabled }));
  const alloc = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' });
  const d = startDiscovery(t, nomad);
  await d.until(() => d.added.length === 1 && d.statuses.at(-1)?.source === 'stream', 'the instance');
  // Every stream attempt fails for a while: a dropped connection, then 503s.
  for (let i = 0; i < 5; i++) nomad.injectOnce('GET', '/v1/event/stream', { status: 503, body: 'No cluster leader' });
  nomad.dropEventStreams();
  await d.until(() => d.statuses.at(-1)?.connected === false && d.errors.length >= 3, 'the outage');
  t.deepEqual(d.discovery.instances().map((i) => i.allocId), [alloc.ID]);
  t.deepEqual(d.log, [`+${alloc.ID}`], 'nothing removed while Nomad is away');
  await d.until(() => d.statuses.at(-1)?.connected === true, 'the reconnection');
  const later = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' });
  await d.until(() => d.added.length === 2, 'an instance after the outage');
  t.is(d.added[1]!.allocId, later.ID as string);
});

test('an event stream Nomad refuses falls back to blocking queries', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob({ groupMeta: enabled }));
  nomad.injectOnce('GET', '/v1/event/stream', { status: 403, body: 'Permission denied' });
  const d = startDiscovery(t, nomad);
  await d.until(() => d.statuses.at(-1)?.source === 'blocking' && d.statuses.at(-1)!.connected, 'the fallback');
  const alloc = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' });
  await d.until(() => d.added.length === 1, 'the instance');
  nomad.stopAllocation(alloc.ID as string);
  await d.until(() => d.log.length === 2, 'the removal');
  t.is(d.log[0], `+${alloc.ID}`);
  // A blocking read may see the stop and the completion together.
  t.regex(d.log[1]!, new RegExp(`^-${alloc.ID} \\(allocation is stop/(running|complete)\\)$`));
});

test('a badly annotated allocation is reported, not managed; malformed answers do not crash discovery', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob({ groupMeta: { ...enabled, 'doze.mode': 'hibernate' } }));
  nomad.registerJob(webJob({ id: 'ok', groupMeta: enabled }));
  const d = startDiscovery(t, nomad);
  await d.until(() => d.statuses.some((s) => s.source === 'stream'), 'the stream');
  const bad = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' });
  await d.until(() => d.log.length === 1, 'the report');
  t.deepEqual(d.log, [`!${bad.ID} group "web": doze.mode: "hibernate" is not one of snapshot, pause, scale`]);
  nomad.writeToStreams('{"Index": "twelve"}\n');
  const good = nomad.addAllocation({ jobId: 'ok', group: 'web', nodeId: 'n1' });
  await d.until(() => d.added.length === 1, 'the good instance');
  t.is(d.added[0]!.allocId, good.ID as string);
  t.true(d.errors.some((e) => e.code === 'E_NOMAD_RESPONSE'));
});

test('Nomad ≥ 1.11.2 refuses a stream with 200 and an empty body: discovery falls back, says why, and tries the stream again', async (t) => {
  const nomad = await startNomadDouble(t, { acl: { reader: ['node:read'] } });
  nomad.registerJob(webJob({ groupMeta: enabled }));
  const controller = new AbortController();
  const added: AnnotatedAllocation[] = [];
  const statuses: DiscoveryStatus[] = [];
  const discovery = new NomadDiscovery(new NomadClient({ address: nomad.url, token: 'reader' }), {
    nodeId: 'n1',
    signal: controller.signal,
    minBackoffMs: 10,
    maxBackoffMs: 40,
    streamRetryMs: 300,
    onInstance: (i) => added.push(i),
    onRemove: () => undefined,
    onStatus: (s) => statuses.push(s),
  });
  const running = discovery.run();
  t.teardown(async () => {
    controller.abort();
    await running;
  });
  const until = async (predicate: () => boolean, what: string) => {
    const deadline = Date.now() + 6000;
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(statuses.at(-1))}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  };
  await until(() => statuses.at(-1)?.source === 'blocking' && statuses.at(-1)!.connected, 'the fallback');
  t.regex(statuses.at(-1)!.fallback ?? '', /closed before its first heartbeat 3 times in a row.*read-job/);
  t.true(nomad.requests.filter((r) => r.path === '/v1/event/stream').length >= 3);
  // Blocking queries still find new allocations.
  const alloc = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' });
  await until(() => added.some((i) => i.allocId === alloc.ID), 'the instance by blocking query');
  // The token is fixed: the next stream attempt is accepted and the fallback reason goes.
  nomad.setToken('reader', ['node:read', 'read-job']);
  await until(() => statuses.at(-1)?.source === 'stream' && statuses.at(-1)!.connected, 'the stream again');
  t.is(statuses.at(-1)!.fallback, undefined);
  const later = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' });
  await until(() => added.some((i) => i.allocId === later.ID), 'an instance from the stream');
});

test('events evicted from Nomad\'s small buffer while disconnected are made good by the re-list after the reconnect', async (t) => {
  const nomad = await startNomadDouble(t, { eventBufferSize: 2 });
  nomad.registerJob(webJob({ groupMeta: enabled }));
  const d = startDiscovery(t, nomad);
  const first = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' });
  await d.until(() => d.added.length === 1, 'the first instance');
  nomad.dropEventStreams();
  // Before the agent reconnects: more changes than the buffer holds.
  const placed = [0, 1, 2].map(() => nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' }).ID as string);
  nomad.stopAllocation(first.ID as string);
  await d.until(() => placed.every((id) => d.added.some((i) => i.allocId === id)) && d.log.some((l) => l.startsWith(`-${first.ID as string}`)), 'every change, evicted or not');
  t.deepEqual(d.discovery.instances().map((i) => i.allocId).sort(), [...placed].sort());
});

test('a new event broker (leader change) loses the buffer: the re-list after the reconnect finds what it lost', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob({ groupMeta: enabled }));
  const d = startDiscovery(t, nomad);
  const first = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' });
  await d.until(() => d.added.length === 1, 'the first instance');
  nomad.dropEventStreams();
  const second = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' });
  nomad.newBroker();
  await d.until(() => d.added.some((i) => i.allocId === second.ID), 'the allocation placed before the new broker');
  t.deepEqual(d.discovery.instances().map((i) => i.allocId).sort(), [first.ID as string, second.ID as string].sort());
});

test('a managed allocation whose address changes is managed again at the new address; an in-place restart re-manages it', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob({ groupMeta: enabled }));
  const d = startDiscovery(t, nomad);
  const alloc = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1', bridgeAddress: '172.26.64.30' });
  await d.until(() => d.added.length === 1, 'the instance');
  // An unrelated update (a client heartbeat-ish ModifyIndex bump) changes nothing.
  nomad.updateAllocation(alloc.ID as string, { ClientDescription: 'Tasks are running' });
  nomad.updateAllocation(alloc.ID as string, { NetworkStatus: { InterfaceName: 'eth0', Address: '172.26.64.31', AddressIPv6: '', DNS: null } });
  await d.until(() => d.added.length === 2, 'the new address');
  t.is(d.added[1]!.address, '172.26.64.31:8080');
  nomad.updateAllocation(alloc.ID as string, { TaskStates: { app: { State: 'running', Failed: false, Restarts: 1, Events: null } } });

  await d.until(() => d.log.some((l) => l.includes('restarted in place')) && d.added.length === 3, 'the re-managed instance');
  t.deepEqual(d.log.slice(-2), [`-${alloc.ID as string} (a task of the allocation restarted in place)`, `+${alloc.ID as string}`]);
});

test('an allocation in a namespace created after the stream connected (outside its namespace=*) is found by the periodic re-list', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob({ groupMeta: enabled }));
  const d = startDiscovery(t, nomad, { relistMs: 200 });
  await d.until(() => d.statuses.some((s) => s.connected && s.source === 'stream'), 'the stream');
  nomad.registerJob(webJob({ id: 'late', namespace: 'later', groupMeta: enabled }));
  const alloc = nomad.addAllocation({ jobId: 'late', group: 'web', namespace: 'later', nodeId: 'n1' });
  await d.until(() => d.added.some((i) => i.allocId === alloc.ID), 'the instance from the re-list', 3000);
  t.is(d.added.find((i) => i.allocId === alloc.ID)!.namespace, 'later');
});

test('a Killing, Restart Signaled or Signaling event of a live allocation\'s task is said once, as it arrives; events it already had are not', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.registerJob(webJob({ groupMeta: enabled }));
  const before = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' });
  const task = Object.keys(before.TaskStates as object)[0]!;
  nomad.taskEvent(String(before.ID), task, 'Signaling', { DisplayMessage: 'Template re-rendered' }); // history, before the agent came
  const actions: string[] = [];
  const d = startDiscovery(t, nomad, { onTaskAction: (allocId, a) => actions.push(`${allocId} ${a.task} ${a.type}${a.message ? ` ${a.message}` : ''}`) });
  await d.until(() => d.statuses.some((s) => s.connected && s.source === 'stream'), 'the stream');
  const alloc = nomad.addAllocation({ jobId: 'web', group: 'web', nodeId: 'n1' });
  await d.until(() => d.added.length === 2, 'both instances');
  nomad.taskEvent(String(alloc.ID), task, 'Received');
  nomad.taskEvent(String(alloc.ID), task, 'Restart Signaled', { DisplayMessage: 'User requested restart' });
  nomad.taskEvent(String(alloc.ID), task, 'Killing', { KillTimeout: 5e9 });
  nomad.taskEvent(String(before.ID), task, 'Signaling', { DisplayMessage: 'Template re-rendered' });
  await d.until(() => actions.length >= 3, 'the three actions');
  nomad.updateAllocation(String(alloc.ID), { ClientDescription: 'unrelated update' }); // the same events again
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.deepEqual(actions, [`${alloc.ID} ${task} Restart Signaled User requested restart`, `${alloc.ID} ${task} Killing`, `${before.ID} ${task} Signaling Template re-rendered`]);
});
