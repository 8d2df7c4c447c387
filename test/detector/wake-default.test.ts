import test from 'ava';
import { parseConfig } from '../../agent/config/load.js';
import { ManagedInstance } from '../../agent/detector/managed-instance.js';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import { wakeSummary } from '../../plugin/job-command.js';

const base = { id: 'vm', address: '10.0.0.2:80', interface: 'tap0', runtime: { kind: 'fake' } };

/** A runtime that declares it drops the first SYN while asleep (a snapshot VM without a pre-spawned QEMU). */
function dropping(): FakeRuntime {
  const runtime = new FakeRuntime();
  Object.assign(runtime.capabilities, { keepsProcess: false, freesMemory: true, dropsFirstSyn: true });
  return runtime;
}

test('no wake set: hold where the runtime drops the first SYN, retry elsewhere', (t) => {
  const [config] = parseConfig({ instances: [base] }).instances;
  const held = new ManagedInstance(config!, dropping(), 0n);
  t.is(held.wake, 'hold');
  t.true(held.wakeByDefault);
  t.is(held.minAwakeMs, 0, 'no retransmission to wait for');
  t.is(new ManagedInstance(config!, new FakeRuntime(), 0n).wake, 'retry');
});

test('an explicit wake is kept, retry included', (t) => {
  const [retry, hold] = parseConfig({ instances: [{ ...base, wake: 'retry' }, { ...base, id: 'h', address: '10.0.0.3:80', wake: 'hold' }] }).instances;
  const instance = new ManagedInstance(retry!, dropping(), 0n);
  t.is(instance.wake, 'retry');
  t.false(instance.wakeByDefault);
  t.is(new ManagedInstance(hold!, new FakeRuntime(), 0n).wake, 'hold');
});

test('doze job validate names the wake mode the agent will use', (t) => {
  t.regex(wakeSummary(undefined, true), /^wake hold \(the default for a snapshot VM/);
  t.is(wakeSummary(undefined, false), 'wake retry');
  t.is(wakeSummary('retry', true), 'wake retry');
});
