import { z } from 'zod';
import { NomadError, type NomadClient } from '../nomad/nomad-client.js';
import { ACTIVE_DEPLOYMENT_STATUSES, type NomadAllocation, type NomadAllocationChecks, type NomadAllocationStub, type NomadJob } from '../nomad/nomad-schemas.js';
import { DeadlineError, RuntimeError, messageOf } from '../shared/errors.js';
import { withDeadline } from '../shared/deadline.js';
import { HandleFile } from './runtime-handle.js';
import type { ProbeResult, Runtime, RuntimeHandle, RuntimeObservedState } from './runtime.js';
import { Deadline } from '../shared/deadline.js';

/*
 * `scale` mode (deep sleep): the task group is scaled to 0 through Nomad's API
 * (`POST /v1/job/:id/scale {Count: 0, Target: {Group}, Message}`) and back to
 * its previous count on wake. Everything the group had is freed, and so is
 * its registration: a group at count 0 has no allocations, so its services
 * leave the catalog (hashicorp/nomad#19731), and the wake lands on a new
 * allocation, maybe on another node, with a new address. So:
 * - the previous count is remembered in the runtime's handle (a file, when
 *   configured) before the group is scaled down, so a restarted agent can
 *   still scale it back;
 * - wake waits (within its deadline) for a new allocation of the group that
 *   runs, whose deployment health (when the allocation is deployment-tracked:
 *   Nomad's own verdict on its checks) is healthy, and whose Nomad-provider
 *   checks pass; then `address()` reports where it listens;
 * - a scale from 0 creates a deployment (scheduler/reconciler: a service
 *   group's placements are deployment-tracked), and while any deployment of
 *   the job is active Nomad refuses every scale with 400 "job scaling blocked
 *   due to active deployment" (nomad/job_endpoint.go Scale). A sleep soon
 *   after a wake therefore waits for that deployment to end (within the pause
 *   deadline) and retries once; past the deadline it fails with
 *   E_SCALE_BLOCKED, the instance stays awake and the detector tries again at
 *   its next idle deadline.
 * Tested against test/doubles/nomad (no Nomad binary here).
 */

export interface NomadScaleOptions {
  nomad: NomadClient;
  jobId: string;
  group: string;
  /** The port label whose address `address()` reports; default: the allocation's first port. */
  port?: string;
  /** Count to scale back to when none was remembered (a handle lost with the agent). Default 1. */
  wakeCount?: number;
  /** The runtime's handle (JSON), where the previous count survives an agent restart. */
  handleFile?: string;
  /** Longest single blocking query while waiting (Nomad holds it until something changes). */
  maxWaitMs?: number;
}

const handleSchema = z.strictObject({
  version: z.literal(1),
  kind: z.literal('nomad-scale'),
  jobId: z.string(),
  group: z.string(),
  /** The group's count before doze scaled it to 0. */
  previousCount: z.number().int().positive().nullable(),
  asleep: z.boolean(),
  /** The allocation the last wake found healthy, and its address. */
  allocId: z.string().nullable(),
  address: z.string().nullable(),
});
type ScaleHandle = z.infer<typeof handleSchema>;

const PROBE_MS = 5000;
const INSPECT_MS = 2000;
/** Client statuses after which an allocation holds nothing any more. */
const TERMINAL = new Set(['complete', 'failed', 'lost']);

export class NomadScaleRuntime implements Runtime {
  readonly kind = 'nomad-scale';
  readonly capabilities = { keepsProcess: false, freesMemory: true };
  private readonly persisted: HandleFile<ScaleHandle>;

  constructor(readonly options: NomadScaleOptions) {
    const initial: ScaleHandle = { version: 1, kind: 'nomad-scale', jobId: options.jobId, group: options.group, previousCount: null, asleep: false, allocId: null, address: null };
    this.persisted = new HandleFile(options.handleFile, handleSchema, initial, (saved) => {
      if (saved.jobId !== options.jobId || saved.group !== options.group) {
        throw new RuntimeError('E_HANDLE', `runtime handle ${options.handleFile} belongs to group ${saved.group} of job ${saved.jobId}, not to ${this.where}`);
      }
    });
  }

  async probe(): Promise<ProbeResult> {
    try {
      await this.persisted.load();
      const job = await withDeadline(`reading job ${this.options.jobId}`, PROBE_MS, this.options.nomad.job(this.options.jobId));
      const type = job.value.Type ?? 'service';
      if (type !== 'service') return { ok: false, reason: `job ${this.options.jobId} is a ${type} job: only service jobs can be scaled to 0 and back` };
      if (!job.value.TaskGroups.some((g) => g.Name === this.options.group)) return { ok: false, reason: `job ${this.options.jobId} has no group ${JSON.stringify(this.options.group)}` };
      return { ok: true };
    } catch (error) {
      return { ok: false, reason: messageOf(error) };
    }
  }

