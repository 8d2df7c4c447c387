import { RuntimeError } from '../../agent/shared/errors.js';
import type { Runtime } from '../../agent/runtimes/runtime.js';

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface RuntimeTweaks {
  /** Extra time after a sleep has taken effect (aim a request at the `pausing` window). */
  sleepLingerMs?: number;
  /** Called when a sleep has taken effect, before its linger: the event a test waits on. */
  onAsleep?: () => void;
  /** Extra time before a wake starts (hold connections through a slow wake). */
  wakeDelayMs?: number;
  /** Whether a wake fails (read at call time, so a test can flip it). */
  failWake?: () => boolean;
  /** Whether a sleep fails after taking effect (the agent must undo it). */
  failSleep?: () => boolean;
}

/** Wraps a real runtime (for AgentOptions.wrapRuntime) to make it slow or failing at chosen points; `inner` is the real one. */
export function tweakRuntime(tweaks: RuntimeTweaks) {
  return (runtime: Runtime): Runtime & { inner: Runtime } => ({
    inner: runtime,
    kind: runtime.kind,
    capabilities: runtime.capabilities,
    probe: () => runtime.probe(),
    sleep: async (deadline) => {
      await runtime.sleep(deadline);
      tweaks.onAsleep?.();
      if (tweaks.sleepLingerMs) await delay(tweaks.sleepLingerMs);
      if (tweaks.failSleep?.()) throw new RuntimeError('E_TEST', 'pause failed on purpose (after freezing)');
    },
    wake: async (deadline) => {
      if (tweaks.wakeDelayMs) await delay(tweaks.wakeDelayMs);
      if (tweaks.failWake?.()) throw new RuntimeError('E_TEST', 'resume refused on purpose');
      await runtime.wake(deadline);
    },
    inspect: () => runtime.inspect(),
    close: runtime.close ? () => runtime.close!() : undefined,
  });
}
