import { BpfInstanceState, type InstanceCounters } from '../sources/bpf-records.js';
import type { TrafficKey, TrafficSource } from '../sources/traffic-source.js';

/*
 * The hand-off of an instance's doze_state between the agent and the tc program
 * (docs/state-handoff.md lists every interleaving and the test of each). The state lives in
 * an array slot both update in place; the agent moves it into a sleep only by compare-and-swap,
 * so it never overwrites the SIGNALLED a packet swapped in, and writes AWAKE outright only once
 * the instance is awake (which is what a SIGNALLED asks for).
 */

/** What the counters said when a sleep was decided. */
export interface TrafficBaseline {
  packets: bigint;
  lastSeenNs: bigint;
}

export function baselineOf(c: InstanceCounters | undefined): TrafficBaseline {
  return { packets: c?.packets ?? 0n, lastSeenNs: c?.lastSeenNs ?? 0n };
}

/**
 * Traffic counted since the decision. Both fields: the program bumps `packets` (an atomic
 * add) before it stores `last_seen_ns`, so a read between the two sees only the first.
 */
export function trafficSince(baseline: TrafficBaseline, now: InstanceCounters | undefined): boolean {
  return !now || now.packets !== baseline.packets || now.lastSeenNs !== baseline.lastSeenNs;
}

/** How a swap into a sleep state went. */
export type HandoffResult =
  | { kind: 'swapped' }
  /** A packet got there first: the instance must stay awake, or wake. The state is left as found. */
  | { kind: 'signalled' }
  /** Not the state the agent left (or no slot): a bug or a foreign writer; treated as traffic (wake). */
  | { kind: 'unexpected'; found: BpfInstanceState | undefined };

async function swap(source: TrafficSource, key: TrafficKey, from: BpfInstanceState, to: BpfInstanceState): Promise<HandoffResult> {
  const found = await source.swapState(key, from, to);
  if (found === from) return { kind: 'swapped' };
  if (found === BpfInstanceState.signalled) return { kind: 'signalled' };
  return { kind: 'unexpected', found };
}

/** AWAKE → PAUSING: from here every packet raises a wake event. */
export function markPausing(source: TrafficSource, key: TrafficKey): Promise<HandoffResult> {
  return swap(source, key, BpfInstanceState.awake, BpfInstanceState.pausing);
}

/** PAUSING → SLEEPING once the runtime slept; a SIGNALLED found here stays, and the instance wakes. */
export function markSleeping(source: TrafficSource, key: TrafficKey): Promise<HandoffResult> {
  return swap(source, key, BpfInstanceState.pausing, BpfInstanceState.sleeping);
}

/**
 * A workload an earlier agent left asleep: its state as read (`seen`) → SLEEPING. Found
 * SIGNALLED (now or before), traffic came while no agent ran: wake it.
 */
export function markAdoptedAsleep(source: TrafficSource, key: TrafficKey, seen: BpfInstanceState | undefined): Promise<HandoffResult> {
  if (seen === BpfInstanceState.signalled) return Promise.resolve({ kind: 'signalled' });
  return swap(source, key, seen ?? BpfInstanceState.awake, BpfInstanceState.sleeping);
}
