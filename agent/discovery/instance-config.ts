import { describeIssues } from '../shared/zod-issues.js';
import { instanceSchema, type InstanceConfig, type NomadConfig } from '../config/schema.js';
import { DEFAULT_ALLOC_DIR, qemuTaskFiles } from '../nomad/qemu-task-paths.js';
import type { AnnotatedAllocation } from './allocation-instance.js';
import { OWN_CGROUP_DRIVERS } from './task-cgroup.js';

/*
 * A Nomad allocation's instance (allocation-instance.ts: what Nomad's payload
 * and the doze.* meta keys say) and what this node adds to it (the host side of
 * its veth, its task's cgroup) → the instance config the agent manages, or the
 * reason it cannot be one. Pure: the kernel lookups happen before, in the
 * allocation manager (nomad-instances.ts).
 *
 * The runtime by `doze.mode`: `pause` → the freezer on the task's cgroup, or
 * QMP stop/cont for a task of Nomad's qemu driver. `snapshot` is only run by
 * `doze vm run --register`, which registers its VM itself; other `snapshot`
 * tasks and `scale` are unsupported, with the reason.
 */

/** What the node holds for an allocation: found in the kernel, not in Nomad's payload. */
export interface NodeFacts {
  /** Host side of a bridge allocation's veth; none in host network mode. */
  interface?: string;
  /** The task's cgroup (task-cgroup.ts). */
  cgroup: { version: 1 | 2; path: string };
}

/** The agent's `nomad` settings that shape an instance, and its own allocation (NOMAD_ALLOC_ID), which it never manages. */
export type InstanceSettings = Pick<NomadConfig, 'allocDir' | 'checkTls'> & { ownAllocId?: string };

export type InstanceConfigResult = { kind: 'config'; config: InstanceConfig } | { kind: 'invalid'; reason: string };

/** Why this agent cannot manage an instance at all (until a later version), or undefined. */
export function unsupportedReason(instance: AnnotatedAllocation, ownAllocId: string | undefined): string | undefined {
  if (instance.mode === 'snapshot') {
    // (The opening words are what test/agent/nomad-instances.test.ts matches.)
    return `doze.mode "snapshot" is not supported by this agent yet for a task not run by "doze vm run --register" (task ${JSON.stringify(instance.task)} uses the ${instance.driver} driver): register the job with "doze job run", or render it with "doze job render", which runs a qemu task that way; the allocation runs unmanaged`;
  }
  if (instance.mode !== 'pause') {
    return `doze.mode ${JSON.stringify(instance.mode)} is not supported by this agent yet (supported: "pause"); the allocation runs unmanaged`;
  }
  if (OWN_CGROUP_DRIVERS.has(instance.driver)) {
    return `the ${instance.driver} driver keeps task ${JSON.stringify(instance.task)} in its own cgroup, not Nomad's nomad/<alloc>.<task>: pause mode supports docker, exec, raw_exec, java and other executor-based drivers`;
  }
  if (ownAllocId && instance.allocId === ownAllocId) {
    return 'this is the doze agent\'s own allocation: the agent never manages itself';
  }
  return undefined;
}

/** The instance config for `instance` on this node, or why it cannot be one (unsupported, or refused by the instance schema). */
export function instanceConfigFor(instance: AnnotatedAllocation, node: NodeFacts, settings: InstanceSettings = {}): InstanceConfigResult {
  const unsupported = unsupportedReason(instance, settings.ownAllocId);
  if (unsupported) return { kind: 'invalid', reason: unsupported };
  const { cgroup } = node;
  const runtime = instance.driver === 'qemu'
    ? qemuDriverRuntime(settings.allocDir ?? DEFAULT_ALLOC_DIR, instance, cgroup)
    : { kind: 'freezer', cgroup: cgroup.path, ...(instance.reclaimFreezer ? { reclaim: true, reclaimAfter: instance.reclaimAfterMs, reclaimKeep: instance.reclaimKeep } : {}) };
  const checkTls = settings.checkTls?.[instance.service];
  const raw = {
    id: instance.id,
    address: instance.address,
    addresses: instance.addresses,
    checkAddresses: instance.checkAddresses,
    ...(node.interface !== undefined ? { interface: node.interface } : {}),
    idleTimeout: instance.idleTimeoutMs,
    metricsPath: instance.metricsPath,
    idlePolicy: instance.idlePolicy,
    ...(instance.wake !== undefined ? { wake: instance.wake } : {}),
    busyCpu: instance.busyCpu,
    minAwake: instance.minAwakeMs,
    ...(instance.maxAwakeMs !== undefined ? { maxAwake: instance.maxAwakeMs } : {}),
    ...(instance.maxSleepMs !== undefined ? { maxSleep: instance.maxSleepMs } : {}),
    ...(checkTls ? { checkTls } : {}),
    ...(instance.dryRun ? { dryRun: true } : {}),
    runtime,
  };
  const parsed = instanceSchema.safeParse(raw);
  if (!parsed.success) return { kind: 'invalid', reason: `cannot be an instance:\n${describeIssues(parsed.error.issues, raw)}` };
  return { kind: 'config', config: parsed.data };
}

/**
 * A task of Nomad's qemu driver is the VMM itself: only `pause` (QMP stop/cont, the process
 * stays) is possible. `doze job render` gives it `-qmp unix:local/doze-qmp.sock` and its RAM in
 * local/doze-ram, relative to the task directory, which is QEMU's working directory.
 */
export function qemuDriverRuntime(allocDir: string, instance: Pick<AnnotatedAllocation, 'allocId' | 'task' | 'reclaim'>, cgroup: { version: 1 | 2; path: string }) {
  const files = qemuTaskFiles(allocDir, instance.allocId, instance.task);
  return {
    kind: 'qemu',
    mode: 'pause',
    qmp: files.qmp,
    reclaim: instance.reclaim,
    // QMP reports mem-path as given (relative to QEMU's working directory): name it here instead.
    ...(instance.reclaim ? { ramFile: files.ramFile } : {}),
    // cgroup v2's task cgroup holds its memory too; v1 keeps memory in another hierarchy.
    ...(cgroup.version === 2 ? { memoryCgroup: cgroup.path } : {}),
    // The busy guard counts QEMU's CPU in the task's cgroup (v1: the cpuacct one at its freezer path).
    cpuCgroup: cgroup.path,
  };
}
