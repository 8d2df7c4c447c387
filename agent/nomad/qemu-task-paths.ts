import { join } from 'node:path';

/*
 * Where a task of Nomad's qemu driver keeps what doze's pause needs. `doze job
 * render` puts these relative paths on QEMU's command line
 * (plugin/qemu-pause-args.ts): the driver starts QEMU in the task directory,
 * <alloc dir>/<alloc id>/<task>. The agent finds them there (discovery).
 * Kept apart so the job helper gets two constants without loading the agent.
 */

/** Where Nomad keeps allocation directories with its conventional data_dir (/opt/nomad/data). */
export const DEFAULT_ALLOC_DIR = '/opt/nomad/data/alloc';

/** The task's QMP socket and guest RAM file, relative to its task directory (QEMU's working directory). */
export const QEMU_TASK_QMP_SOCKET = 'local/doze-qmp.sock';
export const QEMU_TASK_RAM_FILE = 'local/doze-ram';

/** The same two, absolute, for the task `task` of allocation `allocId`. */
export function qemuTaskFiles(allocDir: string, allocId: string, task: string): { qmp: string; ramFile: string } {
  const taskDir = join(allocDir, allocId, task);
  return { qmp: join(taskDir, QEMU_TASK_QMP_SOCKET), ramFile: join(taskDir, QEMU_TASK_RAM_FILE) };
}
