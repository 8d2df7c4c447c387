/** Exit codes every doze command uses (documented in the README). */
export const EXIT = {
  ok: 0,
  /** The command ran and failed: agent crashed on a runtime error, job invalid, agent unreachable. */
  failure: 1,
  /** Usage, config or connection error: nothing was done. */
  usage: 2,
} as const;
