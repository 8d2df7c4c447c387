import { messageOf } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import type { NomadClient } from '../nomad/nomad-client.js';
import { retryWithBackoff, type BackoffOptions } from './backoff.js';
import type { ConnectionTracker } from './connection-tracker.js';

/*
 * Which Nomad client node this agent serves: `nomad.nodeId` when configured,
 * else the local Nomad agent's (GET /v1/agent/self), asked with backoff until
 * it answers. Until then the Nomad connection shows why it is down.
 */

export interface NodeIdOptions extends BackoffOptions {
  signal: AbortSignal;
  tracker: ConnectionTracker;
  log: Logger;
}

/** This node's id from the local agent; undefined once `signal` aborts. */
export async function learnNodeId(client: NomadClient, options: NodeIdOptions): Promise<string | undefined> {
  const { signal, tracker, log } = options;
  const nodeId = await retryWithBackoff(async () => (await client.agentSelf({ signal })).nodeId, {
    ...options,
    onFailure: (error) => tracker.down(`cannot learn this node's id: ${messageOf(error)}`),
  });
  if (nodeId) log.info({ nodeId }, 'Nomad node id from the local agent');
  return nodeId;
}
