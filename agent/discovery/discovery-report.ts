import type { ConnectionStatus } from './connection-tracker.js';

/*
 * What discovery tells GET /api/status and the status page: its connections
 * to Nomad and Consul, and what became of each Nomad allocation annotated for
 * doze: managed, pending (its namespace or cgroup is not there yet) or
 * invalid, with why.
 */

export interface AllocationStatus {
  allocId: string;
  /** The instance id it is (or would be) managed as. */
  instance?: string;
  job?: string;
  group?: string;
  task?: string;
  /** `registered`: a `doze vm run --register` task; its owner registers the VM with the agent itself. */
  state: 'managed' | 'pending' | 'invalid' | 'registered';
  reason?: string;
  /** Host-side interface, once found. */
  interface?: string;
  cgroup?: string;
}

/** What discovery contributes; absent on an agent with static instances only. */
export interface DiscoveryReport {
  connections: { nomad?: ConnectionStatus; consul?: ConnectionStatus };
  allocations: AllocationStatus[];
}
