import type { z } from 'zod';
import { analyzeGroup, type ManagedGroup } from '../agent/discovery/managed-group.js';
import { checkMetaLayer, jobPlace } from '../agent/discovery/meta-keys.js';
import { jobSchema, type NomadJob } from '../agent/discovery/nomad-schemas.js';

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
    return { name: group.Name, managed: analysis.managed };
  });
  if (problems.size === 0 && !groups.some((g) => g.managed)) {
    warnings.add(`${jobPlace(job.ID)}: no group is managed by doze (set meta "doze.enabled" = "true" on the job, a group or a task)`);
  }
  return { job, groups, problems: [...problems], warnings: [...warnings] };
}

/** Turns a schema issue's path into doze's place names: `group "web" task "app": Driver: …`. */
function describeIssue(raw: Record<string, unknown>, issue: z.core.$ZodIssue): string {
  let place = jobPlace(typeof raw.ID === 'string' ? raw.ID : '?');
  let node: unknown = raw;
  const rest: string[] = [];
  const path = issue.path;
  for (let i = 0; i < path.length; i++) {
    const key = path[i];
    const next = path[i + 1];
    if ((key === 'TaskGroups' || key === 'Tasks') && typeof next === 'number') {
      node = (node as Record<string, unknown[]>)?.[key]?.[next];
      const name = (node as { Name?: unknown })?.Name;
      const label = typeof name === 'string' ? JSON.stringify(name) : `#${next + 1}`;
      place = key === 'TaskGroups' ? `group ${label}` : `${place} task ${label}`;
      i++;
      continue;
    }
    rest.push(typeof key === 'number' ? `[${key}]` : String(key));
  }
  const field = rest.join('.').replace(/\.\[/g, '[');
  return `${place}: ${field ? `${field}: ` : ''}${issue.message}`;
}
