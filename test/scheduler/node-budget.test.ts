import test from 'ava';
import { createLogger } from '../../agent/shared/log.js';
import type { BudgetMember } from '../../agent/scheduler/budget.js';
import { NodeBudget, type BudgetPort } from '../../agent/scheduler/node-budget.js';

const member = (id: string, lastActivityNs: bigint, over: Partial<BudgetMember> = {}): BudgetMember => ({ id, active: true, memory: 0, lastActivityNs, evictable: true, ...over });

/** A port over a plain list: eviction puts a member to sleep (or refuses, when told), the queue is a map. */
function port(members: BudgetMember[], options: { refuse?: boolean } = {}) {
  const queued = new Map<string, number>();
  const evicted: string[] = [];
  const p: BudgetPort = {
    members: async () => members,
    evict: async (id) => {
      if (options.refuse) return false;
      evicted.push(id);
      members.find((m) => m.id === id)!.active = false;
      return true;
    },
    queued: () => queued.size,
    setQueued: (id, sinceMs) => void (sinceMs === undefined ? queued.delete(id) : queued.set(id, sinceMs)),
  };
  return { p, queued, evicted };
}

test('a wake that fits goes ahead at once; one that does not evicts the least recently used first', async (t) => {
  const members = [member('old', 1n), member('new', 2n)];
  const { p, evicted } = port(members);
  const budget = new NodeBudget({ maxActive: 3, maxQueued: 4 }, p, createLogger('silent'));
  t.is(await budget.makeRoom({ id: 'c', memory: 0, wakeTimeoutMs: 1000 }), 'fits');
  t.deepEqual(evicted, []);
  const tight = new NodeBudget({ maxActive: 2, maxQueued: 4 }, p, createLogger('silent'));
  t.is(await tight.makeRoom({ id: 'c', memory: 0, wakeTimeoutMs: 1000 }), 'fits');
  t.deepEqual(evicted, ['old']);
});

test('nothing can sleep: the wake waits in the queue (shown queued), and room made meanwhile lets it through', async (t) => {
  const members = [member('busy', 1n, { evictable: false })];
  const { p, queued } = port(members);
  const budget = new NodeBudget({ maxActive: 1, maxQueued: 4 }, p, createLogger('silent'));
  const waking = budget.makeRoom({ id: 'c', memory: 0, wakeTimeoutMs: 5000 });
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.true(queued.has('c'), 'queued, as the status shows');
  members[0]!.active = false; // it slept by itself
  budget.signalRoom();
  t.is(await waking, 'fits');
  t.false(queued.has('c'), 'off the queue once through');
});

test('a full queue or a deadline lets the wake go ahead over budget, never fail it', async (t) => {
  const members = [member('busy', 1n, { evictable: false })];
  const full = port(members);
  full.queued.set('someone', Date.now());
  const budget = new NodeBudget({ maxActive: 1, maxQueued: 1 }, full.p, createLogger('silent'));
  t.is(await budget.makeRoom({ id: 'c', memory: 0, wakeTimeoutMs: 5000 }), 'over-budget', 'the queue is full');
  const late = port(members);
  const waiting = new NodeBudget({ maxActive: 1, maxQueued: 4 }, late.p, createLogger('silent'));
  const started = performance.now();
  t.is(await waiting.makeRoom({ id: 'c', memory: 0, wakeTimeoutMs: 100 }), 'over-budget', 'nothing slept in time');
  t.true(performance.now() - started < 1000);
  t.false(late.queued.has('c'));
});
