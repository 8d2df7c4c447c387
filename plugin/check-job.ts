import type { z } from 'zod';
import { analyzeGroup, type ManagedGroup } from '../agent/nomad/managed-group.js';
import { checkMetaLayer, jobPlace } from '../agent/nomad/meta-keys.js';
import { jobSchema, type NomadJob } from '../agent/nomad/nomad-schemas.js';
import { fieldPath } from '../agent/shared/zod-issues.js';

export interface JobCheck {
  job: NomadJob | undefined;
  /** Every group, in jobspec order; `managed` when doze will manage it. */
  groups: { name: string; managed: ManagedGroup | undefined }[];
  /** Each names its place: `group "web": doze.idle_timeout: "5 parsecs" is not a duration …`. */
  problems: string[];
  warnings: string[];
}

/** Validates a job's structure (the parts doze reads) and its doze annotations. */
export function checkJob(raw: Record<string, unknown>): JobCheck {
  const parsed = jobSchema.safeParse(raw);
  if (!parsed.success) {
    return { job: undefined, groups: [], problems: parsed.error.issues.map((issue) => describeIssue(raw, issue)), warnings: [] };
  }
  const job = parsed.data;
  const problems = new Set(checkMetaLayer({ place: jobPlace(job.ID), meta: job.Meta }));
  const warnings = new Set<string>();
  const groups = job.TaskGroups.map((group) => {
    const analysis = analyzeGroup(job, group);
    analysis.problems.forEach((p) => problems.add(p));
    analysis.warnings.forEach((w) => warnings.add(w));
    const oversubscription = analysis.managed && oversubscriptionAdvice(job, analysis.managed);
    if (oversubscription) warnings.add(oversubscription);
    return { name: group.Name, managed: analysis.managed };
  });
  if (problems.size === 0 && !groups.some((g) => g.managed)) {
    warnings.add(`${jobPlace(job.ID)}: no group is managed by doze (set meta "doze.enabled" = "true" on the job, a group or a task)`);
  }
  return { job, groups, problems: [...problems], warnings: [...warnings] };
}

/**
 * Reclaim frees a sleeper's memory on the node, but Nomad places allocations by their
 * reserved `memory`, not by what they use: the freed memory only lets a node host more
 * when the task reserves little and may use more (memory oversubscription, `memory_max`).
 * Said when a group with reclaim reserves its full awake memory (no memory_max).
 */
export function oversubscriptionAdvice(job: NomadJob, managed: ManagedGroup): string | undefined {
  // A qemu-driver VM's RAM size follows resources.memory (plugin/qemu-pause-args.ts): this is about frozen tasks.
  if (managed.driver === 'qemu' || managed.settings.mode !== 'pause' || !managed.settings.reclaimFreezer) return undefined;
  const task = job.TaskGroups.find((g) => g.Name === managed.group)?.Tasks.find((t) => t.Name === managed.task);
  const resources = (task?.Resources ?? {}) as { MemoryMB?: unknown; MemoryMaxMB?: unknown };
  const reserved = typeof resources.MemoryMB === 'number' ? resources.MemoryMB : 300; // Nomad's default task memory
  const max = typeof resources.MemoryMaxMB === 'number' ? resources.MemoryMaxMB : 0;
  if (max > reserved || max === -1) return undefined;
  return (
    `group ${JSON.stringify(managed.group)} task ${JSON.stringify(managed.task)}: doze.reclaim frees its memory while it sleeps, but Nomad places allocations by their reserved memory ` +
    `(resources.memory = ${reserved} MiB), not by what they use, so the node will not take more allocations for it. To host more apps than fit awake, reserve about what it holds ` +
    `asleep and let it grow awake: resources { memory = 32  memory_max = ${Math.max(reserved, 64)} }, with memory oversubscription enabled in the scheduler configuration ` +
    `(nomad operator scheduler set-config -memory-oversubscription=true; docs/memory.md)`
  );
}

/** Turns a schema issue's path into doze's place names: `group "web" task "app": Driver: …`. */
function describeIssue(raw: Record<string, unknown>, issue: z.core.$ZodIssue): string {
  let place = jobPlace(typeof raw.ID === 'string' ? raw.ID : '?');
  let node: unknown = raw;
  const rest: PropertyKey[] = [];
  const path = issue.path;
  for (let i = 0; i < path.length; i++) {
    const key = path[i]!;
    const next = path[i + 1];
    if ((key === 'TaskGroups' || key === 'Tasks') && typeof next === 'number') {
      node = (node as Record<string, unknown[]>)?.[key]?.[next];
      const name = (node as { Name?: unknown })?.Name;
      const label = typeof name === 'string' ? JSON.stringify(name) : `#${next + 1}`;
      place = key === 'TaskGroups' ? `group ${label}` : `${place} task ${label}`;
      i++;
      continue;
    }
    rest.push(key);
  }
  return `${place}: ${rest.length > 0 ? `${fieldPath(rest)}: ` : ''}${issue.message}`;
}
