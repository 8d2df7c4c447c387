import { type InstanceCounters } from '../sources/bpf-records.js';
import { monotonicNs } from '../shared/clock.js';
import type { TrafficSource } from '../sources/traffic-source.js';
import type { BudgetMember } from '../scheduler/budget.js';
import type { BudgetPort } from '../scheduler/node-budget.js';
import { isOpen, isRequestInFlight } from './idle-decision.js';
import type { InstanceTable } from './instance-table.js';
import { lastActivityNs, minAwakeUntilNs, type ManagedInstance, type ReadonlyInstance } from './managed-instance.js';

/** Sleepers whose runtime frees memory count what they still cost the node, measured: resident plus their share of zram. */
export async function measuredAsleepMiB(instances: readonly ReadonlyInstance[]): Promise<Map<string, number>> {
  const held = new Map<string, number>();
  await Promise.all(
    instances
      .filter((i) => i.state === 'sleeping' && i.runtime.capabilities.freesMemory && i.runtime.memory)
      .map(async (i) => {
        const usage = await i.runtime.memory!().catch(() => undefined);
        if (usage) held.set(i.id, Math.ceil((usage.residentBytes + usage.compressedBytes) / 2 ** 20));
      }),
  );
  return held;
}

/** Keeps what a counters read found of the instances' last packets (idle times in the status, the budget's LRU order). */
export function keepLastSeen(instances: readonly ManagedInstance[], counters: Map<string, InstanceCounters>): void {
  for (const instance of instances) {
    const c = counters.get(instance.key);
    if (c) {
      instance.lastSeenNs = c.lastSeenNs;
      instance.seenPackets = c.packets;
    }
  }
}

/** The awake instances' last packets, from one batched counters read (the status API's idle times). */
export async function refreshLastSeen(all: readonly ManagedInstance[], source: TrafficSource): Promise<void> {
  // Only awake instances can have seen traffic since the detector last looked: a packet
  // to a sleeper wakes it. So a status poll costs what the awake instances cost.
  const awake = all.filter((i) => i.state === 'running');
  keepLastSeen(awake, await source.countersOf(awake.map((i) => i.key)));
}

/** Every instance as the node budget weighs it (scheduler/node-budget.ts), from one counters read of the running ones. */
async function budgetMembers(all: readonly ManagedInstance[], source: TrafficSource, dryRun: (i: ManagedInstance) => boolean): Promise<BudgetMember[]> {
  const running = all.filter((i) => i.state === 'running' && !i.removed);
  const counters = await source.countersOf(running.map((i) => i.key));
  keepLastSeen(all, counters);
  const needConnections = running.some((i) => i.config.idlePolicy !== 'traffic');
  // Unreadable connections: none of the instances that need them may be put to sleep for room.
  const read = needConnections ? await source.connections().catch(() => undefined) : [];
  const connections = read ?? [];
  const nowNs = monotonicNs();
  const asleepMiB = await measuredAsleepMiB(all);
  return all.map((i) => {
    const mine = connections.filter((conn) => conn.instanceAddr === i.key);
    // Still computing (the busy guard's last finding): a sleep now would be undone at once.
    const working = i.heldBy?.kind === 'busy';
    const busy = working || (i.config.idlePolicy === 'traffic' ? false
      : read === undefined || mine.some(isRequestInFlight) || (i.config.idlePolicy === 'connections' && mine.some(isOpen)));
    return {
      id: i.id,
      active: i.state === 'running' || i.state === 'waking' || i.state === 'pausing',
      memory: i.state === 'running' || i.state === 'waking' || i.state === 'pausing' ? i.config.memory : asleepMiB.get(i.id) ?? 0,
      lastActivityNs: lastActivityNs(i),
      // Never one that may not sleep (a check the stub cannot answer, Nomad stopping its task): its sleep would be
      // refused; nor a rehearsed one (dry run): it frees nothing by sleeping.
      evictable: i.state === 'running' && !i.removed && !busy && i.sleepHeldBy === undefined && !dryRun(i) && nowNs >= minAwakeUntilNs(i),
    };
  });
}

/**
 * The instances as the budget would weigh them if every rehearsed (dry-run) one were managed: a
 * would-be sleeper is asleep and holds nothing the budget counts (what a freezer sleeper holds),
 * an awake rehearsed one could be put to sleep to make room.
 */
export async function rehearsedBudgetMembers(all: readonly ManagedInstance[], source: TrafficSource): Promise<BudgetMember[]> {
  const members = await budgetMembers(all, source, () => false);
  const wouldSleep = new Set(all.filter((i) => i.rehearsal.current).map((i) => i.id));
  return members.map((m) => (wouldSleep.has(m.id) ? { ...m, active: false, memory: 0, evictable: false } : m));
}

/**
 * How the node budget sees the detector's instances: weighed from one counters read, evicted by
 * the detector's own sleep (`sleep`, with the reason given), and marked queued for the status.
 */
export function budgetPort(table: InstanceTable, source: TrafficSource, sleep: (victim: ManagedInstance, reason: string) => Promise<boolean>, dryRun: (i: ManagedInstance) => boolean): BudgetPort {
  return {
    members: () => budgetMembers(table.all(), source, dryRun),
    evict: (id, forId) => sleep(table.get(id)!, `budget: making room for ${forId}`),
    queued: () => table.all().filter((i) => i.queuedSinceMs !== undefined).length,
    setQueued: (id, sinceMs) => {
      const instance = table.get(id);
      if (instance) instance.queuedSinceMs = sinceMs;
    },
  };
}
