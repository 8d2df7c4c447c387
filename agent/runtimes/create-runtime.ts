import type { RuntimeConfig } from '../config/schema.js';
import { FakeRuntime } from './fake.js';
import { FreezerRuntime } from './freezer.js';
import { QemuPauseRuntime } from './qemu/qemu-pause.js';
import type { Runtime } from './runtime.js';

export function createRuntime(config: RuntimeConfig): Runtime {
  switch (config.kind) {
    case 'freezer':
      return new FreezerRuntime(config.cgroup);
    case 'fake':
      return new FakeRuntime({ pauseMs: config.pauseMs, resumeMs: config.resumeMs, failResume: config.failResume });
    case 'qemu':
      return new QemuPauseRuntime({ qmp: config.qmp, reclaim: config.reclaim, memoryCgroup: config.memoryCgroup, ramFile: config.ramFile });
  }
}
