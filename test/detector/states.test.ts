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
