import test, { type ExecutionContext } from 'ava';
import type { NomadInstance } from '../../agent/discovery/allocation-instance.js';
import { NomadClient, type NomadError } from '../../agent/discovery/nomad-client.js';
import { NomadDiscovery, type DiscoveryStatus, type NomadDiscoveryOptions } from '../../agent/discovery/nomad-discovery.js';
import { webJob } from '../doubles/nomad/fixtures.js';
import type { NomadDouble } from '../doubles/nomad/nomad-double.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';
import { until } from '../helpers/until.js';

const enabled = { 'doze.enabled': 'true' };

function startDiscovery(t: ExecutionContext, nomad: NomadDouble, options: Partial<NomadDiscoveryOptions> = {}, address = nomad.url) {
  const controller = new AbortController();
  const log: string[] = [];
  const added: NomadInstance[] = [];
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
  t.deepEqual(d.log, [`+${first.ID}`, `+${second.ID}`, `-${first.ID} (allocation is stop/running)`]);
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
