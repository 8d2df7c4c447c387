import type { JobCheck } from './check-job.js';

/**
 * Nodes that run the agent carry node meta `doze.agent = "true"` (see
 * jobs/doze-agent.nomad.hcl); managed groups must land on them, or nothing
 * would sleep or wake them. Node meta keys may contain dots in `${meta.…}`.
 */
export const AGENT_CONSTRAINT = { LTarget: '${meta.doze.agent}', RTarget: 'true', Operand: '=' } as const;

function hasAgentConstraint(constraints: unknown): boolean {
  return Array.isArray(constraints) && constraints.some((c) => c?.LTarget === AGENT_CONSTRAINT.LTarget && c?.RTarget === AGENT_CONSTRAINT.RTarget && (c?.Operand ?? '=') === '=');
}

/**
 * The job to register: the input unchanged except that each doze-managed
 * group gets the agent constraint (once). Groups doze does not manage keep
 * their placement. Fields doze does not read pass through untouched.
 */
export function prepareJob(raw: Record<string, unknown>, check: JobCheck): Record<string, unknown> {
  const job = structuredClone(raw);
  const managed = new Set(check.groups.filter((g) => g.managed).map((g) => g.name));
  const groups = Array.isArray(job.TaskGroups) ? (job.TaskGroups as Record<string, unknown>[]) : [];
  for (const group of groups) {
    if (typeof group.Name !== 'string' || !managed.has(group.Name)) continue;
    if (hasAgentConstraint(group.Constraints) || hasAgentConstraint(job.Constraints)) continue;
    group.Constraints = [...(Array.isArray(group.Constraints) ? group.Constraints : []), { ...AGENT_CONSTRAINT }];
  }
  return job;
}
