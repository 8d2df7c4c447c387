import test from 'ava';
import { install } from '@sinonjs/fake-timers';
import { admit, FaultBackGate, type PacedTicket, type PacedWake } from '../../agent/scheduler/fault-back-gate.js';

const w = (id: string, lastActivityNs: bigint, faultBackMiB = 100): PacedWake => ({ id, lastActivityNs, faultBackMiB });

test('admit: a prefix of the waiting, in order, that fits beside the ones faulting back', (t) => {
  const waiting = [w('a', 9n), w('b', 8n), w('c', 7n, 300), w('d', 6n)];
  t.deepEqual(admit({ maxActiveMemory: 500 }, [w('x', 1n, 100)], waiting).map((p) => p.id), ['a', 'b'], 'c does not fit, and d may not jump it');
  t.deepEqual(admit({ maxActive: 2 }, [], waiting).map((p) => p.id), ['a', 'b']);
  t.deepEqual(admit({ maxActive: 2 }, [w('x', 1n), w('y', 1n)], waiting), []);
});

test('admit: one sleeper bigger than the whole budget still wakes, alone', (t) => {
  t.deepEqual(admit({ maxActiveMemory: 100 }, [], [w('big', 1n, 400), w('small', 0n, 10)]).map((p) => p.id), ['big']);
  t.deepEqual(admit({ maxActiveMemory: 100 }, [w('x', 1n, 50)], [w('big', 1n, 400)]), []);
});

test.serial('the gate: most recently used first, never more than the budget faulting back, the rest at their deadline over budget', async (t) => {
  const clock = install({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  t.teardown(() => clock.uninstall());
  const gate = new FaultBackGate({ maxActive: 2 });
  const order: string[] = [];
  const tickets = new Map<string, PacedTicket>();
  const deadline = Date.now() + 1000;
  for (const [id, last] of [['old', 1n], ['newest', 9n], ['mid', 5n], ['late', 0n]] as const) {
    void gate.enter(w(id, last), deadline).then((ticket) => {
      order.push(id);
      tickets.set(id, ticket);
    });
  }
  await clock.tickAsync(0);
  // Asked for in one turn: ordered together, most recently used first.
  t.deepEqual(order, ['newest', 'mid']);
  t.is(gate.report.faulting, 2);
  tickets.get('newest')!.release();
  await clock.tickAsync(0);
  t.deepEqual(order, ['newest', 'mid', 'old'], 'old (used more recently) before late');
  tickets.get('newest')!.release(); // idempotent: no extra room
  await clock.tickAsync(0);
  t.is(order.length, 3);
  await clock.tickAsync(1000);
  t.deepEqual(order, ['newest', 'mid', 'old', 'late'], 'late started at its deadline');
  t.true(tickets.get('late')!.overBudget);
  t.false(tickets.get('old')!.overBudget);
  t.deepEqual(gate.report.overDeadline.map((o) => o.id), ['late']);
  t.is(gate.report.peakFaulting, 3, 'the one past its deadline went over budget');
});

test.serial('the gate: a sleeper that traffic reached goes before the others waiting', async (t) => {
  const clock = install({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  t.teardown(() => clock.uninstall());
  const gate = new FaultBackGate({ maxActiveMemory: 100 });
  const order: string[] = [];
  const tickets: PacedTicket[] = [];
  for (const [id, last] of [['first', 9n], ['a', 8n], ['b', 7n], ['requested', 1n]] as const) {
    void gate.enter(w(id, last), Date.now() + 10_000).then((ticket) => {
      order.push(id);
      tickets.push(ticket);
    });
  }
  await clock.tickAsync(0);
  gate.promote('requested');
  tickets[0]!.release();
  await clock.tickAsync(0);
  t.deepEqual(order, ['first', 'requested']);
});
