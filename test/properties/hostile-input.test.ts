/**
 * Property-based tests over everything that enters doze from outside:
 * config files, jobspec meta annotations, Nomad payloads and the kernel's
 * map records. The property is always the same: a clear error or a value,
 * never a crash.
 */
import test from 'ava';
import fc from 'fast-check';
import { parseConfig } from '../../agent/config/load.js';
import { parseDuration } from '../../agent/config/duration.js';
import { ConfigError } from '../../agent/shared/errors.js';
import { META_KEYS, resolveDozeMeta } from '../../agent/nomad/meta-keys.js';
import { allocationSchema } from '../../agent/nomad/nomad-schemas.js';
import { allocationInstance } from '../../agent/discovery/allocation-instance.js';
import { instanceConfigFor } from '../../agent/discovery/instance-config.js';
import { decodeConnection, decodeCounters, decodeWakeEvent } from '../../agent/sources/bpf-records.js';
import { webJob } from '../doubles/nomad/fixtures.js';
import { NomadDouble } from '../doubles/nomad/nomad-double.js';

const RUNS = { numRuns: 300 };

const instanceArb = fc.record(
  {
    id: fc.oneof(fc.string(), fc.constantFrom('web', 'api-1')),
    address: fc.oneof(fc.string(), fc.constantFrom('10.200.0.2:8080', '10.200.0.3:80', '1.2.3.4:0', '256.1.1.1:80')),
    interface: fc.oneof(fc.string(), fc.constantFrom('dz-web-h', 'veth0123abcd')),
    idleTimeout: fc.oneof(fc.string(), fc.integer(), fc.constantFrom('500ms', '30s', '5 parsecs')),
    idlePolicy: fc.oneof(fc.string(), fc.constantFrom('requests', 'connections', 'traffic')),
    maxAwake: fc.oneof(fc.string(), fc.integer()),
    runtime: fc.oneof(fc.anything(), fc.record({ kind: fc.constantFrom('freezer', 'fake', 'criu'), cgroup: fc.string() })),
  },
  { requiredKeys: [] },
);

const configArb = fc.oneof(
  fc.anything(),
  fc.record(
    {
      listen: fc.oneof(fc.string(), fc.constant('127.0.0.1:7070')),
      token: fc.anything(),
      healthChecks: fc.oneof(fc.anything(), fc.record({ mark: fc.oneof(fc.string(), fc.integer()), fromUid: fc.integer() }, { requiredKeys: [] })),
      instances: fc.oneof(fc.anything(), fc.array(instanceArb, { maxLength: 4 })),
    },
    { requiredKeys: [] },
  ),
);

test('config: any input gives a valid config or a ConfigError that names a field', (t) => {
  fc.assert(
    fc.property(configArb, (raw) => {
      try {
        const config = parseConfig(raw);
        // Whatever was accepted is usable: every instance has a positive-port IPv4 address.
        for (const i of config.instances) {
          const [host, port] = i.address.split(':');
          if (host!.split('.').length !== 4 || !(Number(port) > 0)) return false;
        }
        return true;
      } catch (error) {
        return error instanceof ConfigError && /is invalid:\n {2}\S|expected a JSON object/.test(error.message);
      }
    }),
    RUNS,
  );
  t.pass();
});

test('durations: parse or refuse, never throw, never negative', (t) => {
  fc.assert(
    fc.property(fc.string(), (text) => {
      const ms = parseDuration(text);
      return ms === undefined || (Number.isFinite(ms) && ms >= 0);
    }),
    RUNS,
  );
  t.pass();
});

const metaArb = fc.dictionary(
  fc.oneof(fc.constantFrom(...META_KEYS.map((k) => k.key)), fc.constantFrom('doze.idle_timout', 'doze.', 'other.key'), fc.string()),
  fc.oneof(fc.string(), fc.constantFrom('true', 'false', '5m', '5 parsecs', 'requests', 'hold', 'pause')),
  { maxKeys: 6 },
);

test('meta annotations: settings or problems that name the place and the key', (t) => {
  fc.assert(
    fc.property(metaArb, metaArb, metaArb, (job, group, task) => {
      const layers = [
        { place: 'job "j"', meta: job },
        { place: 'group "g"', meta: group },
        { place: 'task "g"/"t"', meta: task },
      ];
      const { problems } = resolveDozeMeta(layers);
      return problems.every((p) => /^(job "j"|group "g"|task "g"\/"t"): doze\./.test(p));
    }),
    RUNS,
  );
  t.pass();
});

/** Allocations as the Nomad double serves them (bridge and host network), managed by doze.enabled. */
async function realAllocations(): Promise<Array<Record<string, unknown>>> {
  const nomad = await NomadDouble.start();
  try {
    nomad.registerJob(webJob({ groupMeta: { 'doze.enabled': 'true' } }));
    nomad.registerJob(webJob({ id: 'hostweb', jobMeta: { 'doze.enabled': 'true' }, networkMode: 'host' }));
    return [
      nomad.addAllocation({ jobId: 'web', group: 'web', bridgeAddress: '172.26.64.9' }),
      nomad.addAllocation({ jobId: 'hostweb', group: 'web', hostIp: '10.1.2.3' }),
    ].map((a) => JSON.parse(JSON.stringify(a)) as Record<string, unknown>);
  } finally {
    await nomad.close();
  }
}

