import { RuntimeError } from '../../agent/errors.js';
import type { Runtime } from '../../agent/runtimes/runtime.js';

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface RuntimeTweaks {
  /** Extra time after a pause has taken effect (aim a request at the `pausing` window). */
  pauseLingerMs?: number;
  /** Called when a pause has taken effect, before its linger: the event a test waits on. */
  onPaused?: () => void;
  /** Extra time before a resume starts (hold connections through a slow wake). */
  resumeDelayMs?: number;
  /** Whether a resume fails (read at call time, so a test can flip it). */
  failResume?: () => boolean;
  /** Whether a pause fails after taking effect (the agent must undo it). */
  failPause?: () => boolean;
}

/** Wraps a real runtime (for AgentOptions.wrapRuntime) to make it slow or failing at chosen points; `inner` is the real one. */
export function tweakRuntime(tweaks: RuntimeTweaks) {
  return (runtime: Runtime): Runtime & { inner: Runtime } => ({
    inner: runtime,
    kind: runtime.kind,
    capabilities: runtime.capabilities,
    probe: () => runtime.probe(),
    pause: async (deadline) => {
      await runtime.pause(deadline);
      tweaks.onPaused?.();
      if (tweaks.pauseLingerMs) await delay(tweaks.pauseLingerMs);
      if (tweaks.failPause?.()) throw new RuntimeError('E_TEST', 'pause failed on purpose (after freezing)');
    },
    resume: async (deadline) => {
      if (tweaks.resumeDelayMs) await delay(tweaks.resumeDelayMs);
      if (tweaks.failResume?.()) throw new RuntimeError('E_TEST', 'resume refused on purpose');
      await runtime.resume(deadline);
    },
    inspect: () => runtime.inspect(),
    close: runtime.close ? () => runtime.close!() : undefined,
  });
}
