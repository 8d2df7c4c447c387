import { readUsage, type UsageReading, type UsageSourceView } from '../../cgroups/cpu-usage.js';
import { messageOf } from '../../shared/errors.js';
import type { ProbeResult, Runtime, RuntimeObservedState } from '../runtime.js';
import { OwnerClient, OwnerError, type OwnerState, type OwnerStatus } from './owner-protocol.js';
import { ReconnectingConnection } from './reconnecting-connection.js';

export interface QemuSnapshotOptions {
  /** The `doze vm run` owner's control socket (`<state dir>/control.sock`). */
  control: string;
}

const PROBE_MS = 3000;
const INSPECT_MS = 1000;

export function observedFromOwnerState(state: OwnerState): RuntimeObservedState {
  switch (state) {
    case 'running':
      return 'running';
    case 'sleeping':
      return 'asleep';
    case 'starting':
    case 'saving':
    case 'restoring':
      return 'transitioning';
    default:
      return 'gone'; // stopping, failed
  }
}

/**
 * `snapshot` mode: the VM's `doze vm run` owner saves its device state and lets QEMU
 * exit (guest RAM stays in its file on disk, dropped from memory), and restores it on
 * wake (agent/runtimes/qemu/vm-owner.ts). The runtime keeps one connection to the
 * owner's control socket, reopened when the owner restarts; all it must remember
 * to wake a VM after an agent restart is that socket's path (the owner keeps the
 * rest in its handle, `<state dir>/vm.json`).
 */
export class QemuSnapshotRuntime implements Runtime {
  readonly kind = 'qemu';
  readonly mode = 'snapshot';
  /** dropsFirstSyn until the owner says it pre-spawns a receiver (learnt at probe; the object is kept, so wrappers see it). */
  readonly capabilities = { keepsProcess: false, freesMemory: true, dropsFirstSyn: true };
  private readonly owner: ReconnectingConnection<OwnerClient>;
  /** The owner's last answer (timings of the last sleep and wake), for status and benchmarks. */
  lastStatus: OwnerStatus | undefined;

  constructor(private readonly options: QemuSnapshotOptions) {
    this.owner = new ReconnectingConnection({
      open: (deadlineMs) => OwnerClient.connect(options.control, deadlineMs),
      isClosedError: (error) => error instanceof OwnerError && error.code === 'E_OWNER_CLOSED',
      closedError: () => new OwnerError('E_OWNER_CLOSED', `runtime for ${options.control} was closed`),
    });
  }

  async probe(): Promise<ProbeResult> {
    let status: OwnerStatus;
    try {
      status = await this.request('status', PROBE_MS);
    } catch (error) {
      return { ok: false, reason: `doze vm control socket ${this.options.control} does not answer: ${messageOf(error)} (snapshot mode needs the VM started by "doze vm run")` };
    }
    // An owner too old to say keeps the default: it drops the first SYN.
    if (status.prespawn !== undefined) this.capabilities.dropsFirstSyn = !status.prespawn;
    if (observedFromOwnerState(status.state) === 'gone') return { ok: false, reason: `the VM behind ${this.options.control} is ${status.state}: nothing to manage` };
    return { ok: true };
  }

  async sleep(deadlineMs: number): Promise<void> {
    await this.request('sleep', deadlineMs);
  }

  async wake(deadlineMs: number): Promise<void> {
    await this.request('wake', deadlineMs);
  }

  async inspect(): Promise<RuntimeObservedState> {
    try {
      return observedFromOwnerState((await this.request('status', INSPECT_MS)).state);
    } catch {
      return 'gone';
    }
  }

  /** The running QEMU's CPU time and I/O, by the pid the owner last reported (a wake answers with the new one). */
  usage(): UsageReading | undefined {
    const pid = this.lastStatus?.qemuPid;
    return pid ? readUsage({ kind: 'process', pid }) : undefined;
  }

  usageSource(): UsageSourceView {
    return this.lastStatus?.qemuPid ? { kind: 'procfs', processes: 1 } : { kind: 'unavailable', reason: 'no-process-yet' };
  }

  async close(): Promise<void> {
    this.owner.close();
  }

  /** One request within `deadlineMs` (connecting included); a connection found dead is reopened once. */
  private async request(op: 'sleep' | 'wake' | 'status', deadlineMs: number): Promise<OwnerStatus> {
    this.lastStatus = await this.owner.call(deadlineMs, (client, leftMs) => client.request(op, leftMs));
    return this.lastStatus;
  }
}
