import { checkNeeds, nomadRunChecks, unanswerableChecks, type CheckNeed } from './check-needs.js';
import { groupPlace, jobPlace, resolveDozeMeta, taskPlace, type DozeSettings } from './meta-keys.js';
import type { NomadJob, NomadNetworkResource, NomadService, NomadTask, NomadTaskGroup } from './nomad-schemas.js';

/*
 * What doze makes of one task group: whether it manages it, which task, with
 * which settings, and which service/port its traffic arrives on. Shared by
 * the job helper (to reject a job before it runs) and discovery (to turn an
 * allocation into an instance), so both apply the same rules.
 */

export interface ManagedGroup {
  group: string;
  /** The one main (non-lifecycle) task doze sleeps and wakes. */
  task: string;
  driver: string;
  settings: DozeSettings;
  /** `checkPorts`: port labels its checks name besides the service's own (a check's `port`, an `expose` check's generated one). */
  service: { name: string; portLabel: string; checkTypes: string[]; checks: CheckNeed[]; checkPorts: string[] };
  /** "bridge", "host", "cni/…" or "none"; Nomad's default is host. */
  networkMode: string;
}

export interface GroupAnalysis {
  managed: ManagedGroup | undefined;
  problems: string[];
  warnings: string[];
}

/** Tasks with a lifecycle hook (prestart, poststart, poststop sidecars) are never the managed task. */
export function isMainTask(task: NomadTask): boolean {
  return !task.Lifecycle?.Hook;
}

export function analyzeGroup(job: NomadJob, group: NomadTaskGroup): GroupAnalysis {
  const problems: string[] = [];
  const warnings: string[] = [];
  const here = groupPlace(group.Name);
  const resolved = group.Tasks.map((task) => ({
    task,
    ...resolveDozeMeta([
      { place: jobPlace(job.ID), meta: job.Meta },
      { place: here, meta: group.Meta },
      { place: taskPlace(group.Name, task.Name), meta: task.Meta },
    ]),
  }));
  for (const r of resolved) problems.push(...r.problems);
  const enabled = resolved.filter((r) => r.problems.length === 0 && r.settings.enabled);
  for (const r of enabled.filter((r) => !isMainTask(r.task) && r.task.Meta?.['doze.enabled'] !== undefined)) {
    problems.push(`${taskPlace(group.Name, r.task.Name)}: doze.enabled: a ${r.task.Lifecycle?.Hook} lifecycle task cannot be managed; set it on the group's main task`);
  }
  const main = enabled.filter((r) => isMainTask(r.task));
  if (main.length > 1) {
    problems.push(`${here}: doze manages one task per group, but ${main.map((r) => JSON.stringify(r.task.Name)).join(' and ')} all resolve doze.enabled = true: set doze.enabled = "false" on all but one`);
  }
  const chosen = main.length === 1 ? main[0]! : undefined;
  if (!chosen || problems.length > 0) return { managed: undefined, problems: unique(problems), warnings };

  const { task, settings } = chosen;
  const networkMode = group.Networks?.[0]?.Mode || 'host';
  const service = pickService(job, group, task, here, problems);
  if (settings.mode === 'scale') {
    const type = job.Type || 'service';
    if (type !== 'service') problems.push(`${here}: doze.mode: "scale" needs a service job; job ${JSON.stringify(job.ID)} is a ${type} job`);
    const min = group.Scaling?.Min;
    if (min !== undefined && min !== null && min > 0) {
      problems.push(`${here}: doze.mode: "scale" scales the group to 0, but its scaling block has min = ${min}: set min = 0`);
    }
    warnings.push(`${here}: doze.mode "scale": at count 0 the group has no allocation, so its services leave the catalog until it wakes (hashicorp/nomad#19731)`);
    // The agent's discovery runs pause only (agent/discovery/instance-config.ts): said here, before the job runs.
    warnings.push(`${here}: doze.mode "scale" is not supported by this agent yet for discovered allocations (supported: "pause"): the allocation runs unmanaged unless the agent's config declares a nomad-scale instance for the group (docs/runtimes.md)`);
  }
  if (networkMode === 'none') problems.push(`${here}: network mode "none" has no address for traffic to wake it`);
  if (!service || problems.length > 0) return { managed: undefined, problems: unique(problems), warnings };
  const scripts = scriptChecksIn(group, task);
  if (scripts.length > 0) {
    return { managed: undefined, problems: [`${here}: ${scripts.join(', ')} run${scripts.length > 1 ? '' : 's'} inside task ${JSON.stringify(task.Name)}, which doze would freeze: Nomad execs a script check into the task every interval, a frozen task cannot run it, and Nomad reports it critical (doze cannot answer it in Nomad's place). Use an http, tcp or grpc check, or run the script in another task (check task = "…"); doze does not manage this group`], warnings };
  }
  const byNomad = nomadRunChecks(service.checks);
  if (byNomad) warnings.push(`${here}: service ${JSON.stringify(service.name)}: ${byNomad}`);
  const unanswerable = unanswerableChecks(service.checks, false);
  if (unanswerable) {
    warnings.push(`${here}: service ${JSON.stringify(service.name)}: ${unanswerable}; without one the agent keeps the instance awake rather than let the check fail`);
  }
  return {
    managed: { group: group.Name, task: task.Name, driver: task.Driver, settings, service, networkMode },
    problems: [],
    warnings,
  };
}

