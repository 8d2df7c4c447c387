import { monotonicNs } from '../sources/bpf-records.js';
import type { TrafficSource } from '../sources/traffic-source.js';
import type { BudgetMember } from '../scheduler/budget.js';
import { isOpen, isRequestInFlight } from './idle-decision.js';
import type { ReadonlyInstance } from './managed-instance.js';

const MS = 1_000_000n;

/** Sleepers whose runtime frees memory count what they still hold, measured (a reclaimed one about 0). */
async function measuredAsleepMiB(instances: readonly ReadonlyInstance[]): Promise<Map<string, number>> {
  const held = new Map<string, number>();
  await Promise.all(
    instances
      .filter((i) => i.state === 'sleeping' && i.runtime.capabilities.freesMemory && i.runtime.memory)
      .map(async (i) => {
        const usage = await i.runtime.memory!().catch(() => undefined);
        if (usage) held.set(i.id, Math.ceil(usage.residentBytes / 2 ** 20));
      }),
  );
  return held;
}

/**
 * Every instance as the node budget weighs it (scheduler/node-budget.ts), from one counters read
 * of the running ones; `lastSeenNs` is what that read found (the detector keeps it).
 */
export async function budgetMembers(all: readonly ReadonlyInstance[], source: TrafficSource): Promise<{ members: BudgetMember[]; lastSeenNs: Map<string, bigint> }> {
  const running = all.filter((i) => i.state === 'running' && !i.removed);
  const counters = await source.countersOf(running.map((i) => i.key));
  const needConnections = running.some((i) => i.config.idlePolicy !== 'traffic');
  const connections = needConnections ? await source.connections() : [];
  const nowNs = monotonicNs();
  const asleepMiB = await measuredAsleepMiB(all);
  const lastSeenNs = new Map<string, bigint>();
  const members = all.map((i) => {
    const c = counters.get(i.key);
    if (c) lastSeenNs.set(i.id, c.lastSeenNs);
    const lastSeen = c?.lastSeenNs ?? i.lastSeenNs;
    const lastActivityNs = lastSeen > i.awakeSinceNs ? lastSeen : i.awakeSinceNs;
    const mine = connections.filter((conn) => conn.instanceAddr === i.key);
    // Still computing (the busy guard's last finding): a sleep now would be undone at once.
    const working = i.heldBy?.kind === 'busy';
    const busy = working || (i.config.idlePolicy === 'traffic' ? false
      : mine.some(isRequestInFlight) || (i.config.idlePolicy === 'connections' && mine.some(isOpen)));
    return {
      id: i.id,
      active: i.state === 'running' || i.state === 'waking' || i.state === 'pausing',
      memory: i.state === 'running' || i.state === 'waking' || i.state === 'pausing' ? i.config.memory : asleepMiB.get(i.id) ?? 0,
      lastActivityNs,
      evictable: i.state === 'running' && !i.removed && !busy && nowNs >= i.awakeSinceNs + BigInt(i.minAwakeMs) * MS,
    };
  });
  return { members, lastSeenNs };
}
