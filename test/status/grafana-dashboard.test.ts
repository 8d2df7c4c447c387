import test from 'ava';
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { parseConfig } from '../../agent/config/load.js';
import { Detector } from '../../agent/detector/detector.js';
import { ManagedInstance } from '../../agent/detector/managed-instance.js';
import { createLogger } from '../../agent/shared/log.js';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import { monotonicNs } from '../../agent/shared/clock.js';
import { Metrics } from '../../agent/status/metrics.js';
import { FakeTrafficSource } from '../helpers/fake-traffic-source.js';
import { REPO } from '../helpers/cli.js';

/*
 * docs/grafana-dashboard.json is built on the metrics the agent exports: every query names only
 * metrics a running agent serves, and only labels they carry (plus `job` and `node`, which the
 * scrape config in docs/monitoring.md adds).
 */

const target = z.looseObject({ expr: z.string().min(1), refId: z.string() });
const panel = z.looseObject({ type: z.string(), title: z.string(), targets: z.array(target).optional() });
const dashboard = z.looseObject({
  title: z.string(),
  uid: z.string(),
  panels: z.array(panel).min(1),
  templating: z.looseObject({ list: z.array(z.looseObject({ name: z.string(), query: z.unknown() })) }),
});

const SCRAPE_LABELS = ['job', 'node'];

/** What the agent exports: series names (histograms with their _bucket/_sum/_count) → label names. */
async function exported(): Promise<Map<string, Set<string>>> {
  const detector = new Detector(new FakeTrafficSource(), createLogger('silent'));
  const config = parseConfig({ instances: [{ id: 'web', address: '10.9.0.2:80', interface: 'dzg0', idleTimeout: '1h', runtime: { kind: 'fake' } }] }).instances[0]!;
  await detector.add(new ManagedInstance(config, new FakeRuntime(), monotonicNs()));
  await detector.stop({ wakeAll: false });
  const metrics = new Metrics(detector);
  metrics.sync();
  const names = new Map<string, Set<string>>();
  for (const metric of await metrics.registry.getMetricsAsJSON()) {
    // Declared label names, and those of the samples (default metrics declare none but may carry some).
    const declared = (metrics.registry.getSingleMetric(metric.name) as unknown as { labelNames?: string[] } | undefined)?.labelNames ?? [];
    const labels = new Set([...declared, ...metric.values.flatMap((v) => Object.keys(v.labels))]);
    const add = (name: string, extra: string[] = []) => names.set(name, new Set([...labels, ...extra].filter((l) => l !== 'le' || extra.includes('le'))));
    if (String(metric.type) === 'histogram') {
      add(`${metric.name}_bucket`, ['le']);
      add(`${metric.name}_sum`);
      add(`${metric.name}_count`);
    } else {
      add(metric.name);
    }
  }
  return names;
}

/** `name{a="x", b=~"y"}` and bare `name` occurrences in a PromQL expression. */
function selectors(expr: string): Array<{ name: string; labels: string[] }> {
  const found: Array<{ name: string; labels: string[] }> = [];
  const pattern = /\b((?:doze|process|nodejs)_[a-z0-9_]+)(\{([^}]*)\})?/g;
  for (const match of expr.matchAll(pattern)) {
    const labels = [...(match[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!=|!~|=)/g)].map((m) => m[1]!);
    found.push({ name: match[1]!, labels });
  }
  return found;
}

test('every query of the Grafana dashboard names a metric the agent exports, with labels it carries', async (t) => {
  const parsed = dashboard.safeParse(JSON.parse(await readFile(`${REPO}docs/grafana-dashboard.json`, 'utf8')));
  if (!parsed.success) return t.fail(z.prettifyError(parsed.error));
  const names = await exported();
  const queries = [
    ...parsed.data.panels.flatMap((p) => (p.targets ?? []).map((q) => ({ where: p.title, expr: q.expr }))),
    ...parsed.data.templating.list.flatMap((v) => {
      const query = typeof v.query === 'string' ? v.query : (v.query as { query?: unknown } | undefined)?.query;
      return typeof query === 'string' && query.includes('(') ? [{ where: `variable ${v.name}`, expr: query }] : [];
    }),
  ];
  t.true(queries.length >= 15, `${queries.length} queries`);
  const used = new Set<string>();
  for (const { where, expr } of queries) {
    const found = selectors(expr);
    t.true(found.length > 0, `${where}: ${expr} names no metric`);
    for (const { name, labels } of found) {
      used.add(name);
      const carried = names.get(name);
      if (!carried) {
        t.fail(`${where}: ${name} is not exported by the agent`);
        continue;
      }
      for (const label of labels) t.true(carried.has(label) || SCRAPE_LABELS.includes(label), `${where}: ${name} has no label ${label}`);
    }
  }
  // The dashboard covers the contract's metrics, not a corner of them.
  for (const name of ['doze_instances', 'doze_wake_seconds_bucket', 'doze_first_response_seconds_bucket', 'doze_wakes_total', 'doze_sleeps_total', 'doze_wake_failures_total', 'doze_budget_overruns_total']) {
    t.true(used.has(name), `the dashboard uses ${name}`);
  }
});

test('the checker catches a query on a metric the agent does not export', async (t) => {
  const names = await exported();
  t.false(names.has('doze_budget_overruns'), 'the renamed gauge is not exported');
  t.deepEqual(selectors('sum(rate(doze_wakes_total{instance=~"$instance"}[5m]))'), [{ name: 'doze_wakes_total', labels: ['instance'] }]);
  t.true(names.get('doze_wakes_total')!.has('instance'));
  t.false(names.get('doze_instances')!.has('instance'));
});
