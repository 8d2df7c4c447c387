import { z } from 'zod';
import type { NomadAllocation } from './nomad-schemas.js';

/*
 * The task events a Nomad client emits just before it kills, restarts or signals a task without
 * changing the allocation's desired status (nomad/structs/structs.go TaskEvent types; who emits
 * them: client/allocrunner/taskrunner):
 *   Killing           TaskKilling: the task is being killed (`nomad alloc stop` of one task,
 *                     a failed template signal, a sibling that failed, a restart's kill);
 *   Restart Signaled  TaskRestartSignal: `nomad alloc restart`, a template or Vault token with
 *                     `change_mode = "restart"` ("Template with change_mode restart re-rendered"),
 *                     `check_restart` ("healthcheck: check … unhealthy");
 *   Signaling         TaskSignaling: `nomad alloc signal`, a template with `change_mode =
 *                     "signal"` ("Template re-rendered"), a Vault token's signal.
 * A frozen v1 task takes no signal until it is thawed (drivers/shared/executor waits kill_timeout
 * + 15 s, then Nomad freezes, kills and thaws the cgroup), so doze wakes the instance as soon as
 * one of these reaches it. A template's `change_mode = "script"` runs its script inside the task
 * (an exec), which the cgroup entry watch wakes the instance for.
 */
export const THAW_FIRST_EVENTS = ['Killing', 'Restart Signaled', 'Signaling'] as const;
export type ThawFirstEvent = (typeof THAW_FIRST_EVENTS)[number];

const taskEventSchema = z.looseObject({
  Type: z.string(),
  /** Unix nanoseconds (above 2^53: compared as JS numbers, to about 256 ns). */
  Time: z.number(),
  DisplayMessage: z.string().optional(),
  KillTimeout: z.number().optional(),
});
const taskEventsSchema = z.array(taskEventSchema).nullish();

export interface TaskAction {
  task: string;
  type: ThawFirstEvent;
  /** Unix nanoseconds, as Nomad stamped it. */
  timeNs: number;
  /** Nomad's DisplayMessage, when it sent one ("Template re-rendered", "User requested restart"). */
  message: string | undefined;
  /** Killing: how long Nomad waits for the task after its signal (ns), when it says. */
  killTimeoutNs: number | undefined;
}

/** Per task of an allocation, the events it sent last (what was seen already), as keys (eventKey). */
export type TaskEventMarks = Record<string, string[]>;

/**
 * An event's identity: its time, type and message. Times are Unix ns, beyond a JS number's
 * precision (about 256 ns there), so two events may share a time; with type and message they
 * do not, short of two identical events within the same quarter microsecond.
 */
const eventKey = (e: { Type: string; Time: number; DisplayMessage?: string }) => `${e.Time} ${e.Type} ${e.DisplayMessage ?? ''}`;

/**
 * Pure: the thaw-first events of `alloc`'s tasks not in `seen`, oldest first, and the marks to
 * keep. Nomad keeps a task's last 10 events and sends them all with every update
 * (task_runner.go appendEvent), so an event is new when it was not among those sent before.
 */
export function newTaskActions(alloc: Pick<NomadAllocation, 'TaskStates'>, seen: TaskEventMarks | undefined): { actions: TaskAction[]; marks: TaskEventMarks } {
  const marks: TaskEventMarks = { ...seen };
  const actions: TaskAction[] = [];
  for (const [task, state] of Object.entries(alloc.TaskStates ?? {})) {
    const parsed = taskEventsSchema.safeParse((state as { Events?: unknown } | null)?.Events);
    if (!parsed.success || !parsed.data) continue;
    const before = new Set(seen?.[task] ?? []);
    marks[task] = parsed.data.map(eventKey);
    for (const event of parsed.data) {
      if (before.has(eventKey(event)) || !(THAW_FIRST_EVENTS as readonly string[]).includes(event.Type)) continue;
      actions.push({ task, type: event.Type as ThawFirstEvent, timeNs: event.Time, message: event.DisplayMessage || undefined, killTimeoutNs: event.KillTimeout });
    }
  }
  actions.sort((a, b) => a.timeNs - b.timeNs);
  return { actions, marks };
}
