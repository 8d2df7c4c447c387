/* What a dry run has rehearsed of one instance (agent/detector/rehearsal.ts decides; this only keeps the figures). */

/** A would-sleep span under way. */
export interface WouldSleep {
  /** bpf clock and epoch ms of the decision. */
  sinceNs: bigint;
  sinceMs: number;
  /** Its counters when it would have fallen asleep: any packet past them would have woken it. */
  packets: bigint;
  reason: string;
  /** Its resident memory at the decision, measured from its memory cgroup (undefined: not measurable). */
  residentBytes: number | undefined;
}

/**
 * What the node budget would have done for a would-be wake, weighed as if every rehearsed
 * instance were managed (its would-be sleepers asleep): `fits` as it is, `evicts` the named awake
 * instances first (least recently used), or `waits` for room (nothing could sleep: min_awake, a
 * request in flight). Null without a budget.
 */
export type RehearsedRoom = { outcome: 'fits' } | { outcome: 'evicts'; victims: string[] } | { outcome: 'waits' };

/** What a dry run has rehearsed of one instance (written by the detector alone). */
export class RehearsalRecord {
  /** Sleeps it would have taken. */
  sleeps = 0;
  /** Wakes it would have made (traffic, max_sleep). */
  wakes = 0;
  /** Time it would have spent asleep, closed spans only (ms). */
  asleepMs = 0;
  /** Resident memory × time over the closed spans (byte-seconds): what a memory-freeing runtime would have freed. */
  freedByteSeconds = 0;
  current: WouldSleep | undefined;
  /** With a node budget: its would-be wakes by what the budget would have done, and the last one's answer. */
  room = { fits: 0, evicts: 0, waits: 0, last: undefined as RehearsedRoom | undefined };

  noteRoom(room: RehearsedRoom): void {
    this.room[room.outcome]++;
    this.room.last = room;
  }

  /** Time it would have spent asleep by `nowNs`, the span under way included (ms). */
  asleepMsAt(nowNs: bigint): number {
    return this.asleepMs + (this.current ? Number(nowNs - this.current.sinceNs) / 1e6 : 0);
  }

  /** Byte-seconds it would have freed by `nowNs`, the span under way included. */
  freedByteSecondsAt(nowNs: bigint): number {
    const c = this.current;
    return this.freedByteSeconds + (c?.residentBytes ? (c.residentBytes * Number(nowNs - c.sinceNs)) / 1e9 : 0);
  }
}
