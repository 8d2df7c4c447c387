import { nextBackoff, delay, type BackoffOptions } from './backoff.js';
import { NomadError, type Indexed, type NomadClient } from '../nomad/nomad-client.js';
import type { NomadAllocation } from '../nomad/nomad-schemas.js';

export interface NodeAllocationsWatchOptions extends BackoffOptions {
  signal?: AbortSignal;
  /** How long each blocking query may wait for a change. */
  waitMs?: number;
  onError?: (error: NomadError) => void;
}

/**
 * The blocking-query fallback to the event stream: yields the node's full
 * allocation list first, then again each time Nomad's index for it moves.
 * Follows Nomad's blocking-query rules: a timeout returns the same index
 * (nothing yielded), and an index that goes backwards (a restored or new
 * leader) resets the watch to a fresh read.
 */
export async function* watchNodeAllocations(client: NomadClient, nodeId: string, options: NodeAllocationsWatchOptions = {}): AsyncGenerator<Indexed<NomadAllocation[]>> {
  let index = 0;
  let backoffMs = 0;
  while (!options.signal?.aborted) {
    let result: Indexed<NomadAllocation[]>;
    try {
      result = await client.nodeAllocations(nodeId, { index, waitMs: options.waitMs ?? 60_000, signal: options.signal });
    } catch (error) {
      if (options.signal?.aborted) return;
      if (error instanceof NomadError) options.onError?.(error);
      else throw error;
      backoffMs = nextBackoff(backoffMs, options);
      await delay(backoffMs, options.signal);
      continue;
    }
    backoffMs = 0;
    if (result.index < index) {
      index = 0;
      continue;
    }
    if (index === 0 || result.index > index) yield result;
    // Index 0 would never block; Nomad's indexes start above it anyway.
    index = Math.max(result.index, 1);
  }
}
