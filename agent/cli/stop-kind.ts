import type { DozeConfig } from '../config/schema.js';
import { NomadClient, NomadError } from '../nomad/nomad-client.js';
import { messageOf } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';

/*
 * Which stop a signal asks for. A final stop wakes every sleeper (nobody else
 * would); a hand-over leaves them asleep for the next agent (agent.ts stop()).
 * Waking a node's sleepers for nothing on every upgrade is what this avoids;
 * leaving them asleep with no successor is worse (nobody would wake them), so
 * whatever is unsure is a final stop.
 */

export type StopKind = 'final' | 'handover';

/** How long the agent asks Nomad before it settles for a final stop (Nomad's kill_timeout is 30 s in the job). */
const ASK_NOMAD_MS = 2000;

/**
 * Under Nomad: a rolling update of the agent's system job stops this allocation because a newer
 * version of the job replaces it on this node, so a successor follows; `nomad job stop` marks the
 * job stopped (Stop, itself a new version), a purge removes it (404), and a drain or a node that no
 * longer matches the job's constraints leaves the version as it was: all final.
 */
export function nomadStopKind(job: { Stop?: boolean; Version?: number } | undefined, allocationJobVersion: number | undefined): StopKind {
  if (!job || job.Stop === true) return 'final';
  if (job.Version === undefined || allocationJobVersion === undefined) return 'final';
  return job.Version > allocationJobVersion ? 'handover' : 'final';
}

export interface StopKindContext {
  /** `doze agent --handover`: SIGTERM hands over. */
  handoverFlag: boolean;
  config: Pick<DozeConfig, 'nomad'>;
  env: NodeJS.ProcessEnv;
  log: Logger;
}

/** SIGUSR2 hands over; SIGINT stops for good; SIGTERM hands over with --handover, else asks Nomad when run by it. */
export async function stopKind(signal: string, context: StopKindContext): Promise<StopKind> {
  if (signal === 'SIGUSR2') return 'handover';
  if (signal !== 'SIGTERM') return 'final';
  if (context.handoverFlag) return 'handover';
  const allocId = context.env.NOMAD_ALLOC_ID;
  const nomad = context.config.nomad;
  if (!allocId || !nomad) return 'final';
  const client = new NomadClient({ address: nomad.address, token: nomad.token, region: nomad.region, tls: nomad.tls, namespace: context.env.NOMAD_NAMESPACE, timeoutMs: ASK_NOMAD_MS });
  try {
    const allocation = (await client.allocation(allocId)).value;
    const job = await client.job(allocation.JobID).then(
      (answer) => answer.value,
      (error: unknown) => {
        if (error instanceof NomadError && error.status === 404) return undefined;
        throw error;
      },
    );
    const kind = nomadStopKind(job, allocation.Job?.Version);
    context.log.info({ job: allocation.JobID, version: job?.Version, stopped: job?.Stop ?? job === undefined, allocationVersion: allocation.Job?.Version, kind }, 'asked Nomad which stop this is');
    return kind;
  } catch (error) {
    context.log.warn({ err: messageOf(error) }, 'could not ask Nomad whether a successor follows: a final stop (wakes every sleeper)');
    return 'final';
  }
}
