import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { RuntimeError, messageOf } from '../shared/errors.js';
import { HandleFile } from './runtime-handle.js';
import type { ProbeResult, Runtime, RuntimeHandle, RuntimeObservedState } from './runtime.js';
import { Deadline } from '../shared/deadline.js';
import { VmmError, fileUrl, jsonBody, unixRequest, type UnixHttpResponse } from './vmm/unix-http.js';

/*
 * Cloud Hypervisor, through its REST API on the VMM's unix socket
 * (`--api-socket`, routes under /api/v1; see docs/reference.md and
 * docs/runtimes.md). Tested against test/doubles/cloud-hypervisor, not a real
 * Cloud Hypervisor: none can be installed here.
 *
 * - sleep: `PUT vm.pause`, then, with a snapshot directory, `PUT vm.snapshot
 *   {destination_url: "file://<dir>/pending"}` (Cloud Hypervisor snapshots only
 *   a paused VM) and a rename of pending → current, so a complete snapshot is
 *   the only kind there is. The VMM process is kept: the snapshot is for
 *   durability (a VMM that dies while the VM sleeps can be restored), not to
 *   free memory.
 * - wake: `PUT vm.resume`; if the VMM restarted while the VM slept (vm.info
 *   404: no VM), `PUT vm.restore {source_url, prefault: false}` (lazy: guest
 *   memory faults in as touched; cloud-hypervisor#5390 measured ~55 s eager vs
 *   ~0.3 s lazy for 8 GiB) and then `PUT vm.resume`.
 * - Cloud Hypervisor refuses a pause of a paused VM and a resume of a running
 *   one (VmState::valid_transition, HTTP 500), so every call reads `vm.info`
 *   first: that is what makes pause and resume idempotent.
 */

export interface CloudHypervisorOptions {
  /** The VMM's API socket (`cloud-hypervisor --api-socket path=…`). */
  socket: string;
  /** Where snapshots go (`<dir>/current`); none: pause only, nothing survives the VMM. */
  snapshotDir?: string;
  /** The runtime's handle (JSON): lets a restarted agent restore a VM whose VMM restarted while it slept. */
  handleFile?: string;
}

/** Cloud Hypervisor's vm.info (VmInfo in its OpenAPI: config, state, memory_actual_size, device_tree). */
const vmInfoSchema = z.looseObject({
  state: z.enum(['Created', 'Running', 'Shutdown', 'Paused', 'BreakPoint']),
  memory_actual_size: z.number().optional(),
});
const vmmPingSchema = z.looseObject({ version: z.string(), build_version: z.string().optional(), pid: z.number().optional() });

const handleSchema = z.strictObject({
  version: z.literal(1),
  kind: z.literal('cloud-hypervisor'),
  /** doze put the VM to sleep and has not woken it since. */
  asleep: z.boolean(),
  /** <snapshotDir>/current holds a complete snapshot taken at that sleep. */
  snapshot: z.boolean(),
});
type ChHandle = z.infer<typeof handleSchema>;

type ChState = z.infer<typeof vmInfoSchema>['state'];

const PROBE_MS = 3000;
const INSPECT_MS = 1000;

export class CloudHypervisorRuntime implements Runtime {
  readonly kind = 'cloud-hypervisor';
  readonly capabilities = { keepsProcess: true, freesMemory: false };
  private readonly persisted: HandleFile<ChHandle>;

  constructor(readonly options: CloudHypervisorOptions) {
    this.persisted = new HandleFile(options.handleFile, handleSchema, { version: 1, kind: 'cloud-hypervisor', asleep: false, snapshot: false });
  }

  async probe(): Promise<ProbeResult> {
    try {
      await this.persisted.load();
    } catch (error) {
      return { ok: false, reason: messageOf(error) };
    }
    try {
      const ping = await this.call('GET', 'vmm.ping', undefined, PROBE_MS);
      jsonBody(ping, 'GET vmm.ping', vmmPingSchema);
    } catch (error) {
      return { ok: false, reason: `Cloud Hypervisor API socket ${this.options.socket} does not answer: ${messageOf(error)}` };
    }
    if (this.options.snapshotDir) {
      try {
        await mkdir(this.options.snapshotDir, { recursive: true });
      } catch (error) {
        return { ok: false, reason: `snapshot directory ${this.options.snapshotDir}: ${(error as NodeJS.ErrnoException).code ?? messageOf(error)}` };
      }
    }
    const state = await this.vmState(PROBE_MS).catch((error: unknown) => error as Error);
    if (state instanceof Error) return { ok: false, reason: `GET vm.info failed: ${messageOf(state)}` };
    if (state === 'Running' || state === 'Paused') return { ok: true };
    if (state === undefined && (await this.restorable())) return { ok: true };
    return { ok: false, reason: `the VMM at ${this.options.socket} has ${state === undefined ? 'no VM' : `its VM in state ${state}`}: nothing to manage` };
  }

