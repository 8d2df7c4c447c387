export const INSTANCE_STATES = ['running', 'pausing', 'sleeping', 'waking', 'failed'] as const;
export type InstanceState = (typeof INSTANCE_STATES)[number];

/** The transitions the state machine allows; anything else is a bug and is refused. */
const ALLOWED: Record<InstanceState, readonly InstanceState[]> = {
  running: ['pausing', 'failed'],
  pausing: ['sleeping', 'running', 'failed'],
  sleeping: ['waking', 'failed'],
  waking: ['running', 'failed'],
  failed: ['waking', 'running'],
};

export function canTransition(from: InstanceState, to: InstanceState): boolean {
  return ALLOWED[from].includes(to);
}
