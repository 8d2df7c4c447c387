/*
 * Pause sleep for a task of Nomad's own qemu driver (driver = "qemu",
 * doze.mode = "pause"): QEMU is the task, so the agent stops and resumes the VM
 * through QMP, and with doze.reclaim pushes its guest RAM out of memory while
 * it is stopped. The job helper appends what that needs to the task's args:
 *
 *   -qmp unix:local/doze-qmp.sock,server=on,wait=off
 *   -object memory-backend-file,id=doze-ram,size=<memory>M,mem-path=local/doze-ram,share=on
 *   -machine memory-backend=doze-ram                       (the last two with doze.reclaim)
 *
 * The paths are relative: the driver starts QEMU in the task directory
 * (<alloc dir>/<alloc id>/<task>), and NOMAD_TASK_DIR would interpolate to
 * "/local", the path inside an image-isolated task, which QEMU cannot see.
 * The agent finds the socket at <alloc dir>/<alloc id>/<task>/local/doze-qmp.sock
 * (agent/nomad/qemu-task-paths.ts). QEMU merges the second -machine with
 * the driver's own `-machine type=pc,accel=…`, and the driver passes
 * `-m <memory>M`, which the backend's size must match.
 */

import { QEMU_TASK_QMP_SOCKET as QMP_SOCKET, QEMU_TASK_RAM_FILE as RAM_FILE } from '../agent/nomad/qemu-task-paths.js';
import { RAM_BACKEND_ID } from '../agent/runtimes/qemu/vm-command-line.js';

/** The QMP socket and RAM file, relative to the task directory (QEMU's working directory); shared with the agent. */
export { QMP_SOCKET, RAM_FILE };

/** What a qemu-driver client's `args_allowlist` must allow for a rendered task. */
export function allowlistEntries(reclaim: boolean): string[] {
  return reclaim ? ['-qmp', '-object', '-machine'] : ['-qmp'];
}

/** The args doze appends, after the user's own. */
export function dozeQemuArgs(memoryMb: number, reclaim: boolean): string[] {
  return [
    '-qmp', `unix:${QMP_SOCKET},server=on,wait=off`,
    ...(reclaim
      ? [
          '-object', `memory-backend-file,id=${RAM_BACKEND_ID},size=${memoryMb}M,mem-path=${RAM_FILE},share=on`,
          '-machine', `memory-backend=${RAM_BACKEND_ID}`,
        ]
      : []),
  ];
}

export interface PauseArgsResult {
  /** The user's args (minus any earlier rendering's) followed by doze's; undefined when there are problems. */
  args: string[] | undefined;
  problems: string[];
}

/** QEMU takes `--opt` for `-opt`. */
function optionName(arg: string): string {
  return arg.startsWith('--') && arg.length > 2 ? arg.slice(1) : arg;
}

/** `a=1,b=2` (QEMU's keyval; `,,` is an escaped comma) → its items. */
function items(value: string): string[] {
  return value.split(/(?<!,),(?!,)/).filter(Boolean);
}

function itemValue(value: string, key: string): string | undefined {
  const found = items(value).find((item) => item.startsWith(`${key}=`));
  return found?.slice(key.length + 1);
}

/** The path of a `unix:PATH[,opts]` (or `unix:path=PATH`) chardev, without a leading `./`. */
function unixPath(chardev: string): string | undefined {
  if (!chardev.startsWith('unix:')) return undefined;
  const [first] = items(chardev.slice('unix:'.length));
  const path = first?.startsWith('path=') ? first.slice('path='.length) : first;
  return path?.replace(/^(\.\/)+/, '');
}

/** Ours from an earlier rendering: taken out, then appended afresh (so a changed memory size is picked up). */
function isDozeArg(name: string, value: string): boolean {
  if (name === '-qmp') return unixPath(value) === QMP_SOCKET;
  if (name === '-object') return items(value)[0] === 'memory-backend-file' && itemValue(value, 'id') === RAM_BACKEND_ID;
  if (name === '-machine' || name === '-M') return value === `memory-backend=${RAM_BACKEND_ID}`;
  return false;
}

