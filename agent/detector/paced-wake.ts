import type { Logger } from '../shared/log.js';
import type { FaultBackGate, PacedTicket } from '../scheduler/fault-back-gate.js';
import type { NodeBudgetLimits } from '../scheduler/node-budget.js';
import { faultBackMiB } from './fault-back.js';
import { lastActivityNs, type ManagedInstance } from './managed-instance.js';

/** Paced mass wakes wait at most this long for room unless the budget says otherwise (config default). */
const PACED_WAKE_TIMEOUT_MS = 20_000;

/**
 * A paced wake's turn: at once when it has nothing to fault back, else in budget order or at its deadline.
 * A ticket that went ahead over budget is the caller's to count (the detector's budgetOverruns).
 */
export async function enterPacing(instance: ManagedInstance, pacing: FaultBackGate | undefined, budgetLimits: NodeBudgetLimits | undefined, log: Logger): Promise<PacedTicket | undefined> {
  const faultBack = faultBackMiB(instance);
  if (!pacing || faultBack === 0) return undefined;
  const timeoutMs = budgetLimits?.pacedWakeTimeout ?? PACED_WAKE_TIMEOUT_MS;
  instance.queuedSinceMs = Date.now();
  try {
    const ticket = await pacing.enter({ id: instance.id, faultBackMiB: faultBack, lastActivityNs: lastActivityNs(instance) }, Date.now() + timeoutMs);
    if (ticket.overBudget) {
      const why = `woken over the node budget: no room for its ${faultBack} MiB to fault back within ${timeoutMs} ms (paced wake)`;
      instance.lastError = { message: why, atMs: Date.now() };
      log.warn({ instance: instance.id, faultBackMiB: faultBack, waitedMs: ticket.waitedMs }, why);
    }
    return ticket;
  } finally {
    instance.queuedSinceMs = undefined;
  }
}