test('Nomad allocations: the edge schema rejects junk, and what passes maps to an instance config or a reason', async (t) => {
  const bases = await realAllocations();
  for (const base of bases) t.true(allocationSchema.safeParse(base).success, 'the unperturbed allocations pass the schema');
  const outcomes = { refused: 0, instance: 0, invalid: 0, ignored: 0 };
  /** What became of the instances on this node (instance-config.ts): a config, or why not. */
  const configs = { config: 0, refused: 0 };
  // Real allocations with their statuses, annotations and one field perturbed, so that most pass
  // the schema and the mapping half runs; plus pure junk for the schema half.
  const perturbed = fc.record({
    base: fc.constantFrom(...bases),
    DesiredStatus: fc.oneof({ arbitrary: fc.constant('run'), weight: 3 }, { arbitrary: fc.constantFrom('stop', 'evict'), weight: 1 }),
    ClientStatus: fc.oneof({ arbitrary: fc.constant('running'), weight: 3 }, { arbitrary: fc.constantFrom('pending', 'complete', 'failed', 'lost'), weight: 1 }),
    meta: metaArb,
    // The task's driver: podman has its own cgroup; docker (the double's), exec, raw_exec and qemu can be instances.
    driver: fc.constantFrom('exec', 'raw_exec', 'qemu', 'docker', 'podman'),
    field: fc.oneof({ arbitrary: fc.constant('none'), weight: 3 }, { arbitrary: fc.constantFrom('ID', 'JobID', 'TaskGroup', 'NodeID', 'Job', 'AllocatedResources', 'NetworkStatus', 'TaskStates'), weight: 1 }),
    junk: fc.anything(),
  }).map(({ base, DesiredStatus, ClientStatus, meta, driver, field, junk }) => {
    const alloc = structuredClone(base);
    Object.assign(alloc, { DesiredStatus, ClientStatus });
    const group = ((alloc.Job as { TaskGroups: Array<{ Meta?: Record<string, string>; Tasks: Array<{ Driver: string }> }> }).TaskGroups)[0]!;
    group.Meta = { ...group.Meta, ...meta };
    group.Tasks[0]!.Driver = driver;
    if (field !== 'none') alloc[field] = junk;
    return alloc;
  });
  fc.assert(
    fc.property(fc.oneof({ arbitrary: perturbed, weight: 4 }, { arbitrary: fc.anything(), weight: 1 }), (raw) => {
      const parsed = allocationSchema.safeParse(raw);
      if (!parsed.success) {
        outcomes.refused++;
        return true;
      }
      const mapped = allocationInstance(parsed.data);
      outcomes[mapped.kind]++;
      if (mapped.kind !== 'instance') return mapped.reason.length > 0;
      const { instance } = mapped;
      const [host, port] = instance.address.split(':');
      if (instance.address !== '' && !(host!.split('.').length === 4 && Number(port) > 0)) return false;
      // On a node that has its veth and cgroup: an instance config for that address, or the reason.
      const node = { ...(instance.networkMode === 'bridge' ? { interface: 'veth0' } : {}), cgroup: { version: 2 as const, path: '/sys/fs/cgroup/nomad.slice/share.slice/a.app.scope' } };
      const result = instanceConfigFor(instance, node);
      configs[result.kind === 'config' ? 'config' : 'refused']++;
      return result.kind === 'config' ? result.config.address === instance.address && result.config.id === instance.id : result.reason.length > 0;
    }),
    RUNS,
  );
  t.log(JSON.stringify({ ...outcomes, configs }));
  // The mapping half must have run, down each of its branches.
  t.true(outcomes.instance + outcomes.invalid + outcomes.ignored >= RUNS.numRuns / 2, `most inputs pass the schema: ${JSON.stringify(outcomes)}`);
  for (const kind of ['refused', 'instance', 'invalid', 'ignored'] as const) t.true(outcomes[kind] > 0, `some inputs are ${kind}: ${JSON.stringify(outcomes)}`);
  for (const kind of ['config', 'refused'] as const) t.true(configs[kind] > 0, `some instances are ${kind === 'config' ? 'instance configs' : 'refused one'}: ${JSON.stringify(configs)}`);
});

test('kernel records: any bytes decode or are refused, never throw', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 40 }), fc.uint8Array({ maxLength: 40 }), (a, b) => {
      const key = Buffer.from(a);
      const value = Buffer.from(b);
      try {
        if (value.length >= 32) decodeCounters(value);
        if (key.length >= 12 && value.length >= 28) decodeConnection(key, value);
      } catch {
        return false;
      }
      const event = decodeWakeEvent(value);
      return event === undefined ? value.length < 16 : /^\d+\.\d+\.\d+\.\d+$/.test(event.instanceAddr);
    }),
    RUNS,
  );
  t.pass();
});
