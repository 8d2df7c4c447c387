/*
 * Why an instance is held awake, why it was found idle, and why it failed: discriminated unions the detector
 * decides with (the node budget asks `kind === 'busy'`, never the wording), turned into text only
 * where a person reads them: the status API and page (agent/status/) and the log.
 */

/** What the busy guard measured over its window. */
export type BusyDetail =
  | { resource: 'cpu'; cpuMs: number; spanMs: number }
  | { resource: 'io'; mib: number; spanMs: number };

/** Why an instance is held awake past its idle timeout. */
export type HoldReason =
  /** Requests whose answer is not out yet (or is stalled on a client's closed window). */
  | { kind: 'in-flight'; requests: number }
  /** Policy `connections`: connections still open. */
  | { kind: 'open-connection'; connections: number }
  /** The workload still computes or does block I/O (the busy guard). */
  | { kind: 'busy'; detail: BusyDetail }
  /** The busy guard has no reading old enough to compare with yet. */
  | { kind: 'measuring' }
  /** It must never sleep (a check the stub cannot answer); `detail` says which and why. */
  | { kind: 'never-sleeps'; detail: string }
  /**
   * Its Nomad client is stopping or restarting its task (`Killing`, `Restart Signaled`) or
   * signalling it (`Signaling`), with Nomad's message: awake until that is done (agent/nomad/task-events.ts).
   */
  | { kind: 'nomad-task-event'; event: string; message: string | undefined; stopping: boolean }
  /** Its connections could not be read (doze-maps answered an error): never taken for "nothing in flight". */
  | ConnectionsUnreadable;

/** A failed read of the connection map, as the decision that needed it keeps it. */
export interface ConnectionsUnreadable {
  kind: 'connections-unreadable';
  message: string;
}

/** Why an instance was found idle: the reason of its sleep. */
export type IdleReason =
  /** No traffic (and, for the requests and connections policies, nothing in flight); maybe after a busy spell. */
  | { kind: 'quiet'; quietMs: number; nothingInFlight: boolean; busyForMs?: number }
  /** max_awake: no packet for that long, whatever still held it. */
  | { kind: 'max-awake'; quietMs: number; despite: HoldReason };

/** Why an instance is failed (critical to its checks) until a wake succeeds. */
export type FailureReason =
  /** Its runtime did not resume it; `detail` is what the runtime said. */
  { kind: 'wake-failed'; detail: string };

export function describeFailure(reason: FailureReason): string {
  return `wake failed: ${reason.detail}`;
}

export function describeHold(reason: HoldReason): string {
  switch (reason.kind) {
    case 'in-flight':
      return `${reason.requests} request(s) in flight`;
    case 'open-connection':
      return `${reason.connections} open connection(s)`;
    case 'busy': {
      const d = reason.detail;
      return d.resource === 'cpu'
        ? `busy: ${Math.round(d.cpuMs)} ms CPU in the last ${Math.round(d.spanMs)} ms`
        : `busy: ${d.mib.toFixed(1)} MiB of block I/O in the last ${Math.round(d.spanMs)} ms`;
    }
    case 'measuring':
      return 'busy guard: measuring CPU';
    case 'never-sleeps':
      return reason.detail;
    case 'nomad-task-event':
      return `nomad: ${reason.event}${reason.message ? ` (${reason.message})` : ''}: awake while Nomad ${reason.stopping ? 'stops' : 'signals'} the task`;
    case 'connections-unreadable':
      return `its connections could not be read (${reason.message}): kept awake, read again soon`;
  }
}

export function describeIdle(reason: IdleReason): string {
  switch (reason.kind) {
    case 'quiet': {
      const text = `no traffic for ${reason.quietMs} ms${reason.nothingInFlight ? ' and nothing in flight' : ''}`;
      return reason.busyForMs === undefined ? text : `${text}, after ${reason.busyForMs} ms busy`;
    }
    case 'max-awake':
      return `max_awake: no packet for ${reason.quietMs} ms despite ${describeHold(reason.despite)}`;
  }
}
