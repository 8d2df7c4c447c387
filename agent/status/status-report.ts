import type { Detector } from '../detector/detector.js';
import type { WakeEventHealth } from '../detector/wake-signals.js';
import type { PacingReport } from '../scheduler/fault-back-gate.js';
import type { DiscoveryReport } from '../discovery/discovery-report.js';
import type { NodeMemoryView } from './memory-view.js';
import type { SavingsView } from './savings.js';
import type { UpstreamVersions } from '../upstream-versions.js';

/*
 * `GET /api/status`: the agent as a whole, beside the per-instance
 * `/api/instances` (whose contract stays as it is). It says how many
 * instances are in which state, whether the agent is in touch with Nomad and
 * Consul (a lost connection never stops the instances it already manages),
 * and what became of each Nomad allocation annotated for doze: managed,
 * pending (its namespace or cgroup is not there yet) or invalid, with why.
 */

export interface BudgetReport {
  maxActive: number | null;
  maxActiveMemory: number | null;
  active: number;
  activeMemory: number;
  /** MiB of the sleeping instances whose runtime gives their memory back (config `memory`). */
  freedMemory: number;
  queued: number;
  overruns: number;
  /**
   * Paced mass wakes (agent stop, removals): how many started, wait, fault back now, the most at
   * once, and the ones that could not start within budget by their deadline (woken over budget).
   * Null without a budget (then every wake goes at once).
   */
  pacedWakes: PacingReport | null;
}

export interface StatusReport extends DiscoveryReport {
  instances: { total: number; byState: Record<string, number> };
  budget: BudgetReport;
  /** The wake-event path: rescans after lost events or a reader restart, wakes the watchdog had to make (`missed`), and watchdog wakes whose event came after all (`late`). */
  wakeEvents: { gaps: number; lastGap: { reason: string; at: string } | null; missed: number; late: number };
  /** The node's swap and the memory its instances hold and gave back (agent/status/memory-view.ts). */
  memory: NodeMemoryView | null;
  /** Nomad's and Consul's versions as read at start, with the minimum doze needs. */
  versions: UpstreamVersions;
  /** The node interfaces host-port instances' traffic is counted on now (none while no host-port instance is managed). */
  hostPorts: { interfaces: string[] };
  /** What sleeping saved on this node (agent/status/savings.ts): asleep share of the last hour and day, memory freed, wakes. */
  savings: SavingsView | null;
}

const ACTIVE = new Set(['running', 'waking', 'pausing']);

export function statusReport(detector: Detector, discovery: DiscoveryReport | undefined, memory?: NodeMemoryView, versions: UpstreamVersions = {}, hostInterfaces: string[] = [], savings?: SavingsView): StatusReport {
  const byState: Record<string, number> = {};
  const instances = detector.instances();
  for (const instance of instances) byState[instance.state] = (byState[instance.state] ?? 0) + 1;
  const active = instances.filter((i) => ACTIVE.has(i.state));
  const limits = detector.budgetLimits;
  return {
    instances: { total: instances.length, byState },
    budget: {
      maxActive: limits?.maxActive ?? null,
      maxActiveMemory: limits?.maxActiveMemory ?? null,
      active: active.length,
      activeMemory: active.reduce((sum, i) => sum + i.config.memory, 0),
      // Measured where the runtime can measure it (a reclaimed freezer sleeper), else what a memory-freeing runtime reserves.
      freedMemory:
        instances.filter((i) => i.state === 'sleeping' && i.runtime.capabilities.freesMemory && !i.runtime.memory).reduce((sum, i) => sum + i.config.memory, 0) +
        Math.round((memory?.freedBytes ?? 0) / 2 ** 20),
      queued: instances.filter((i) => i.queuedSinceMs !== undefined).length,
      overruns: detector.budgetOverruns,
      pacedWakes: detector.pacedWakes ? { ...detector.pacedWakes, overDeadline: [...detector.pacedWakes.overDeadline] } : null,
    },
    wakeEvents: wakeEventsReport(detector.wakeEvents),
    connections: discovery?.connections ?? {},
    allocations: discovery?.allocations ?? [],
    memory: memory ?? null,
    versions,
    hostPorts: { interfaces: hostInterfaces },
    savings: savings ?? null,
  };
}

function wakeEventsReport(health: WakeEventHealth): StatusReport['wakeEvents'] {
  const last = health.lastGap;
  return { gaps: health.gaps, lastGap: last ? { reason: last.reason, at: new Date(last.atMs).toISOString() } : null, missed: health.missed, late: health.late };
}
