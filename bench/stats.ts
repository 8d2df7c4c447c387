/** Percentiles and formatting for benchmark reports (one run; ratios over absolutes: 2-core machine). */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index]!;
}

export function summary(label: string, values: number[], unit = 'ms', digits = 2): string {
  const f = (v: number) => `${v.toFixed(digits)} ${unit}`;
  return `${label.padEnd(44)} n=${String(values.length).padEnd(5)} p50 ${f(percentile(values, 50)).padEnd(12)} p90 ${f(percentile(values, 90)).padEnd(12)} p99 ${f(percentile(values, 99)).padEnd(12)} max ${f(Math.max(...values))}`;
}

export function verdict(ok: boolean, text: string): string {
  return `${ok ? 'PASS' : 'MISS'}  ${text}`;
}
