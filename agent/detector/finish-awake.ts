import { messageOf } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { BpfInstanceState } from '../sources/bpf-records.js';
import type { TrafficSource } from '../sources/traffic-source.js';
import type { SleepHooks } from './detector-contract.js';
import type { ManagedInstance } from './managed-instance.js';

/**
 * The map says awake and checks reach the instance again. A failure here (doze-maps, iptables)
 * is logged and kept as the instance's last error, and the caller goes on to `running`: the
 * workload is not paused, so an instance must never stay in waking or pausing for it.
 */
export async function finishAwake(instance: ManagedInstance, source: TrafficSource, hooks: SleepHooks, log: Logger, what: string): Promise<void> {
  const errors: string[] = [];
  await source.setState(instance.key, BpfInstanceState.awake).catch((e) => errors.push(`the state map: ${messageOf(e)}`));
  await hooks.awake(instance).catch((e) => errors.push(`the check redirect: ${messageOf(e)}`));
  if (errors.length === 0) return;
  instance.lastError = { message: `${what}: ${errors.join('; ')}`, atMs: Date.now() };
  log.error({ instance: instance.id, err: errors.join('; ') }, `${what} failed; the instance is awake`);
}
