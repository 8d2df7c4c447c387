import test from 'ava';
import { chooseVictims, fits, type BudgetMember } from '../../agent/scheduler/budget.js';

const m = (id: string, lastActivityNs: bigint, extra: Partial<BudgetMember> = {}): BudgetMember => ({ id, active: true, memory: 100, lastActivityNs, evictable: true, ...extra });

test('no limits: everything fits', (t) => {
  t.true(fits({}, [m('a', 1n), m('b', 2n)], { memory: 1000 }));
  t.deepEqual(chooseVictims({}, [m('a', 1n)], { id: 'x', memory: 1 }), []);
});

test('maxActive: the least recently used awake instance makes room', (t) => {
  const members = [m('new', 30n), m('old', 10n), m('mid', 20n), m('asleep', 1n, { active: false })];
  t.deepEqual(chooseVictims({ maxActive: 3 }, members, { id: 'x', memory: 0 })!.map((v) => v.id), ['old']);
});

test('instances within min_awake or with requests in flight are never chosen', (t) => {
  const members = [m('old', 10n, { evictable: false }), m('mid', 20n), m('new', 30n)];
  t.deepEqual(chooseVictims({ maxActive: 3 }, members, { id: 'x', memory: 0 })!.map((v) => v.id), ['mid']);
});

test('memory budget: evicts until the incoming instance fits', (t) => {
  const members = [m('a', 1n, { memory: 300 }), m('b', 2n, { memory: 300 }), m('c', 3n, { memory: 300 })];
  t.deepEqual(chooseVictims({ maxActiveMemory: 1000 }, members, { id: 'x', memory: 500 })!.map((v) => v.id), ['a', 'b']);
});

test('when nothing can be evicted the wake must wait', (t) => {
  const members = [m('a', 1n, { evictable: false }), m('b', 2n, { evictable: false })];
  t.is(chooseVictims({ maxActive: 2 }, members, { id: 'x', memory: 0 }), undefined);
});

test('the waking instance itself never counts against the budget', (t) => {
  t.deepEqual(chooseVictims({ maxActive: 1 }, [m('x', 5n)], { id: 'x', memory: 0 }), []);
});

test('memory still held by sleepers counts against maxActiveMemory; a reclaimed sleeper frees its share', (t) => {
  const asleep = (id: string, memory: number) => ({ ...m(id, 1n), active: false, evictable: false, memory });
  const awake = { ...m('a', 5n), memory: 300 };
  // Unreclaimed sleeper holding 600 MiB: 300 + 600 + 200 > 1000, so the awake one must sleep.
  t.deepEqual(chooseVictims({ maxActiveMemory: 1000 }, [awake, asleep('s', 600)], { id: 'x', memory: 200 })!.map((v) => v.id), ['a']);
  // The same sleeper reclaimed (3 MiB left): everything fits.
  t.deepEqual(chooseVictims({ maxActiveMemory: 1000 }, [awake, asleep('s', 3)], { id: 'x', memory: 200 }), []);
  // The incoming instance's own sleeping memory is not counted twice.
  t.deepEqual(chooseVictims({ maxActiveMemory: 1000 }, [awake, asleep('x', 600)], { id: 'x', memory: 600 }), []);
});
