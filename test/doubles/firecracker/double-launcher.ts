import { rm } from 'node:fs/promises';
import type { VmmLauncher } from '../../../agent/runtimes/vmm/vmm-launcher.js';
import { FirecrackerDouble, type FirecrackerDoubleOptions } from './firecracker-double.js';

/**
 * A VmmLauncher whose "processes" are in-process Firecracker doubles, so tests
 * can look inside each one. Starting one on a path that exists fails as
 * Firecracker's bind does; stop() ends the current one and removes the socket.
 */
export class DoubleLauncher implements VmmLauncher {
  readonly processes: FirecrackerDouble[] = [];
  readonly events: string[] = [];
  /** Applied to every process this launcher starts (deadline tests). */
  delayMs = 0;

  constructor(public current: FirecrackerDouble | undefined, private readonly options: FirecrackerDoubleOptions = {}) {
    if (current) this.processes.push(current);
  }

  async start(socket: string): Promise<void> {
    await rm(socket, { force: true });
    const double = await FirecrackerDouble.start(socket, this.options);
    double.delayMs = this.delayMs;
    this.processes.push(double);
    this.current = double;
    this.events.push('start');
  }

  async stop(socket: string): Promise<void> {
    await this.current?.exit();
    this.current = undefined;
    await rm(socket, { force: true });
    this.events.push('stop');
  }

  /** Every state-changing request any of the processes received, in order. */
  get calls(): Array<[string, string, unknown]> {
    return this.processes.flatMap((p) => p.calls);
  }

  async closeAll(): Promise<void> {
    for (const p of this.processes) await p.exit();
  }
}
