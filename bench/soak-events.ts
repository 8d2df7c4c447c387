/** What the soak's agent process (bench/soak-agent.mjs) tells the bench, one JSON object a line on its stdout. */
import { z } from 'zod';

export const soakEventSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('ready'), address: z.string(), pid: z.number().int() }),
  /** A detector transition; `at` is the agent's Date.now() (the bench shares the clock). */
  z.object({ type: z.literal('transition'), id: z.string(), from: z.string(), to: z.string(), reason: z.string(), at: z.number() }),
  /** A wake completed: first packet seen by the tc program → resumed (doze_wake_seconds' sample). */
  z.object({ type: z.literal('woke'), id: z.string(), ms: z.number() }),
  z.object({ type: z.literal('wakeFailed'), id: z.string(), reason: z.string() }),
  /** A wake event reached the agent: `key` is the instance's map key (its IPv4), `lagMs` tc → agent. */
  z.object({ type: z.literal('wakeEvent'), key: z.string(), lagMs: z.number() }),
  z.object({ type: z.literal('stopped') }),
]);
export type SoakEvent = z.infer<typeof soakEventSchema>;

/** One line for the bench, or undefined for anything else (a stray write). */
export function parseSoakEvent(line: string): SoakEvent | undefined {
  try {
    const parsed = soakEventSchema.safeParse(JSON.parse(line));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
