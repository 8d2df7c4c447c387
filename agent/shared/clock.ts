/** Same clock as bpf_ktime_get_ns(): CLOCK_MONOTONIC, which process.hrtime uses on Linux. */
export function monotonicNs(): bigint {
  return process.hrtime.bigint();
}
