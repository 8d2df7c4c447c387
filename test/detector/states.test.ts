import test from 'ava';
import { canTransition, INSTANCE_STATES } from '../../agent/detector/states.js';

test('the state machine follows running → pausing → sleeping → waking → running', (t) => {
  t.true(canTransition('running', 'pausing'));
  t.true(canTransition('pausing', 'sleeping'));
  t.true(canTransition('sleeping', 'waking'));
  t.true(canTransition('waking', 'running'));
});

test('a failed wake is terminal until an operator or a new wake succeeds', (t) => {
  t.true(canTransition('waking', 'failed'));
  t.true(canTransition('failed', 'waking'));
  t.false(canTransition('failed', 'sleeping'));
});

test('no shortcuts: sleeping never jumps to running, running never to sleeping', (t) => {
  t.false(canTransition('sleeping', 'running'));
  t.false(canTransition('running', 'sleeping'));
  t.false(canTransition('running', 'waking'));
  for (const s of INSTANCE_STATES) t.false(canTransition(s, s), `${s} → ${s}`);
});

test('a runtime that drops the first SYN while asleep stays awake long enough for the retransmission', async (t) => {
  const { ManagedInstance, RETRANSMIT_GRACE_MS } = await import('../../agent/detector/managed-instance.js');
  const { FakeRuntime } = await import('../../agent/runtimes/fake.js');
  const { parseConfig } = await import('../../agent/config/load.js');
  const base = { id: 'vm', address: '10.0.0.2:80', interface: 'tap0', runtime: { kind: 'fake' } };
  const [retry, hold, slow] = parseConfig({
    instances: [base, { ...base, id: 'h', address: '10.0.0.3:80', wake: 'hold' }, { ...base, id: 's', address: '10.0.0.4:80', minAwake: '10s' }],
  }).instances;
  const gone = new FakeRuntime();
  (gone as { capabilities: { keepsProcess: boolean } }).capabilities = { keepsProcess: false, freesMemory: true } as never;
  t.is(new ManagedInstance(retry!, gone, 0n).minAwakeMs, RETRANSMIT_GRACE_MS);
  t.is(new ManagedInstance(hold!, gone, 0n).minAwakeMs, 0, 'hold takes the first connection itself');
  t.is(new ManagedInstance(slow!, gone, 0n).minAwakeMs, 10_000);
  t.is(new ManagedInstance(retry!, new FakeRuntime(), 0n).minAwakeMs, 0, 'a kept process queues the SYN itself');
});
