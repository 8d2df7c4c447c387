import type { ContainerInspect, ContainerSummary, DockerEngine } from './engine-client.js';

/*
 * A Nomad docker task's container, and its allocation's pause container, as
 * Nomad's docker driver makes them (drivers/docker/driver.go, network.go;
 * docs/docker.md): every container of the allocation is labelled
 * com.hashicorp.nomad.alloc_id; the task's is named `<task>-<alloc id>` (`/`
 * in the task name becomes `_`) and labelled com.hashicorp.nomad.task_name
 * only when the client's `extra_labels` ask for it; the pause container that
 * owns a bridge-mode group's network namespace is `nomad_init_<alloc id>`.
 */

export const ALLOC_ID_LABEL = 'com.hashicorp.nomad.alloc_id';
export const TASK_NAME_LABEL = 'com.hashicorp.nomad.task_name';

export function taskContainerName(allocId: string, task: string): string {
  return `${task.replaceAll('/', '_')}-${allocId}`;
}

export function pauseContainerName(allocId: string): string {
  return `nomad_init_${allocId}`;
}

/** Why a task's container cannot be used (yet): rendered to text at the edge. */
export type TaskContainerProblem =
  | { kind: 'no-containers'; allocId: string }
  | { kind: 'no-task-container'; allocId: string; task: string; names: string[] }
  | { kind: 'not-running'; allocId: string; task: string; id: string; status: string };

export type TaskContainerResult =
  | { kind: 'found'; container: ContainerInspect; pause: ContainerInspect | undefined }
  | { kind: 'problem'; problem: TaskContainerProblem };

function named(summary: ContainerSummary, name: string): boolean {
  return summary.Names.includes(`/${name}`);
}

/** The task's container (inspected) and its allocation's pause container, if any. */
export async function findTaskContainer(engine: DockerEngine, allocId: string, task: string, signal?: AbortSignal): Promise<TaskContainerResult> {
  const all = await engine.containersWithLabels([`${ALLOC_ID_LABEL}=${allocId}`], signal);
  if (all.length === 0) return { kind: 'problem', problem: { kind: 'no-containers', allocId } };
  const byLabel = all.filter((c) => c.Labels[TASK_NAME_LABEL] === task);
  const byName = all.filter((c) => named(c, taskContainerName(allocId, task)));
  // A task restarted in place leaves no old container (Nomad removes it), but prefer a running one.
  const candidates = (byLabel.length > 0 ? byLabel : byName).sort((a, b) => Number(b.State === 'running') - Number(a.State === 'running'));
  const summary = candidates[0];
  if (!summary) return { kind: 'problem', problem: { kind: 'no-task-container', allocId, task, names: all.flatMap((c) => c.Names) } };
  const container = await engine.inspect(summary.Id, signal);
  if (!container.State.Running || container.State.Pid <= 0) {
    return { kind: 'problem', problem: { kind: 'not-running', allocId, task, id: container.Id, status: container.State.Status } };
  }
  const pauseSummary = all.find((c) => named(c, pauseContainerName(allocId)));
  const pause = pauseSummary ? await engine.inspect(pauseSummary.Id, signal) : undefined;
  return { kind: 'found', container, pause };
}

export function describeTaskContainerProblem(problem: TaskContainerProblem): string {
  switch (problem.kind) {
    case 'no-containers':
      return `no Docker container is labelled ${ALLOC_ID_LABEL}=${problem.allocId} (not started yet, or another Docker engine: set the agent's docker.socket or DOCKER_HOST)`;
    case 'no-task-container':
      return `no container of allocation ${problem.allocId} is named ${taskContainerName(problem.allocId, problem.task)} or labelled ${TASK_NAME_LABEL}=${problem.task} (found: ${problem.names.join(', ') || 'none'})`;
    case 'not-running':
      return `container ${problem.id.slice(0, 12)} of task ${JSON.stringify(problem.task)} is ${problem.status}, not running`;
  }
}