/**
 * The task's args with doze's appended, or the conflicts that prevent it.
 * Idempotent: args an earlier rendering added are recognised and replaced.
 */
export function withQemuPauseArgs(args: readonly string[], options: { place: string; memoryMb: number; reclaim: boolean }): PauseArgsResult {
  const { place, memoryMb, reclaim } = options;
  const problems: string[] = [];
  const kept: string[] = [];
  const offReclaim = 'or set doze.reclaim = "false" (the VM is then only stopped, its RAM stays in memory)';
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const name = optionName(arg);
    const value = args[i + 1];
    const watched = ['-qmp', '-qmp-pretty', '-mon', '-object', '-machine', '-M', '-mem-path', '-numa', '-m'].includes(name);
    if (!watched || value === undefined) {
      kept.push(arg);
      continue;
    }
    i++;
    if (isDozeArg(name, value)) continue;
    kept.push(arg, value);
    const quoted = `${JSON.stringify(arg)} ${JSON.stringify(value)}`;
    switch (name) {
      case '-qmp':
      case '-qmp-pretty':
        problems.push(
          `${place}: args ${quoted}: doze.mode "pause" stops and resumes this VM through the QMP socket doze job render adds (${QMP_SOCKET}, in the task directory); ` +
            `a QMP monitor of your own could resume a sleeping VM behind the agent's back: remove ${JSON.stringify(arg)} and its value from args`,
        );
        break;
      case '-mon':
        if (itemValue(value, 'mode') === 'control') {
          problems.push(
            `${place}: args ${quoted} is a QMP monitor: doze.mode "pause" stops and resumes this VM through the QMP socket doze job render adds (${QMP_SOCKET}); ` +
              'remove this -mon (and its -chardev) from args',
          );
        }
        break;
      case '-object':
        if (itemValue(value, 'id') === RAM_BACKEND_ID) {
          problems.push(`${place}: args ${quoted}: the object id ${JSON.stringify(RAM_BACKEND_ID)} is doze's (its guest RAM backend): rename your object`);
        }
        break;
      case '-machine':
      case '-M':
        if (reclaim && itemValue(value, 'memory-backend') !== undefined) {
          problems.push(
            `${place}: args ${quoted} sets a memory backend, but with doze.reclaim (default true) doze job render backs the guest RAM with its own file (${RAM_FILE}) so the agent can push it out of memory while the VM sleeps: ` +
              `remove memory-backend=… from ${JSON.stringify(arg)} (and its -object), ${offReclaim}`,
          );
        }
        break;
      case '-mem-path':
        if (reclaim) {
          problems.push(`${place}: args ${quoted}: with doze.reclaim (default true) doze job render backs the guest RAM with ${RAM_FILE}, which QEMU refuses beside -mem-path: remove -mem-path, ${offReclaim}`);
        }
        break;
      case '-numa':
        if (reclaim && itemValue(value, 'memdev') !== undefined) {
          problems.push(`${place}: args ${quoted}: with doze.reclaim (default true) doze job render sets -machine memory-backend=${RAM_BACKEND_ID}, which QEMU refuses beside -numa memdev=…: remove memdev from -numa, ${offReclaim}`);
        }
        break;
      case '-m':
        if (reclaim) {
          problems.push(
            `${place}: args ${quoted}: the qemu driver already passes -m ${memoryMb}M (resources.memory), and doze's RAM file (${RAM_FILE}) is made that size: ` +
              `remove -m from args and set the guest's memory with resources.memory, ${offReclaim}`,
          );
        }
        break;
    }
  }
  if (problems.length > 0) return { args: undefined, problems };
  return { args: [...kept, ...dozeQemuArgs(memoryMb, reclaim)], problems: [] };
}
