import type { Histogram } from 'prom-client';

/** One bucket of a wake-phase histogram, summed over instances: observations in (previous le, le]. */
export interface LatencyBucket {
  /** Upper bound in ms; null for the overflow bucket (+Inf). */
  leMs: number | null;
  count: number;
}

export interface LatencyDistribution {
  count: number;
  buckets: LatencyBucket[];
}

/** The distribution the status page draws, read from the histogram the agent exports (so both agree). */
export async function latencyDistribution(histogram: Histogram): Promise<LatencyDistribution> {
  const cumulative = new Map<string, number>();
  for (const value of (await histogram.get()).values) {
    if (!value.metricName?.endsWith('_bucket')) continue;
    const le = String(value.labels.le);
    cumulative.set(le, (cumulative.get(le) ?? 0) + value.value);
  }
  const bounds = [...cumulative.keys()].sort((a, b) => (a === '+Inf' ? 1 : b === '+Inf' ? -1 : Number(a) - Number(b)));
  let previous = 0;
  const buckets = bounds.map((le) => {
    const total = cumulative.get(le)!;
    const bucket = { leMs: le === '+Inf' ? null : Math.round(Number(le) * 1e6) / 1000, count: total - previous };
    previous = total;
    return bucket;
  });
  return { count: previous, buckets };
}