/**
 * Script checks Nomad would exec into `task`: those of the task's own
 * services, and group services' checks that name it (`task = "…"`, which
 * Nomad requires for a group script check).
 */
function scriptChecksIn(group: NomadTaskGroup, task: NomadTask): string[] {
  const found: string[] = [];
  const describe = (service: NomadService, check: NonNullable<NomadService['Checks']>[number], i: number) =>
    `script check ${JSON.stringify(check.Name || `#${i + 1}`)} of service ${JSON.stringify(service.Name || '(unnamed)')}`;
  for (const service of task.Services ?? []) (service.Checks ?? []).forEach((c, i) => c.Type === 'script' && found.push(describe(service, c, i)));
  for (const service of group.Services ?? []) (service.Checks ?? []).forEach((c, i) => c.Type === 'script' && (c.TaskName === task.Name || (!c.TaskName && group.Tasks.length === 1)) && found.push(describe(service, c, i)));
  return found;
}

/** The first service (group level, then the task's own) that has a check and a declared port. */
function pickService(job: NomadJob, group: NomadTaskGroup, task: NomadTask, here: string, problems: string[]): ManagedGroup['service'] | undefined {
  // Nomad's default names: "${job}-${group}" for group services, "${job}-${group}-${task}" for task services (api/services.go Canonicalize).
  const jobName = job.Name || job.ID;
  const candidates: { service: NomadService; fallbackName: string }[] = [
    ...(group.Services ?? []).map((service) => ({ service, fallbackName: `${jobName}-${group.Name}` })),
    ...(task.Services ?? []).map((service) => ({ service, fallbackName: `${jobName}-${group.Name}-${task.Name}` })),
  ];
  if (candidates.length === 0) {
    problems.push(`${here}: doze needs a service with a check and a port to reach the task, and the group has no service`);
    return undefined;
  }
  const reasons: string[] = [];
  for (const { service, fallbackName } of candidates) {
    const name = service.Name || fallbackName;
    const checks = service.Checks ?? [];
    if (!service.PortLabel) {
      reasons.push(`service ${JSON.stringify(name)} has no port`);
      continue;
    }
    if (checks.length === 0) {
      reasons.push(`service ${JSON.stringify(name)} has no check`);
      continue;
    }
    if (!/^\d+$/.test(service.PortLabel) && !portDeclared(service.PortLabel, group, task)) {
      reasons.push(`service ${JSON.stringify(name)} uses port ${JSON.stringify(service.PortLabel)}, which no network block declares`);
      continue;
    }
    const checkPorts = [...new Set(checks.flatMap((c) => (c.PortLabel && c.PortLabel !== service.PortLabel ? [c.PortLabel] : [])))];
    return { name, portLabel: service.PortLabel, checkTypes: checks.map((c) => c.Type), checks: checkNeeds(checks, service.Provider), checkPorts };
  }
  problems.push(`${here}: doze needs a service with a check and a port: ${reasons.join('; ')}`);
  return undefined;
}

function portDeclared(label: string, group: NomadTaskGroup, task: NomadTask): boolean {
  const networks: NomadNetworkResource[] = [...(group.Networks ?? []), ...(task.Resources?.Networks ?? [])];
  return networks.some((n) => [...(n.DynamicPorts ?? []), ...(n.ReservedPorts ?? [])].some((p) => p.Label === label));
}

function unique(list: string[]): string[] {
  return [...new Set(list)];
}