  async sleep(deadlineMs: number, signal?: AbortSignal): Promise<void> {
    const deadline = new Deadline('pausing the Cloud Hypervisor VM', deadlineMs, signal);
    await this.persisted.load();
    const state = await deadline.run((left) => this.vmState(left));
    if (state === undefined) {
      // The VMM restarted while the VM slept: it is still asleep, in its snapshot.
      if (await this.restorable()) return;
      throw new VmmError('E_VMM_STATE', `the VMM at ${this.options.socket} has no VM to pause`);
    }
    if (state === 'Running') await deadline.run((left) => this.put('vm.pause', undefined, left));
    else if (state !== 'Paused') throw new VmmError('E_VMM_STATE', `cannot pause a VM in state ${state}`);
    const snapshotted = state === 'Paused' && this.persisted.value.asleep && this.persisted.value.snapshot;
    if (this.options.snapshotDir && !snapshotted) await this.snapshot(deadline);
    await this.persisted.save({ asleep: true, snapshot: Boolean(this.options.snapshotDir) });
  }

  async wake(deadlineMs: number, signal?: AbortSignal): Promise<void> {
    const deadline = new Deadline('resuming the Cloud Hypervisor VM', deadlineMs, signal);
    await this.persisted.load();
    const state = await deadline.run((left) => this.vmState(left));
    if (state === undefined) {
      if (!(await this.restorable())) throw new VmmError('E_VMM_STATE', `the VMM at ${this.options.socket} has no VM and no snapshot of one to restore`);
      const source = join(this.options.snapshotDir!, 'current');
      await deadline.run((left) => this.put('vm.restore', { source_url: fileUrl(source), prefault: false }, left));
      await deadline.run((left) => this.put('vm.resume', undefined, left));
    } else if (state === 'Paused') {
      await deadline.run((left) => this.put('vm.resume', undefined, left));
    } else if (state !== 'Running') {
      throw new VmmError('E_VMM_STATE', `cannot resume a VM in state ${state}`);
    }
    if (this.persisted.value.asleep) await this.persisted.save({ asleep: false, snapshot: this.persisted.value.snapshot });
  }

  async inspect(): Promise<RuntimeObservedState> {
    try {
      await this.persisted.load();
      const state = await this.vmState(INSPECT_MS);
      if (state === undefined) return (await this.restorable()) ? 'asleep' : 'gone';
      switch (state) {
        case 'Running':
          return 'running';
        case 'Paused':
          return 'asleep';
        case 'Created':
          return 'transitioning';
        default:
          return 'gone';
      }
    } catch {
      return 'gone';
    }
  }

  handle(): RuntimeHandle {
    return { ...this.persisted.value };
  }

  /** The VM's state, or undefined when the VMM has none (HTTP 404: VmNotCreated). */
  private async vmState(deadlineMs: number): Promise<ChState | undefined> {
    const response = await this.call('GET', 'vm.info', undefined, deadlineMs);
    if (response.status === 404) return undefined;
    if (response.status !== 200) throw httpError('GET vm.info', response);
    return jsonBody(response, 'GET vm.info', vmInfoSchema).state;
  }

  private async snapshot(deadline: Deadline): Promise<void> {
    const dir = this.options.snapshotDir!;
    const pending = join(dir, 'pending');
    const current = join(dir, 'current');
    await io(`preparing ${pending}`, async () => {
      await rm(pending, { recursive: true, force: true });
      await mkdir(pending, { recursive: true });
    });
    await deadline.run((left) => this.put('vm.snapshot', { destination_url: fileUrl(pending) }, left));
    // Swap in the complete snapshot: a crash leaves either the old one or the new one.
    await io(`moving the snapshot to ${current}`, async () => {
      await rm(`${current}.old`, { recursive: true, force: true });
      await rename(current, `${current}.old`).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error;
      });
      await rename(pending, current);
      await rm(`${current}.old`, { recursive: true, force: true });
    });
  }

  /** A snapshot taken at the last sleep, still the VM's latest state (it has not been woken since). */
  private async restorable(): Promise<boolean> {
    if (!this.options.snapshotDir || !this.persisted.value.asleep || !this.persisted.value.snapshot) return false;
    try {
      return (await stat(join(this.options.snapshotDir, 'current'))).isDirectory();
    } catch {
      return false;
    }
  }

  private async put(endpoint: string, body: unknown, deadlineMs: number): Promise<void> {
    const response = await this.call('PUT', endpoint, body, deadlineMs);
    if (response.status !== 204 && response.status !== 200) throw httpError(`PUT ${endpoint}`, response);
  }

  private call(method: string, endpoint: string, body: unknown, deadlineMs: number): Promise<UnixHttpResponse> {
    return unixRequest(this.options.socket, method, `/api/v1/${endpoint}`, body, deadlineMs);
  }

}

async function io(what: string, work: () => Promise<void>): Promise<void> {
  try {
    await work();
  } catch (error) {
    throw new RuntimeError('E_RUNTIME_IO', `${what}: ${(error as NodeJS.ErrnoException).code ?? messageOf(error)}`, { cause: error });
  }
}

/** Cloud Hypervisor's error body is a JSON array of messages, outermost first (older versions: text). */
function httpError(what: string, response: UnixHttpResponse): VmmError {
  let detail = response.text.trim();
  try {
    const parsed = z.array(z.string()).safeParse(JSON.parse(detail));
    if (parsed.success) detail = parsed.data.join(': ');
  } catch {
    // plain text
  }
  return new VmmError('E_VMM_HTTP', `Cloud Hypervisor ${what} failed with HTTP ${response.status}: ${detail.slice(0, 500) || '(empty body)'}`, { status: response.status });
}
