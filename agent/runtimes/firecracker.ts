import { constants } from 'node:fs';
import { access, mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { RuntimeError, messageOf } from '../shared/errors.js';
import { HandleFile } from './runtime-handle.js';
import type { ProbeResult, Runtime, RuntimeCapabilities, RuntimeHandle, RuntimeObservedState } from './runtime.js';
import { Deadline } from '../shared/deadline.js';
import { VmmError, jsonBody, unixRequest, type UnixHttpResponse } from './vmm/unix-http.js';
import { runCommand, type CommandSpec, type VmmLauncher } from './vmm/vmm-launcher.js';

/*
 * Firecracker, through its REST API on the process's unix socket
 * (`--api-sock`; swagger: src/firecracker/swagger/firecracker.yaml). Tested
 * against test/doubles/firecracker, not a real Firecracker: none can be
 * installed here (docs/runtimes.md says what that leaves unproven).
 *
 * `pause` mode: `PATCH /vm {state: "Paused"}` / `{state: "Resumed"}`. The
 *   process and the guest's memory stay. Works with any owner.
 * `snapshot` mode (the process is not kept: a snapshot loads only into a
 *   fresh Firecracker, so this needs a launcher, i.e. `doze vm`):
 *   sleep = PATCH /vm Paused → PUT /snapshot/create (the VM must be paused)
 *     → stop the process → make the snapshot current.
 *     The first snapshot is "Full" (vmstate.next + mem.next, renamed over
 *     vmstate + mem). Later ones are "Diff" (only the pages dirtied since the
 *     load: mem.diff), merged onto mem with `snapshot-editor edit-memory
 *     rebase` once the process is gone, with vmstate.next (the state file of
 *     the last layer merged, as Firecracker's docs require) renamed over
 *     vmstate. Never merge into mem while a process maps it: the File backend
 *     maps it MAP_PRIVATE, so pages the guest has not touched are read from
 *     the file. A VM without dirty page tracking gets Full snapshots.
 *   wake = start a fresh process → PUT /snapshot/load {snapshot_path,
 *     mem_backend: {backend_type: "File", backend_path}, track_dirty_pages,
 *     resume_vm: true, network_overrides?}. Guest memory is mapped from the
 *     file and faults in lazily. Tap devices are named in the snapshot: the
 *     new process opens the same names, so the taps must exist (they outlive
 *     the process when they are persistent, `ip tuntap add … mode tap`), or
 *     `networkOverrides` point each iface_id at another tap (newer Firecrackers only).
 */

export interface NetworkOverride {
  iface_id: string;
  host_dev_name: string;
}

export interface FirecrackerOptions {
  /** The process's API socket (`firecracker --api-sock PATH`). */
  socket: string;
  mode: 'pause' | 'snapshot';
  /** snapshot mode: where vmstate and mem live. */
  snapshotDir?: string;
  /** snapshot mode: Diff snapshots after the first Full one (default true; needs snapshotEditor). */
  diffSnapshots?: boolean;
  /** snapshot mode: starts a fresh Firecracker on `socket`, stops the old one. */
  launcher?: VmmLauncher;
  /** snapshot mode with Diff snapshots: Firecracker's `snapshot-editor`. */
  snapshotEditor?: CommandSpec;
  /** snapshot mode: tap devices to use instead of the ones the snapshot names. */
  networkOverrides?: NetworkOverride[];
  /** The runtime's handle (JSON), so a restarted agent can wake what it put to sleep. */
  handleFile?: string;
}

/** InstanceInfo (GET /). */
const instanceInfoSchema = z.looseObject({
  app_name: z.string().optional(),
  id: z.string().optional(),
  state: z.enum(['Not started', 'Running', 'Paused']),
  vmm_version: z.string().optional(),
});
type FcState = z.infer<typeof instanceInfoSchema>['state'];

const handleSchema = z.strictObject({
  version: z.literal(1),
  kind: z.literal('firecracker'),
  /** doze put the VM to sleep and has not woken it since. */
  asleep: z.boolean(),
  /** vmstate + mem hold a complete, resumable snapshot. */
  base: z.boolean(),
  /** A snapshot is being taken (`taken: false`) or has been taken but is not yet current (`taken: true`). */
  pending: z.enum(['full', 'diff']).nullable(),
  taken: z.boolean(),
  snapshots: z.number().int().nonnegative(),
});
type FcHandle = z.infer<typeof handleSchema>;

const PROBE_MS = 3000;
const INSPECT_MS = 1000;
/** "Diff snapshots are not allowed on uVMs with dirty page tracking disabled." (rpc_interface.rs). */
const NO_DIRTY_TRACKING = /dirty page tracking disabled/;

export class FirecrackerRuntime implements Runtime {
  readonly kind = 'firecracker';
  readonly capabilities: RuntimeCapabilities;
  private readonly persisted: HandleFile<FcHandle>;
  /** The running process refused a Diff snapshot (no dirty page tracking): Full until the next load. */
  private fullOnly = false;

  constructor(readonly options: FirecrackerOptions) {
    this.persisted = new HandleFile(options.handleFile, handleSchema, { version: 1, kind: 'firecracker', asleep: false, base: false, pending: null, taken: false, snapshots: 0 });
    const snapshot = options.mode === 'snapshot';
    // snapshot: no process reads the tap while asleep, so the first SYN is lost.
    this.capabilities = { keepsProcess: !snapshot, freesMemory: snapshot, ...(snapshot ? { dropsFirstSyn: true } : {}) };
  }

  private get diff(): boolean {
    return this.options.diffSnapshots ?? true;
  }

  private file(name: 'vmstate' | 'mem' | 'vmstate.next' | 'mem.next' | 'mem.diff'): string {
    return join(this.options.snapshotDir!, name);
  }

  async probe(): Promise<ProbeResult> {
    if (this.options.mode === 'snapshot') {
      if (!this.options.snapshotDir) return { ok: false, reason: 'snapshot mode needs snapshotDir' };
      if (!this.options.launcher) return { ok: false, reason: 'snapshot mode needs a launcher: a snapshot loads only into a fresh Firecracker process (set launcher, or run the VM under doze vm)' };
      if (this.diff) {
        const editor = this.options.snapshotEditor;
        if (!editor) return { ok: false, reason: 'Diff snapshots need Firecracker\'s snapshot-editor to merge them (set snapshotEditor, or diffSnapshots: false)' };
        if (editor.binary.includes('/')) {
          try {
            await access(editor.binary, constants.X_OK);
          } catch {
            return { ok: false, reason: `snapshot-editor ${editor.binary} is not an executable file (or set diffSnapshots: false)` };
          }
        }
      }
      try {
        await mkdir(this.options.snapshotDir, { recursive: true });
        await this.persisted.load();
      } catch (error) {
        return { ok: false, reason: messageOf(error) };
      }
    }
    let state: FcState | undefined;
    try {
      state = await this.instanceState(PROBE_MS);
    } catch (error) {
      if (this.asleepInSnapshot()) return { ok: true };
      return { ok: false, reason: `Firecracker API socket ${this.options.socket} does not answer: ${messageOf(error)}` };
    }
    if (state === 'Not started' && !this.asleepInSnapshot()) return { ok: false, reason: `the Firecracker process at ${this.options.socket} has not started a microVM: nothing to manage` };
    return { ok: true };
  }

  async sleep(deadlineMs: number, signal?: AbortSignal): Promise<void> {
    const deadline = new Deadline('pausing the Firecracker microVM', deadlineMs, signal);
    if (this.options.mode === 'pause') return this.setPaused(true, deadline);
    await this.persisted.load();
    if (this.persisted.value.pending && this.persisted.value.taken) return this.finishSnapshot(deadline);
    const state = await this.reachableState(deadline);
    if (state === undefined || state === 'Not started') {
      if (this.asleepInSnapshot()) return; // already asleep: the process is gone (or a fresh one waits)
      throw new VmmError(state === undefined ? 'E_VMM_UNREACHABLE' : 'E_VMM_STATE', `the Firecracker microVM at ${this.options.socket} is ${state === undefined ? 'gone' : 'not started'} and was not put to sleep by doze: nothing to pause`);
    }
    if (state === 'Running') await deadline.run((left) => this.patchVm('Paused', left));
    // A snapshot interrupted before it completed is discarded: the dirty pages it
    // may have consumed are unknown, so the next layer must be a Full one.
    const forceFull = this.persisted.value.pending !== null;
    await this.takeSnapshot(deadline, forceFull);
    await this.finishSnapshot(deadline);
  }

  async wake(deadlineMs: number, signal?: AbortSignal): Promise<void> {
    const deadline = new Deadline('resuming the Firecracker microVM', deadlineMs, signal);
    if (this.options.mode === 'pause') return this.setPaused(false, deadline);
    await this.persisted.load();
    if (this.persisted.value.pending && this.persisted.value.taken) await this.finishSnapshot(deadline);
    let state = await this.reachableState(deadline);
    if (state === 'Running') return this.awake();
    if (state === 'Paused') {
      // A sleep that stopped between pause and stop: the process still holds the VM.
      // If a snapshot was cut short it may have consumed dirty pages: Full next time.
      if (this.persisted.value.pending) this.fullOnly = true;
      await deadline.run((left) => this.patchVm('Resumed', left));
      return this.awake();
    }
    if (!this.asleepInSnapshot()) throw new VmmError('E_VMM_STATE', `the Firecracker microVM at ${this.options.socket} is ${state === undefined ? 'gone' : 'not started'} and no snapshot of it is current: nothing to resume`);
    if (state === undefined) {
      await deadline.run((left) => this.options.launcher!.start(this.options.socket, left));
      state = 'Not started';
    }
    const body: Record<string, unknown> = {
      snapshot_path: this.file('vmstate'),
      mem_backend: { backend_type: 'File', backend_path: this.file('mem') },
    };
    if (this.diff) body.track_dirty_pages = true;
    body.resume_vm = true;
    if (this.options.networkOverrides?.length) body.network_overrides = this.options.networkOverrides;
    // A failed load ends the Firecracker process (snapshot docs); the next wake starts another.
    await deadline.run((left) => this.put('/snapshot/load', body, left));
    this.fullOnly = !this.diff;
    await this.awake();
  }

  async inspect(): Promise<RuntimeObservedState> {
    try {
      if (this.options.mode === 'snapshot') await this.persisted.load();
      const state = await this.instanceState(INSPECT_MS).catch(() => undefined);
      if (state === 'Running') return 'running';
      if (state === 'Paused') return 'asleep';
      if (this.options.mode === 'snapshot' && (this.asleepInSnapshot() || (this.persisted.value.pending && this.persisted.value.taken))) return 'asleep';
      return state === 'Not started' ? 'transitioning' : 'gone';
    } catch {
      return 'gone';
    }
  }

  handle(): RuntimeHandle | undefined {
    return this.options.mode === 'snapshot' ? { ...this.persisted.value } : undefined;
  }

  private asleepInSnapshot(): boolean {
    return this.persisted.value.asleep && this.persisted.value.base && this.persisted.value.pending === null;
  }

  private async takeSnapshot(deadline: Deadline, forceFull: boolean): Promise<void> {
    let type: 'Full' | 'Diff' = this.diff && this.persisted.value.base && !forceFull && !this.fullOnly ? 'Diff' : 'Full';
    await io(`preparing ${this.options.snapshotDir}`, async () => {
      await mkdir(this.options.snapshotDir!, { recursive: true });
      for (const name of ['vmstate.next', 'mem.next', 'mem.diff'] as const) await rm(this.file(name), { force: true });
    });
    await this.persisted.save({ pending: type === 'Full' ? 'full' : 'diff', taken: false });
    const create = (kind: 'Full' | 'Diff') =>
      deadline.run((left) =>
        this.put('/snapshot/create', { snapshot_type: kind, snapshot_path: this.file('vmstate.next'), mem_file_path: this.file(kind === 'Full' ? 'mem.next' : 'mem.diff') }, left),
      );
    try {
      await create(type);
    } catch (error) {
      if (type !== 'Diff' || !(error instanceof VmmError) || !NO_DIRTY_TRACKING.test(error.message)) throw error;
      // This process was booted without dirty page tracking: Full until a load turns it on.
      this.fullOnly = true;
      type = 'Full';
      await this.persisted.save({ pending: 'full', taken: false });
      await create(type);
    }
    await this.persisted.save({ taken: true });
  }

  /** Stops the process (if still there) and makes the taken snapshot current. Idempotent: safe to redo after a crash. */
  private async finishSnapshot(deadline: Deadline): Promise<void> {
    await deadline.run((left) => this.options.launcher!.stop(this.options.socket, left));
    const pending = this.persisted.value.pending;
    if (pending === 'diff') {
      // Merging the same layer twice gives the same base: a crash mid-merge is redone.
      if (await exists(this.file('mem.diff'))) {
        await deadline.run((left) => runCommand(this.options.snapshotEditor!, ['edit-memory', 'rebase', '--memory-path', this.file('mem'), '--diff-path', this.file('mem.diff')], left));
      }
      await io('making the merged snapshot current', async () => {
        await renameIfThere(this.file('vmstate.next'), this.file('vmstate'));
        await rm(this.file('mem.diff'), { force: true });
      });
    } else if (pending === 'full') {
      await io('making the full snapshot current', async () => {
        await renameIfThere(this.file('mem.next'), this.file('mem'));
        await renameIfThere(this.file('vmstate.next'), this.file('vmstate'));
      });
    }
    await this.persisted.save({ asleep: true, base: true, pending: null, taken: false, snapshots: this.persisted.value.snapshots + (pending ? 1 : 0) });
  }

  private async awake(): Promise<void> {
    if (this.persisted.value.asleep || this.persisted.value.pending) await this.persisted.save({ asleep: false, pending: null, taken: false });
  }

  /** The instance's state, or undefined when nothing answers on the socket (the process is gone). */
  private async reachableState(deadline: Deadline): Promise<FcState | undefined> {
    try {
      return await deadline.run((left) => this.instanceState(left));
    } catch (error) {
      if (error instanceof VmmError && error.code === 'E_VMM_UNREACHABLE') return undefined;
      throw error;
    }
  }

  /** Pause mode: the microVM's vCPUs stop (or run again) in its process; nothing is written. */
  private async setPaused(paused: boolean, deadline: Deadline): Promise<void> {
    const state = await deadline.run((left) => this.instanceState(left));
    if (state === 'Not started') throw new VmmError('E_VMM_STATE', `the Firecracker process at ${this.options.socket} has no started microVM to ${paused ? 'pause' : 'resume'}`);
    if (state === (paused ? 'Running' : 'Paused')) await deadline.run((left) => this.patchVm(paused ? 'Paused' : 'Resumed', left));
  }

  private async instanceState(deadlineMs: number): Promise<FcState> {
    const response = await unixRequest(this.options.socket, 'GET', '/', undefined, deadlineMs);
    if (response.status !== 200) throw faultError('GET /', response);
    return jsonBody(response, 'Firecracker GET /', instanceInfoSchema).state;
  }

  private patchVm(state: 'Paused' | 'Resumed', deadlineMs: number): Promise<void> {
    return this.send('PATCH', '/vm', { state }, deadlineMs);
  }

  private put(path: string, body: unknown, deadlineMs: number): Promise<void> {
    return this.send('PUT', path, body, deadlineMs);
  }

  private async send(method: string, path: string, body: unknown, deadlineMs: number): Promise<void> {
    const response = await unixRequest(this.options.socket, method, path, body, deadlineMs);
    if (response.status !== 204 && response.status !== 200) throw faultError(`${method} ${path}`, response);
  }

}

/** Firecracker's errors: 400 (or 500) with `{"fault_message": "…"}`. */
function faultError(what: string, response: UnixHttpResponse): VmmError {
  let detail = response.text.trim();
  try {
    const parsed = z.looseObject({ fault_message: z.string() }).safeParse(JSON.parse(detail));
    if (parsed.success) detail = parsed.data.fault_message;
  } catch {
    // not JSON: keep the text
  }
  return new VmmError('E_VMM_HTTP', `Firecracker ${what} failed with HTTP ${response.status}: ${detail.slice(0, 500) || '(empty body)'}`, { status: response.status });
}

async function io(what: string, work: () => Promise<void>): Promise<void> {
  try {
    await work();
  } catch (error) {
    throw new RuntimeError('E_RUNTIME_IO', `${what}: ${(error as NodeJS.ErrnoException).code ?? messageOf(error)}`, { cause: error });
  }
}

async function renameIfThere(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
