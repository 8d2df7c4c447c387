import type { IdleVerdict } from './idle-decision.js';
import type { BusyDetail, HoldReason } from './reasons.js';

const MS = 1_000_000n;

/** What a workload had used by `atNs` (monotonic): CPU in µs, block I/O in bytes when counted. */
export interface UsageSample {
  atNs: bigint;
  /** Readings of different identities (a new QEMU process, a moved cgroup) do not compare. */
  identity: string;
  cpuUs: number;
  ioBytes: number | undefined;
}

/** Block I/O above this rate over the window is busy too (a job reading its input, a dump being written). */
export const BUSY_IO_BYTES_PER_SECOND = 1024 * 1024;

/**
 * The window the guard looks back over: the idle timeout, at most a second. A longer
 * window would average a burst that started just now into a quiet figure.
 */
export function busyWindowMs(idleTimeoutMs: number): number {
  return Math.min(Math.max(idleTimeoutMs, 50), 1000);
}

/**
 * The readings worth keeping after `next`: the newest one at least a window older
 * than it (the baseline of the next decision) and every younger one, of the same
 * identity. Bounded: readings are taken at checks, at most every window / 5.
 */
export function keepSamples(samples: readonly UsageSample[], next: UsageSample, windowMs: number): UsageSample[] {
  const window = BigInt(windowMs) * MS;
  const same = samples.filter((s) => s.identity === next.identity && s.atNs <= next.atNs);
  let from = 0;
  for (let i = 0; i < same.length; i++) if (next.atNs - same[i]!.atNs >= window) from = i;
  return [...same.slice(from), next];
}

export type BusyState =
  | { kind: 'quiet' }
  | { kind: 'busy'; detail: BusyDetail }
  /** No reading recent enough to compare with: look again after one window. */
  | { kind: 'measuring'; recheckAtNs: bigint };

/**
 * Pure: is the workload busy, judged by the newest of `samples` against the newest
 * one at least a window older (or, failing that, the oldest younger one that spans
 * at least half a window)? A baseline older than three windows would average a
 * long quiet time into the figure: then the guard measures afresh.
 */
export function judgeBusy(samples: readonly UsageSample[], windowMs: number, busyCpu: number): BusyState {
  const now = samples[samples.length - 1];
  if (!now) return { kind: 'quiet' };
  const window = BigInt(windowMs) * MS;
  const older = samples.filter((s) => s !== now && s.identity === now.identity);
  const baseline = [...older].reverse().find((s) => now.atNs - s.atNs >= window) ?? older[0];
  const spanNs = baseline ? now.atNs - baseline.atNs : 0n;
  if (!baseline || spanNs > 3n * window) return { kind: 'measuring', recheckAtNs: now.atNs + window };
  if (spanNs * 2n < window) return { kind: 'measuring', recheckAtNs: baseline.atNs + window };
  const spanMs = Number(spanNs) / 1e6;
  const cpuMs = (now.cpuUs - baseline.cpuUs) / 1000;
  if (cpuMs > busyCpu * spanMs) return { kind: 'busy', detail: { resource: 'cpu', cpuMs, spanMs } };
  if (now.ioBytes !== undefined && baseline.ioBytes !== undefined) {
    const io = now.ioBytes - baseline.ioBytes;
    if (io > (BUSY_IO_BYTES_PER_SECOND * spanMs) / 1000) return { kind: 'busy', detail: { resource: 'io', mib: io / 1024 / 1024, spanMs } };
  }
  return { kind: 'quiet' };
}

export interface BusyGuardInputs {
  nowNs: bigint;
  lastActivityNs: bigint;
  maxAwakeMs: number | undefined;
  /** How often a held instance is looked at again (holdRecheckMs). */
  recheckMs: number;
  state: BusyState;
}

/**
 * Pure: an `idle` verdict becomes `held` while the workload is busy (or being
 * measured), until `maxAwake` without a packet, which still bounds it all.
 */
export function guardIdle(verdict: IdleVerdict, inputs: BusyGuardInputs): IdleVerdict {
  if (verdict.kind !== 'idle' || inputs.state.kind === 'quiet') return verdict;
  const quietMs = Number((inputs.nowNs - inputs.lastActivityNs) / MS);
  const why: HoldReason = inputs.state.kind === 'busy' ? { kind: 'busy', detail: inputs.state.detail } : { kind: 'measuring' };
  if (inputs.maxAwakeMs !== undefined && quietMs >= inputs.maxAwakeMs) {
    return { kind: 'idle', reason: { kind: 'max-awake', quietMs, despite: why } };
  }
  const recheckAtNs = inputs.state.kind === 'measuring' ? inputs.state.recheckAtNs : inputs.nowNs + BigInt(inputs.recheckMs) * MS;
  return { kind: 'held', reason: why, recheckAtNs };
}
