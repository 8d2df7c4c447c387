import test from 'ava';
import { readFileSync } from 'node:fs';
import { newTaskActions, THAW_FIRST_EVENTS } from '../../agent/nomad/task-events.js';

/** TaskStates as Nomad sends them (test/fixtures/nomad/allocation.json: the "Read Allocation" sample, with its full TaskEvent fields). */
function taskStates(events: Array<Record<string, unknown>>): Record<string, unknown> {
  const fixture = JSON.parse(readFileSync(new URL('../fixtures/nomad/allocation.json', import.meta.url), 'utf8')) as { body: { TaskStates: Record<string, { Events: Array<Record<string, unknown>> }> } };
  const [task, state] = Object.entries(fixture.body.TaskStates)[0]!;
  const template = state.Events[0]!;
  return { [task]: { ...state, Events: [...state.Events, ...events.map((e) => ({ ...template, ...e }))] } };
}

test('the event types are Nomad\'s own strings (nomad/structs/structs.go TaskKilling, TaskRestartSignal, TaskSignaling)', (t) => {
  t.deepEqual([...THAW_FIRST_EVENTS], ['Killing', 'Restart Signaled', 'Signaling']);
});

test('new thaw-first events are found once each; other types and old ones are not', (t) => {
  const states = taskStates([{ Type: 'Signaling', Time: 2e18, DisplayMessage: 'Template re-rendered' }]);
  const task = Object.keys(states)[0]!;
  const first = newTaskActions({ TaskStates: states as never }, undefined);
  t.deepEqual(first.actions.map((a) => [a.type, a.message]), [['Signaling', 'Template re-rendered']], 'the sample\'s own events (Received, Task Setup, Started…) are not actions');
  const again = newTaskActions({ TaskStates: states as never }, first.marks);
  t.deepEqual(again.actions, [], 'the same event, sent again with the next update, is not new');
  const later = taskStates([
    { Type: 'Signaling', Time: 2e18, DisplayMessage: 'Template re-rendered' },
    { Type: 'Killing', Time: 2e18 + 1e9, KillTimeout: 5e9, DisplayMessage: 'Sent interrupt. Waiting 5s before force killing' },
  ]);
  const kill = newTaskActions({ TaskStates: later as never }, again.marks);
  t.like(kill.actions, [{ task, type: 'Killing', killTimeoutNs: 5e9 }]);
  t.is(kill.actions.length, 1);
});

test('a task whose Events are null or malformed is skipped, not thrown on', (t) => {
  t.deepEqual(newTaskActions({ TaskStates: { web: { State: 'running', Events: null }, other: { State: 'running', Events: [{ Type: 7 }] }, gone: null } as never }, {}).actions, []);
});
