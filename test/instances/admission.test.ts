import test, { type ExecutionContext } from 'ava';
import { instanceSchema, type InstanceConfig } from '../../agent/config/schema.js';
import { Detector } from '../../agent/detector/detector.js';
import type { ReadonlyInstance } from '../../agent/detector/managed-instance.js';
import { InstanceAdmission } from '../../agent/instances/admission.js';
import { createLogger } from '../../agent/shared/log.js';
import { InstanceRegistry } from '../../agent/instances/registry.js';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import type { ProbeResult } from '../../agent/runtimes/runtime.js';
import { FakeTrafficSource } from '../helpers/fake-traffic-source.js';
import { until } from '../helpers/until.js';

/*
 * One admission for every instance (agent/instances/admission.ts): two
 * admissions of one address started in the same tick, one through the API
 * registry and one as discovery makes it, manage exactly one instance; the
 * other is refused with the clash message, and nothing of it is left
 * attached or tracked. A real detector over the fake traffic source and fake
 * runtimes whose probe takes a while: no kernel, no root.
 */

const log = createLogger('silent');

/** A fake runtime whose probe takes a while, as a real one's may (a QMP round trip on a loaded node). */
class SlowProbeRuntime extends FakeRuntime {
  closed = false;
  override async probe(): Promise<ProbeResult> {
    await new Promise((resolve) => setTimeout(resolve, 50));
    return { ok: true };
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

function setup() {
  const source = new FakeTrafficSource();
  const detector = new Detector(source, log);
  const released: string[] = [];
  const runtimes: SlowProbeRuntime[] = [];
  const admission = new InstanceAdmission({
    detector,
    log,
    release: async (id) => void released.push(id),
    createRuntime: () => {
      const runtime = new SlowProbeRuntime();
      runtimes.push(runtime);
      return runtime;
    },
  });
  const registry = new InstanceRegistry({ admission, detector, log, policy: () => undefined });
  return { source, detector, admission, registry, released, runtimes };
}

const instance = (id: string, extra: Record<string, unknown> = {}): InstanceConfig =>
  instanceSchema.parse({ id, address: '10.213.7.2:80', interface: 'dzvm0t', runtime: { kind: 'fake' }, ...extra });

const ADDRESS_CLASH = /^address 10\.213\.7\.2 is already managed as "(vm|web\.web\.5f1e2d3c)" \(instances are keyed by IPv4 address/;

const ORIGIN = { allocId: '5f1e2d3c-0000-4000-8000-00000000abcd', jobId: 'web', group: 'web', task: 'app' };

function contenders(app: ReturnType<typeof setup>) {
  return {
    register: () => app.registry.register(instance('vm')),
    discover: () => app.admission.admit({ config: instance('web.web.5f1e2d3c', { address: '10.213.7.2:8080' }), source: 'nomad', origin: ORIGIN }),
  };
}

/** Exactly one instance of the address is managed, attached and tracked once; the loser built no runtime and released nothing. */
function oneManaged(t: ExecutionContext, app: ReturnType<typeof setup>): ReadonlyInstance {
  const managed = app.detector.instances();
  t.is(managed.length, 1, 'exactly one instance is managed');
  t.deepEqual([...app.source.attached], [['dzvm0t', 1]], 'the program is attached once');
  t.deepEqual([...app.source.tracked], ['10.213.7.2']);
  t.is(app.runtimes.length, 1, 'the refused one never built a runtime');
  t.deepEqual(app.released, []);
  return managed[0]!;
}

test('an API registration and a discovery of one address started in the same tick: one managed, the other refused with the clash message', async (t) => {
  const app = setup();
  const { register, discover } = contenders(app);
  const [registered, discovered] = await Promise.all([register(), discover()]);
  const managed = oneManaged(t, app);
  if (discovered.admitted) {
    t.is(managed, discovered.instance);
    t.like(registered, { status: 409 });
    if (registered.status === 409) t.regex(registered.error, ADDRESS_CLASH);
  } else {
    t.like(registered, { status: 201, instance: managed });
    t.like(discovered.refusal, { kind: 'key-taken' });
    if (discovered.refusal.kind === 'key-taken') t.regex(discovered.refusal.message, ADDRESS_CLASH);
  }
});

test('a discovery while an API registration of its address is still probing is refused; and the other way round', async (t) => {
  // The first one's runtime is built and its probe under way: it is not in the detector yet, only reserved.
  const apiFirst = setup();
  const registering = contenders(apiFirst).register();
  await until('the registration to probe its runtime', () => apiFirst.runtimes.length === 1, { everyMs: 1 });
  t.is(apiFirst.detector.instances().length, 0, 'not in the detector yet');
  const lateDiscovery = await contenders(apiFirst).discover();
  t.like(await registering, { status: 201 });
  t.like(lateDiscovery, { admitted: false, refusal: { kind: 'key-taken', holder: { id: 'vm', source: 'api' } } });
  oneManaged(t, apiFirst);

  const discoveryFirst = setup();
  const discovering = contenders(discoveryFirst).discover();
  await until('the discovery to probe its runtime', () => discoveryFirst.runtimes.length === 1, { everyMs: 1 });
  t.is(discoveryFirst.detector.instances().length, 0);
  const lateRegistration = await contenders(discoveryFirst).register();
  t.true((await discovering).admitted);
  t.like(lateRegistration, { status: 409 });
  if (lateRegistration.status === 409) t.regex(lateRegistration.error, ADDRESS_CLASH);
  oneManaged(t, discoveryFirst);
});

test('two direct admissions of one id: the second is refused while the first still probes, then the id is free once the first is retired', async (t) => {
  const { source, detector, admission, released } = setup();
  const [first, second] = await Promise.all([
    admission.admit({ config: instance('vm'), source: 'static' }),
    admission.admit({ config: instance('vm', { address: '10.213.7.6:80', interface: 'dzvm1t' }), source: 'nomad' }),
  ]);
  t.true(first.admitted);
  t.like(second, { admitted: false, refusal: { kind: 'id-taken', holder: { id: 'vm', source: 'static' } } });
  t.deepEqual([...source.attached], [['dzvm0t', 1]]);

  await admission.retire(detector.get('vm')!, { wake: true });
  t.deepEqual(detector.instances(), []);
  t.deepEqual([...source.attached], []);
  t.deepEqual([...source.tracked], []);
  t.deepEqual(released, ['vm']);
  t.true((await admission.admit({ config: instance('vm', { address: '10.213.7.6:80', interface: 'dzvm1t' }), source: 'nomad' })).admitted);
});

test('a refused or failing admission closes the runtime it built and frees the id and address', async (t) => {
  const { source, detector, admission, runtimes } = setup();
  source.attach = async () => {
    throw new Error('tc: no such device');
  };
  const failed = await admission.admit({ config: instance('vm'), source: 'api' });
  t.like(failed, { admitted: false, refusal: { kind: 'attach' } });
  t.true(runtimes[0]!.closed);
  t.deepEqual(detector.instances(), []);
  t.is(admission.clash(instance('vm')), undefined, 'nothing holds the id or the address any more');

  const withdrawn = await admission.admit({ config: instance('vm'), source: 'nomad', stillWanted: () => false });
  t.like(withdrawn, { admitted: false, refusal: { kind: 'withdrawn' } });
  t.true(runtimes[1]!.closed);
  t.is(admission.clash(instance('vm')), undefined);
});