  async sleep(deadlineMs: number, signal?: AbortSignal): Promise<void> {
    const deadline = new Deadline(`scaling ${this.where} to 0`, deadlineMs, signal);
    await this.persisted.load();
    const count = this.countOf(await this.within(deadline, (signal) => this.options.nomad.job(this.options.jobId, { signal })).then((r) => r.value));
    if (count > 0) {
      // Remember the count first: once the group is at 0, nothing in Nomad says what it was.
      await this.persisted.save({ previousCount: count, asleep: true });
      try {
        await this.scaleDown(deadline, count);
      } catch (error) {
        // Nothing was scaled: the handle must not claim a sleep.
        await this.persisted.save({ asleep: false });
        throw error;
      }
    } else if (!this.persisted.value.asleep) {
      await this.persisted.save({ asleep: true });
    }
    // Asleep once no allocation of the group holds anything.
    await this.waitFor(deadline, (allocs) => (allocs.some((a) => !TERMINAL.has(a.ClientStatus)) ? undefined : true));
  }

  /** The scale to 0, waiting out an active deployment once (see the header). */
  private async scaleDown(deadline: Deadline, count: number): Promise<void> {
    const message = `doze: idle, scaled to 0 (was ${count}); doze scales it back on the next request`;
    try {
      await this.within(deadline, () => this.options.nomad.scaleGroup(this.options.jobId, this.options.group, 0, message));
      return;
    } catch (error) {
      if (!isDeploymentBlock(error)) throw error;
    }
    const deployment: { id?: string } = {};
    try {
      await this.waitForDeployment(deadline, deployment);
      await this.within(deadline, () => this.options.nomad.scaleGroup(this.options.jobId, this.options.group, 0, message));
    } catch (error) {
      // Refused, or out of time waiting for the deployment: either way the deployment is why.
      if (!isDeploymentBlock(error) && !(error instanceof DeadlineError)) throw error;
      throw new RuntimeError('E_SCALE_BLOCKED', `Nomad refused to scale ${this.where} to 0: deployment ${deployment.id ?? '(unknown)'} of the job is still active (Nomad blocks scaling during a deployment); doze retries at the next idle deadline`, { cause: error });
    }
  }

  /**
   * Blocks on the job's latest deployment until it is no longer active, or
   * until shortly before the deadline (so the refusal, not a bare
   * deadline, is what the caller sees); `seen.id`: the active deployment.
   */
  private async waitForDeployment(deadline: Deadline, seen: { id?: string }): Promise<void> {
    let index = 0;
    // The first read does not block (index 0): it names the deployment even when little time is left.
    while (index === 0 || deadline.left() > 300) {
      const waitMs = Math.max(Math.min(deadline.left() - 250, this.options.maxWaitMs ?? 30_000), 10);
      const latest = await this.within(deadline, (signal) => this.options.nomad.latestDeployment(this.options.jobId, { index, waitMs, signal }));
      index = latest.index;
      if (!latest.value || !ACTIVE_DEPLOYMENT_STATUSES.has(latest.value.Status)) return;
      seen.id = latest.value.ID;
    }
  }

  async wake(deadlineMs: number, signal?: AbortSignal): Promise<void> {
    const deadline = new Deadline(`scaling ${this.where} back up`, deadlineMs, signal);
    await this.persisted.load();
    const count = this.countOf(await this.within(deadline, (signal) => this.options.nomad.job(this.options.jobId, { signal })).then((r) => r.value));
    let known = new Set<string>();
    if (count === 0) {
      const target = this.persisted.value.previousCount ?? this.options.wakeCount ?? 1;
      known = new Set((await this.within(deadline, (signal) => this.options.nomad.jobAllocations(this.options.jobId, { signal }))).value.filter((a) => a.TaskGroup === this.options.group).map((a) => a.ID));
      await this.within(deadline, () => this.options.nomad.scaleGroup(this.options.jobId, this.options.group, target, `doze: woken by traffic, scaled back to ${target}`));
    }
    // A group already up (a wake that timed out, or someone scaled it) counts as woken once an allocation is healthy.
    const alloc = await this.waitFor(deadline, async (allocs, signal) => {
      for (const stub of allocs) {
        if (known.has(stub.ID) || stub.DesiredStatus !== 'run' || stub.ClientStatus !== 'running') continue;
        if (!Object.values(stub.TaskStates ?? {}).every((s) => s?.State === 'running')) continue;
        if (stub.DeploymentStatus?.Healthy === false) continue;
        const full = (await this.options.nomad.allocation(stub.ID, { signal })).value;
        if (await this.healthy(full, signal)) return full;
      }
      return undefined;
    });
    await this.persisted.save({ asleep: false, allocId: alloc.ID, address: addressOf(alloc, this.options.port) ?? null });
  }

