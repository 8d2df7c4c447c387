import { join } from 'node:path';
import type { RuntimeConfig } from '../config/schema.js';
import { NomadClient } from '../nomad/nomad-client.js';
import { CloudHypervisorRuntime } from './cloud-hypervisor.js';
import { FakeRuntime } from './fake.js';
import { FirecrackerRuntime } from './firecracker.js';
import { FreezerRuntime } from './freezer.js';
import { NomadScaleRuntime } from './nomad-scale.js';
import { QemuPauseRuntime } from './qemu/qemu-pause.js';
import { QemuSnapshotRuntime } from './qemu/qemu-snapshot.js';
import type { Runtime } from './runtime.js';
import { SpawnVmmLauncher } from './vmm/vmm-launcher.js';

/** What some runtimes can share with the agent instead of building their own (nomad-scale: the agent's Nomad client). */
export interface RuntimeDeps {
  nomad?: NomadClient;
}

/** A freezer instance's handle file, named after its cgroup. */
export function defaultFreezerHandle(cgroup: string): string {
  return join('/run/doze/freezer', `${cgroup.replace(/^\/+/, '').replace(/[^A-Za-z0-9._-]/g, '_')}.json`);
}

export function createRuntime(config: RuntimeConfig, deps: RuntimeDeps = {}): Runtime {
  switch (config.kind) {
    case 'freezer':
      return new FreezerRuntime(config.cgroup, undefined, {
        memoryCgroup: config.memoryCgroup,
        reclaim: config.reclaim ? { afterMs: config.reclaimAfter, handleFile: config.handleFile ?? defaultFreezerHandle(config.cgroup), prefetch: config.prefetch, keep: config.reclaimKeep } : undefined,
      });
    case 'fake':
      return new FakeRuntime({ pauseMs: config.pauseMs, resumeMs: config.resumeMs, failResume: config.failResume, usageCgroup: config.usageCgroup });
    case 'qemu':
      if (config.mode === 'snapshot') return new QemuSnapshotRuntime({ control: config.control! });
      return new QemuPauseRuntime({ qmp: config.qmp!, reclaim: config.reclaim, memoryCgroup: config.memoryCgroup, ramFile: config.ramFile, cpuCgroup: config.cpuCgroup });
    case 'cloud-hypervisor':
      return new CloudHypervisorRuntime({ socket: config.socket, snapshotDir: config.snapshotDir, handleFile: config.handleFile });
    case 'firecracker':
      return new FirecrackerRuntime({
        socket: config.socket,
        mode: config.mode,
        snapshotDir: config.snapshotDir,
        diffSnapshots: config.diffSnapshots,
        launcher: config.launcher ? new SpawnVmmLauncher(config.launcher) : undefined,
        snapshotEditor: config.snapshotEditor,
        networkOverrides: config.networkOverrides,
        handleFile: config.handleFile,
      });
    case 'nomad-scale': {
      const nomad =
        config.nomad || !deps.nomad
          ? new NomadClient({ address: config.nomad?.address ?? process.env.NOMAD_ADDR ?? 'http://127.0.0.1:4646', token: config.nomad?.token ?? process.env.NOMAD_TOKEN, namespace: config.nomad?.namespace, region: config.nomad?.region })
          : deps.nomad;
      return new NomadScaleRuntime({ nomad, jobId: config.job, group: config.group, port: config.port, wakeCount: config.wakeCount, handleFile: config.handleFile });
    }
  }
}
