/**
 * The node budget: how many instances (and how much memory) may be awake at
 * once. Pure decisions, so they are tested without a kernel; the detector
 * does the sleeping and the waiting.
 */
export interface BudgetLimits {
  maxActive?: number;
  /** MiB, summed over awake instances' declared memory and what sleepers still hold (measured). */
  maxActiveMemory?: number;
}

export interface BudgetMember {
  id: string;
  /** Awake or about to be: running, waking, pausing. */
  active: boolean;
  /**
   * MiB: an awake instance's declared memory; a sleeper's measured cost to the node when its
   * runtime frees memory asleep (freezer reclaim: resident plus its share of zram's memory,
   * e.g. ~40 % of its awake memory for text-like data on lz4, 0 on a disk swap), else 0.
   */
  memory: number;
  /** Last inbound packet or wake, whichever is later (bpf clock). */
  lastActivityNs: bigint;
  /** May be put to sleep now: running, past min_awake, nothing in flight. */
  evictable: boolean;
}

export function fits(limits: BudgetLimits, active: BudgetMember[], incoming: { memory: number }, heldAsleep = 0): boolean {
  if (limits.maxActive !== undefined && active.length + 1 > limits.maxActive) return false;
  if (limits.maxActiveMemory !== undefined) {
    const used = active.reduce((sum, m) => sum + m.memory, 0) + heldAsleep;
    if (used + incoming.memory > limits.maxActiveMemory) return false;
  }
  return true;
}

/**
 * Which awake instances to put to sleep, least recently used first, so that
 * `incoming` fits. Undefined when even evicting every evictable one is not
 * enough: the wake must wait.
 */
export function chooseVictims(limits: BudgetLimits, members: BudgetMember[], incoming: { id: string; memory: number }): BudgetMember[] | undefined {
  const active = members.filter((m) => m.active && m.id !== incoming.id);
  // Sleepers' measured memory (the incoming one's is about to become its declared memory).
  const heldAsleep = members.filter((m) => !m.active && m.id !== incoming.id).reduce((sum, m) => sum + m.memory, 0);
  if (fits(limits, active, incoming, heldAsleep)) return [];
  const candidates = active.filter((m) => m.evictable).sort((a, b) => (a.lastActivityNs < b.lastActivityNs ? -1 : a.lastActivityNs > b.lastActivityNs ? 1 : 0));
  const victims: BudgetMember[] = [];
  let remaining = active;
  for (const candidate of candidates) {
    victims.push(candidate);
    remaining = remaining.filter((m) => m.id !== candidate.id);
    if (fits(limits, remaining, incoming, heldAsleep)) return victims;
  }
  return undefined;
}
