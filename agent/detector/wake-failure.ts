import { messageOf } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { BpfInstanceState } from '../sources/bpf-records.js';
import type { TrafficSource } from '../sources/traffic-source.js';
import type { SleepHooks } from './detector-contract.js';
import type { ManagedInstance } from './managed-instance.js';
import { describeFailure } from './reasons.js';
import type { WakeSignals } from './wake-signals.js';

/** What a failed wake needs of the detector: its transition to `failed` and its `wakeFailed` event. */
export interface WakeFailurePort {
  source: TrafficSource;
  hooks: SleepHooks;
  log: Logger;
  signals: Pick<WakeSignals, 'wakeEnded'>;
  failed(why: string): void;
  reported(why: string): void;
}

/** A wake that failed is said, never hidden: kept as its failure and last error, `failed`, reported through the hooks and the event. */
export async function failWake(instance: ManagedInstance, error: unknown, port: WakeFailurePort): Promise<void> {
  instance.failure = { kind: 'wake-failed', detail: messageOf(error) };
  const why = describeFailure(instance.failure);
  instance.lastError = { message: why, atMs: Date.now() };
  port.signals.wakeEnded(instance, true);
  // No more wake events for an instance that cannot come back; the stub reports it critical.
  await port.source.setState(instance.key, BpfInstanceState.awake).catch(() => undefined);
  port.failed(why);
  await port.hooks.wakeFailed(instance, why).catch((e) => port.log.error({ instance: instance.id, err: messageOf(e) }, 'reporting the failure failed'));
  port.log.error({ instance: instance.id, err: messageOf(error) }, 'wake failed');
  port.reported(why);
}
