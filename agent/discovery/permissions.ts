import type { ConsulAgentClient } from './consul-agent.js';
import type { NomadClient } from '../nomad/nomad-client.js';

/*
 * What the agent's tokens may do, checked once at start so that every
 * missing right is named together instead of surfacing one retry at a
 * time. Only reads are probed (nothing is changed to find out): a right
 * whose only use writes (Nomad's scale-job, Consul's service:write for the
 * doze-agent registration) is named when its first call is refused, by the
 * error itself (nomad-client.ts requiredCapability; consul-link.ts).
 *
 * Reads that cannot fail tell nothing: Nomad drops allocations of
 * namespaces the token cannot read from a node's list, and Consul's
 * /v1/agent/checks and /v1/agent/services leave out what the token cannot
 * read, both silently (docs/nomad.md). So these probes catch a token
 * without the right at all, not one that lacks it for some namespaces or
 * services.
 */

export interface PermissionProbe {
  /** The right, as the upstream's ACL docs name it. */
  right: string;
  /** What doze needs it for. */
  why: string;
  call: () => Promise<unknown>;
}

/** Runs the probes; the ones refused with 403, each "right (why)". Other failures are not permission problems. */
export async function missingRights(probes: PermissionProbe[]): Promise<string[]> {
  const missing: string[] = [];
  for (const probe of probes) {
    try {
      await probe.call();
    } catch (error) {
      if ((error as { status?: number }).status === 403) missing.push(`${probe.right} (${probe.why})`);
    }
  }
  return missing;
}

export function nomadProbes(client: NomadClient, nodeId: string): PermissionProbe[] {
  return [
    { right: 'agent:read', why: 'GET /v1/agent/self: this node\'s id', call: () => client.agentSelf() },
    { right: 'node:read', why: 'GET /v1/node/:id/allocations: the allocations on this node', call: () => client.nodeAllocations(nodeId) },
  ];
}

export function consulProbes(client: ConsulAgentClient): PermissionProbe[] {
  return [
    { right: 'agent:read', why: 'GET /v1/agent/self', call: () => client.self() },
    { right: 'service:read', why: 'GET /v1/agent/services: the doze-agent registration', call: () => client.services() },
  ];
}

/** "missing rights: a (…); b (…)" for logs and the status page, or undefined. */
export function describeMissing(who: string, missing: string[]): string | undefined {
  return missing.length ? `the ${who} token lacks ${missing.join('; ')}` : undefined;
}
