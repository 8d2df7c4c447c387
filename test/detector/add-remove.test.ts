import test from 'ava';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import { detectorHarness } from '../helpers/detector-harness.js';

/*
 * Detector.add and remove at their edges: an id or traffic key is held by one
 * instance only, even when two adds start in the same tick; an add that fails
 * part way, and a removal whose wake fails, leave no program attached, no key
 * tracked and nothing on the maps. Fake clock and traffic source, no root.
 */

test.serial('two adds of one id, or of one address, started in the same tick: one is managed, the other refused', async (t) => {
  const h = detectorHarness(t);
  const first = h.instance('web', { address: '10.213.0.9:8080', interface: 'dzx9h' });
  const sameId = h.instance('web', { address: '10.213.0.10:8080', interface: 'dzx10h' });
  const sameAddress = h.instance('api', { address: '10.213.0.9:9090', interface: 'dzx9h' });
  const results = await Promise.allSettled([h.detector.add(first.instance), h.detector.add(sameId.instance), h.detector.add(sameAddress.instance)]);
  t.is(results[0].status, 'fulfilled');
  t.regex(String((results[1] as PromiseRejectedResult).reason), /instance id "web" is already managed/);
  t.regex(String((results[2] as PromiseRejectedResult).reason), /address 10\.213\.0\.9 is already managed/);
  t.deepEqual(h.detector.instances(), [first.instance]);
  t.deepEqual([...h.source.attached], [['dzx9h', 1]], 'attached once, for the instance managed');
  t.deepEqual([...h.source.tracked], ['10.213.0.9']);
  t.is(h.detector.get('web'), first.instance);
});

test.serial('an add that fails part way leaves nothing behind, and the id and address are free again', async (t) => {
  const h = detectorHarness(t);
  const trackFailure = new Error('doze-maps: map full');
  const track = h.source.track.bind(h.source);
  h.source.track = async () => {
    throw trackFailure;
  };
  const { instance } = h.instance('web', { address: '10.213.0.9:8080', interface: 'dzx9h' });
  t.is(await t.throwsAsync(h.detector.add(instance)), trackFailure);
  t.deepEqual(h.detector.instances(), []);
  t.deepEqual([...h.source.attached], [], 'its program is detached again');

  // Failing after it was on the maps (the runtime cannot be inspected): the same.
  h.source.track = track;
  const broken = new FakeRuntime();
  broken.inspect = async () => {
    throw new Error('QMP socket gone');
  };
  const late = h.instance('web', { address: '10.213.0.9:8080', interface: 'dzx9h' }, broken);
  await t.throwsAsync(h.detector.add(late.instance), { message: 'QMP socket gone' });
  t.deepEqual(h.detector.instances(), []);
  t.deepEqual([...h.source.attached], []);
  t.deepEqual([...h.source.tracked], []);

  const retried = await h.add('web', { address: '10.213.0.9:8080', interface: 'dzx9h' });
  t.is(h.detector.get('web'), retried.instance);
});

test.serial('a removal whose wake throws still lets the instance go', async (t) => {
  const h = detectorHarness(t);
  const { instance } = await h.add('web', { address: '10.213.0.9:8080', interface: 'dzx9h' });
  // wake() reports a runtime's failure itself; what is left to throw is the unexpected (a state or budget bug).
  h.detector.wake = async () => {
    throw new Error('unexpected: waking→waking');
  };
  await t.throwsAsync(h.detector.remove('web', { wake: true }), { message: /unexpected/ });
  t.true(instance.removed);
  t.is(h.detector.get('web'), undefined);
  t.deepEqual([...h.source.attached], []);
  t.deepEqual([...h.source.tracked], []);
});