  async inspect(): Promise<RuntimeObservedState> {
    try {
      await this.persisted.load();
      const deadline = new Deadline(`inspecting ${this.where}`, INSPECT_MS);
      const job = await this.within(deadline, (signal) => this.options.nomad.job(this.options.jobId, { signal }));
      const allocs = (await this.within(deadline, (signal) => this.options.nomad.jobAllocations(this.options.jobId, { signal }))).value.filter((a) => a.TaskGroup === this.options.group);
      if (this.countOf(job.value) === 0) return allocs.some((a) => !TERMINAL.has(a.ClientStatus)) ? 'transitioning' : 'asleep';
      const running = allocs.some((a) => a.DesiredStatus === 'run' && a.ClientStatus === 'running' && a.DeploymentStatus?.Healthy !== false);
      return running ? 'running' : 'transitioning';
    } catch {
      return 'gone';
    }
  }

  /** Where the group's current allocation listens ("ip:port"), as found by the last wake; it may change at every wake. */
  address(): string | undefined {
    return this.persisted.value.address ?? undefined;
  }

  /** The allocation the last wake found healthy. */
  allocationId(): string | undefined {
    return this.persisted.value.allocId ?? undefined;
  }

  handle(): RuntimeHandle {
    return { ...this.persisted.value };
  }

  private get where(): string {
    return `group ${JSON.stringify(this.options.group)} of job ${JSON.stringify(this.options.jobId)}`;
  }

  private countOf(job: NomadJob): number {
    const group = job.TaskGroups.find((g) => g.Name === this.options.group);
    if (!group) throw new RuntimeError('E_RUNTIME_MISSING', `job ${this.options.jobId} has no group ${JSON.stringify(this.options.group)} any more`);
    return group.Count ?? 1;
  }

  /**
   * Deployment-tracked: Nomad's health verdict; plus every Nomad-provider
   * healthiness check passing. Readiness checks (`on_update = "ignore"`) do
   * not gate deployments (nomad/structs/checks.go GetCheckMode), nor a wake.
   */
  private async healthy(alloc: NomadAllocation, signal: AbortSignal): Promise<boolean> {
    const deployment = alloc['DeploymentID'];
    const status = z.looseObject({ Healthy: z.boolean().nullish() }).nullish().safeParse(alloc['DeploymentStatus']);
    if (typeof deployment === 'string' && deployment !== '' && !(status.success && status.data?.Healthy === true)) return false;
    let checks: NomadAllocationChecks;
    try {
      checks = await this.options.nomad.allocationChecks(alloc.ID, { signal });
    } catch (error) {
      if (error instanceof NomadError && error.status === 404) {
        // Nomad < 1.4 has no checks route: its alloc router answers "resource
        // not found" (command/agent/alloc_endpoint.go). Deployment health is
        // all there is then. Any other 404 ("Unknown allocation", "No path to
        // node": the client does not have it yet, or it is gone) is not healthy.
        return /resource not found/.test(error.message);
      }
      throw error;
    }
    return Object.values(checks).every((c) => c.Mode === 'readiness' || c.Status === 'success');
  }

  /**
   * Re-reads the job's allocations (blocking queries: Nomad answers when they
   * change) until `accept` returns a value, before the deadline.
   */
  private async waitFor<T>(deadline: Deadline, accept: (allocs: NomadAllocationStub[], signal: AbortSignal) => T | undefined | Promise<T | undefined>): Promise<T> {
    let index = 0;
    for (;;) {
      const found = await this.within(deadline, async (signal) => {
        const waitMs = Math.max(Math.min(deadline.left() - 50, this.options.maxWaitMs ?? 30_000), 10);
        const result = await this.options.nomad.jobAllocations(this.options.jobId, { index, waitMs, signal });
        index = result.index;
        return accept(result.value.filter((a) => a.TaskGroup === this.options.group), signal);
      });
      if (found !== undefined) return found;
      // A blocking query that returned with nothing new (its wait ran out): ask again.
    }
  }

  /** Runs a Nomad call with the time left before the deadline; a call cut off by it is aborted. */
  private async within<T>(deadline: Deadline, call: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const left = deadline.left();
    const controller = new AbortController();
    try {
      return await withDeadline(deadline.what, left, call(controller.signal));
    } catch (error) {
      if (error instanceof DeadlineError) throw new DeadlineError(deadline.what, deadline.totalMs);
      throw error;
    } finally {
      controller.abort();
    }
  }

}

function isDeploymentBlock(error: unknown): boolean {
  return error instanceof NomadError && error.status === 400 && /active deployment/.test(error.message);
}

/**
 * "ip:port" of an allocation's port: the allocation's own bridge address and
 * the port inside it (`To`) in bridge mode, the host address and port otherwise.
 */
export function addressOf(alloc: NomadAllocation, label?: string): string | undefined {
  const ports = alloc.AllocatedResources?.Shared?.Ports ?? [];
  const port = label === undefined ? ports[0] : ports.find((p) => p.Label === label);
  if (!port) return undefined;
  const bridge = alloc.NetworkStatus?.Address;
  if (bridge) return `${bridge}:${port.To !== undefined && port.To > 0 ? port.To : port.Value}`;
  return port.HostIP ? `${port.HostIP}:${port.Value}` : undefined;
}
