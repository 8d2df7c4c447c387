import type { DozeConfig, NomadConfig } from '../config/schema.js';
import type { Detector } from '../detector/detector.js';
import type { ReadonlyInstance } from '../detector/managed-instance.js';
import { messageOf } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import type { Clash, InstanceAdmission } from '../instances/admission.js';
import { ConnectionTracker } from './connection-tracker.js';
import type { AllocationStatus, DiscoveryReport } from './discovery-report.js';
import type { AnnotatedAllocation } from './allocation-instance.js';
import { nextBackoff, retryWithBackoff, type BackoffOptions } from './backoff.js';
import { findHostVeth } from './host-veth.js';
import { DockerEngine } from '../docker/engine-client.js';
import { dockerSocket } from '../docker/docker-socket.js';
import { lookUpDockerTask, type DockerTaskFacts, type DockerTaskLookup } from '../docker/docker-task.js';
import { NomadClient } from '../nomad/nomad-client.js';
import { NomadDiscovery, type DiscoveryStatus } from './nomad-discovery.js';
import type { TaskAction } from '../nomad/task-events.js';
import { learnNodeId } from './node-id.js';
import { unanswerableChecks } from '../nomad/check-needs.js';
import { describeMissing, missingRights, nomadProbes } from './permissions.js';
import { findNomadTaskCgroup, nomadTaskCgroupCandidates } from './task-cgroup.js';
import { instanceConfigFor, unsupportedReason, type InstanceSettings } from './instance-config.js';
import { KeyedSerialQueue } from '../shared/serial-queue.js';

/*
 * The allocation manager: Nomad allocations → detector instances, on one
 * client node. It wires the parts:
 *  - the node id (node-id.ts) and NomadDiscovery, which reports which
 *    allocations are annotated for doze (allocation-instance.ts);
 *  - what the node holds for each: the host side of its veth, found through
 *    /var/run/netns/<allocID> (host-veth.ts), and its task's cgroup
 *    (task-cgroup.ts; the cgroup root is `nomad.cgroupRoot`); for a docker
 *    task both come from the Docker engine (agent/docker/: the container's
 *    cgroup, the pause container's namespace);
 *  - the instance config made of both (instance-config.ts), or why not;
 *  - its admission and retirement, as for every instance (agent/instances/admission.ts).
 * A snapshot-mode task that `doze job render` turned into `doze vm run
 * --register` is `registered`: the owner registers the VM itself (PUT
 * /api/instances/{id}, agent/instances/registry.ts), because only it knows
 * the tap, the guest's address and the control socket; discovery leaves it
 * alone and, when the allocation stops, removes that registration if the
 * owner did not.
 * An allocation whose namespace or cgroup is not there yet is `pending` and
 * retried with backoff. When Nomad stops an allocation (desired status stop
 * or evict, or the client finished it) the instance is woken FIRST (a frozen
 * v1 task cannot receive Nomad's kill signal, docs/reference.md), then its
 * programs, map entries, redirect rule and stub listener are removed.
 *
 * Nomad unreachable: nothing is removed, known instances keep sleeping and
 * waking, `GET /api/status` shows the connection down, and discovery
 * reconnects with backoff (resuming the event stream from its last index).
 */

export interface AllocationManagerTuning {
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Retry delay bounds for an allocation whose namespace or cgroup is not ready. */
  pendingMinMs?: number;
  pendingMaxMs?: number;
  /** Where named network namespaces live (iproute2's /var/run/netns). */
  netnsDir?: string;
}

export interface AllocationManagerOptions extends AllocationManagerTuning {
  config: { nomad: NomadConfig; healthChecks?: Pick<DozeConfig['healthChecks'], 'tls'>; docker?: DozeConfig['docker'] };
  detector: Detector;
  log: Logger;
  /** Where allocations become instances and stop being ones, as every instance does (agent/instances/admission.ts). */
  admission: InstanceAdmission;
  /**
   * Removes an instance registered through the status API (agent/instances/registry.ts), woken first. Called when
   * the allocation of a `doze vm run --register` task stops, in case its owner died without unregistering.
   */
  unregister?: (instanceId: string) => Promise<void>;
}

type TrackedState = AllocationStatus['state'] | 'removed';

interface Tracked {
  allocId: string;
  nomad: AnnotatedAllocation;
  state: TrackedState;
  reason?: string;
  interface?: string;
  cgroup?: string;
  /** The instance, while managed. */
  instance?: ReadonlyInstance;
  retry?: NodeJS.Timeout;
  backoffMs: number;
}

/** Nomad's default kill_timeout (5 s), for a Killing event that does not say its own. */
const DEFAULT_KILL_TIMEOUT_NS = 5e9;
/** drivers/shared/executor: after kill_timeout it waits 15 s more before Nomad's last-resort kill. */
const EXECUTOR_GRACE_MS = 15_000;
/** A signalled task stays awake this long for its handler (a reload), then sleeps when idle again. */
const SIGNAL_HOLD_MS = 5_000;

/** Discovery-reported invalid allocations kept for the status API (oldest dropped first). */
const MAX_INVALID = 200;

export class AllocationManager {
  readonly tracker: ConnectionTracker;
  private readonly client: NomadClient;
  private readonly controller = new AbortController();
  private readonly tracked = new Map<string, Tracked>();
  private readonly invalid = new Map<string, AllocationStatus>();
  private readonly queues = new KeyedSerialQueue();
  /** Rights the Nomad token lacks, found at start (permissions.ts). */
  private missingNomadRights: string[] = [];
  private knownNodeId: string | undefined;
  private running: Promise<void> | undefined;
  private readonly log: Logger;
  /** The Docker engine, made on the first docker task (its socket may be wrong: that is the task's reason, not a failed start). */
  private dockerEngine: DockerEngine | undefined;

  constructor(private readonly options: AllocationManagerOptions) {
    this.log = options.log.child({ component: 'nomad' });
    const { nomad } = options.config;
    this.client = new NomadClient({ address: nomad.address, token: nomad.token, namespace: nomad.namespace, region: nomad.region, tls: nomad.tls });
    this.tracker = new ConnectionTracker(this.client.address, (status) => {
      if (status.connected) this.log.info({ nomad: status.address, ...status.detail }, 'Nomad reachable');
      else this.log.warn({ nomad: status.address, err: status.error }, 'Nomad unreachable; known instances keep being managed, reconnecting with backoff');
    });
    this.knownNodeId = nomad.nodeId;
  }

  start(): void {
    this.running = this.runNomad();
  }

  /** This client node's id, once configured or learned from the local agent. */
  get nodeId(): string | undefined {
    return this.knownNodeId;
  }

  /** For GET /api/status. */
  report(): DiscoveryReport {
    const allocations: AllocationStatus[] = [];
    for (const t of this.tracked.values()) {
      if (t.state === 'removed') continue;
      allocations.push({
        allocId: t.allocId,
        instance: t.nomad.id,
        job: t.nomad.jobId,
        group: t.nomad.group,
        task: t.nomad.task,
        state: t.state,
        ...(t.reason ? { reason: t.reason } : {}),
        ...(t.interface ? { interface: t.interface } : {}),
        ...(t.cgroup ? { cgroup: t.cgroup } : {}),
      });
    }
    for (const entry of this.invalid.values()) if (!this.tracked.has(entry.allocId)) allocations.push({ ...entry });
    return { connections: { nomad: this.tracker.status() }, allocations };
  }

  /**
   * Stops discovery. Managed instances stay in the detector: the agent's own
   * shutdown wakes and releases them.
   */
  async stop(): Promise<void> {
    this.controller.abort();
    for (const t of this.tracked.values()) clearTimeout(t.retry);
    await this.running?.catch(() => undefined);
    await this.queues.drained();
  }

  private async runNomad(): Promise<void> {
    const signal = this.controller.signal;
    const { client, tracker } = this;
    this.knownNodeId ??= await learnNodeId(client, { signal, tracker, log: this.log, ...this.backoff() });
    const nodeId = this.knownNodeId;
    if (!nodeId) return;
    // Name every right the token lacks at once (the reads; writes are named when refused), beside discovery, not before it.
    void missingRights(nomadProbes(client, nodeId).filter((p) => p.right !== 'agent:read' || this.options.config.nomad.nodeId === undefined)).then((missing) => {
      this.missingNomadRights = missing;
      if (missing.length === 0) return;
      this.log.warn({ missing }, describeMissing('Nomad', missing));
      const now = tracker.status();
      if (now.connected) tracker.up({ missingRights: missing });
      else tracker.down(now.error ?? 'disconnected', { missingRights: missing });
    });
    const discovery = new NomadDiscovery(client, {
      nodeId,
      namespace: this.options.config.nomad.namespace ?? '*',
      signal,
      ...this.backoff(),
      onInstance: (instance) => this.enqueue(instance.allocId, () => this.admit(instance)),
      onRemove: (allocId, reason) => this.enqueue(allocId, () => this.removeAllocation(allocId, reason)),
      onInvalid: (allocId, reason) => this.noteInvalid(allocId, reason),
      onForget: (allocId) => this.invalid.delete(allocId),
      onTaskAction: (allocId, action) => this.thawFirst(allocId, action),
      onStatus: (status) => this.onDiscoveryStatus(nodeId, status),
      onError: (error) => this.log.debug({ code: error.code, err: error.message }, 'Nomad request failed'),
    });
    // run() returns only when aborted; an unexpected throw (a bug, not Nomad) is logged and retried.
    await retryWithBackoff(() => discovery.run(), {
      signal,
      ...this.backoff(),
      onFailure: (error) => {
        this.log.error({ err: messageOf(error) }, 'Nomad discovery stopped unexpectedly; restarting it');
        tracker.down(messageOf(error));
      },
    });
  }

  /**
   * Its Nomad client is about to kill, restart or signal the managed task: wake it now (not queued
   * behind the allocation's other work), and keep it awake while the signal is handled: through
   * the kill timeout and the executor's 15 s after it for a kill or restart (the task then stops,
   * or restarts and is managed afresh), SIGNAL_HOLD_MS for a signal (its handler's CPU work after
   * that is the busy guard's).
   */
  private thawFirst(allocId: string, action: TaskAction): void {
    const t = this.tracked.get(allocId);
    const instance = t?.instance;
    if (!t || !instance || t.state !== 'managed' || action.task !== t.nomad.task) return;
    const what = `nomad: ${action.type}${action.message ? ` (${action.message})` : ''}`;
    const holdMs = action.type === 'Signaling' ? SIGNAL_HOLD_MS : Math.round((action.killTimeoutNs ?? DEFAULT_KILL_TIMEOUT_NS) / 1e6) + EXECUTOR_GRACE_MS;
    this.options.detector.holdAwake(instance, { kind: 'nomad-task-event', event: action.type, message: action.message, stopping: action.type !== 'Signaling' }, holdMs);
    this.log.info({ instance: instance.id, alloc: allocId, event: action.type, message: action.message, state: instance.state }, 'Nomad acts on the task: thawing it first');
    void this.options.detector.wake(instance, what);
  }

  private backoff(): BackoffOptions {
    return { minBackoffMs: this.options.minBackoffMs, maxBackoffMs: this.options.maxBackoffMs };
  }

  private onDiscoveryStatus(nodeId: string, status: DiscoveryStatus): void {
    // `fallback` (why blocking queries stand in for the event stream) is null once the stream is back.
    const detail = { nodeId, source: status.source, fallback: status.fallback ?? null, missingRights: this.missingNomadRights };
    if (status.connected) this.tracker.up(detail);
    else this.tracker.down(status.error ?? 'disconnected', detail);
  }

  /** Work on one allocation runs in order; different allocations proceed independently. */
  private enqueue(allocId: string, work: () => Promise<void>): void {
    void this.queues.run(allocId, work).catch((error) => this.log.error({ alloc: allocId, err: messageOf(error) }, 'handling an allocation failed'));
  }

  private async admit(instance: AnnotatedAllocation): Promise<void> {
    if (this.controller.signal.aborted) return;
    const existing = this.tracked.get(instance.allocId);
    if (existing && JSON.stringify(existing.nomad) === JSON.stringify(instance) && existing.state !== 'removed') return;
    if (existing) await this.drop(existing, 'allocation changed');
    this.invalid.delete(instance.allocId);
    const t: Tracked = { allocId: instance.allocId, nomad: instance, state: 'pending', backoffMs: 0 };
    this.tracked.set(instance.allocId, t);
    if (instance.vmOwner) {
      // doze vm run registers the VM with this agent itself: nothing to find here.
      t.state = 'registered';
      t.reason = `doze vm run registers the VM itself as ${JSON.stringify(instance.id)}`;
      this.log.info({ alloc: t.allocId, instance: instance.id }, 'allocation runs doze vm: its owner registers the VM');
      return;
    }
    const unsupported = unsupportedReason(instance, this.instanceSettings().ownAllocId);
    if (unsupported) {
      this.markInvalid(t, unsupported);
      return;
    }
    await this.tryManage(t);
  }

  private async tryManage(t: Tracked): Promise<void> {
    if (this.tracked.get(t.allocId) !== t || t.state !== 'pending' || this.controller.signal.aborted) return;
    const { nomad: instance } = t;
    const root = this.options.config.nomad.cgroupRoot;

    // Bridge allocations get their veth later; what matters to the check is that they have one.
    const early = this.options.admission.clash({ id: instance.id, address: instance.address, interface: instance.networkMode === 'bridge' ? 'veth' : undefined });
    if (early) return this.markInvalid(t, clashReason(early, instance));

    // A docker task's cgroup and namespace are Docker's, found through the engine (docs/docker.md).
    let docker: DockerTaskFacts | undefined;
    if (instance.driver === 'docker') {
      const found = await this.lookUpDocker(instance);
      if (found.kind === 'invalid') return this.markInvalid(t, found.reason);
      if (found.kind === 'missing') return this.markPending(t, `docker task ${JSON.stringify(instance.task)}: ${found.reason}`);
      docker = found.facts;
    }
    // A docker task on Docker's own network with its port published: the packets really go through
    // the container's veth on Docker's bridge (Docker's DNAT or docker-proxy), so it is counted there,
    // at its own address; checks sent to the host port are redirected as a bridge allocation's are.
    const published = docker && dockerPublished(instance, docker);
    // Host network mode (and Nomad's qemu driver, whose user-mode networking forwards host ports)
    // has no interface of its own: its traffic is counted by port on the node's interfaces.
    if (instance.networkMode === 'bridge' || published) {
      try {
        t.interface = await findHostVeth(docker?.netns ?? instance.allocId, { netnsDir: this.options.netnsDir });
      } catch (error) {
        return this.markPending(t, `host-side interface: ${messageOf(error)}`);
      }
    }
    const cgroup = docker?.cgroup ?? (await findNomadTaskCgroup(root, instance.allocId, instance.task));
    if (!cgroup) {
      const looked = nomadTaskCgroupCandidates(root, instance.allocId, instance.task).map((c) => c.path);
      return this.markPending(t, `task ${JSON.stringify(instance.task)} has no freezer cgroup yet (looked for ${looked.join(', ')})`);
    }
    t.cgroup = cgroup.path;
    const mapped = instanceConfigFor(published ? { ...instance, ...published } : instance, { interface: t.interface, cgroup }, this.instanceSettings());
    if (mapped.kind === 'invalid') return this.markInvalid(t, mapped.reason);
    const { config } = mapped;

    // A verifying TLS check needs a certificate it trusts; without one a sleep would fail it.
    const hasCertificate = config.checkTls !== undefined || this.options.config.healthChecks?.tls !== undefined;
    const unanswerable = unanswerableChecks(instance.checks, hasCertificate);
    const result = await this.options.admission.admit({
      config,
      source: 'nomad',
      origin: { allocId: instance.allocId, jobId: instance.jobId, group: instance.group, task: instance.task },
      ...(unanswerable ? { sleepBlockedBy: `never sleeps: ${unanswerable}` } : {}),
      // The allocation may have changed or gone, or discovery stopped, while the runtime was probed.
      stillWanted: () => this.tracked.get(t.allocId) === t && !this.controller.signal.aborted,
    });
    if (!result.admitted) {
      const { refusal } = result;
      switch (refusal.kind) {
        case 'id-taken':
        case 'key-taken':
          return this.markInvalid(t, clashReason(refusal, instance));
        case 'runtime':
          return this.markPending(t, `runtime: ${refusal.reason}`);
        case 'attach':
          // Try again later (the veth may have been replaced).
          return this.markPending(t, `attaching to ${t.interface ?? "the node's interfaces"} failed: ${messageOf(refusal.error)}`);
        case 'withdrawn':
          return;
      }
    }
    if (unanswerable) this.log.warn({ instance: config.id, alloc: t.allocId, reason: unanswerable }, 'allocation managed but kept awake: its checks cannot be answered while asleep');
    clearTimeout(t.retry);
    t.state = 'managed';
    t.reason = undefined;
    t.instance = result.instance;
    t.backoffMs = 0;
    this.log.info({ instance: config.id, alloc: t.allocId, address: config.address, interface: t.interface, cgroup: t.cgroup }, 'managing allocation');
  }

  /** The docker task's container, cgroup and namespace; `invalid` when no engine can be asked (DOCKER_HOST not unix://). */
  private async lookUpDocker(instance: AnnotatedAllocation): Promise<DockerTaskLookup | { kind: 'invalid'; reason: string }> {
    try {
      this.dockerEngine ??= new DockerEngine({ socket: dockerSocket(this.options.config.docker?.socket) });
    } catch (error) {
      return { kind: 'invalid', reason: messageOf(error) };
    }
    return lookUpDockerTask(this.dockerEngine, instance.allocId, instance.task, this.options.config.nomad.cgroupRoot, this.controller.signal);
  }

  private instanceSettings(): InstanceSettings {
    const { nomad } = this.options.config;
    return { allocDir: nomad.allocDir, checkTls: nomad.checkTls, ownAllocId: process.env.NOMAD_ALLOC_ID };
  }

  private markPending(t: Tracked, reason: string): void {
    if (t.reason !== reason) this.log.info({ alloc: t.allocId, instance: t.nomad.id, reason }, 'allocation not ready for doze yet; retrying');
    t.state = 'pending';
    t.reason = reason;
    t.backoffMs = nextBackoff(t.backoffMs, { minBackoffMs: this.options.pendingMinMs ?? 100, maxBackoffMs: this.options.pendingMaxMs ?? 5000 });
    clearTimeout(t.retry);
    t.retry = setTimeout(() => this.enqueue(t.allocId, () => this.tryManage(t)), t.backoffMs);
    t.retry.unref();
  }

  private markInvalid(t: Tracked, reason: string): void {
    clearTimeout(t.retry);
    if (t.reason !== reason || t.state !== 'invalid') this.log.warn({ alloc: t.allocId, instance: t.nomad.id, reason }, 'allocation annotated for doze cannot be managed');
    t.state = 'invalid';
    t.reason = reason;
  }

  /** Invalid annotations NomadDiscovery found (the allocation never became an instance). */
  private noteInvalid(allocId: string, reason: string): void {
    const previous = this.invalid.get(allocId);
    if (previous?.reason !== reason) this.log.warn({ alloc: allocId, reason }, 'allocation annotated for doze is invalid');
    this.invalid.delete(allocId);
    this.invalid.set(allocId, { allocId, state: 'invalid', reason });
    while (this.invalid.size > MAX_INVALID) this.invalid.delete(this.invalid.keys().next().value!);
  }

  private async removeAllocation(allocId: string, reason: string): Promise<void> {
    this.invalid.delete(allocId);
    const t = this.tracked.get(allocId);
    if (!t) return;
    await this.drop(t, reason);
    if (this.tracked.get(allocId) === t) this.tracked.delete(allocId);
  }

  /** Wake first (a frozen task cannot be stopped by Nomad), then remove programs, map entries, rules, stub. */
  private async drop(t: Tracked, reason: string): Promise<void> {
    clearTimeout(t.retry);
    const wasManaged = t.state === 'managed';
    const wasRegistered = t.state === 'registered';
    t.state = 'removed';
    if (wasRegistered) {
      // The owner unregisters on a clean stop; this covers one that was killed.
      const left = this.options.detector.get(t.nomad.id);
      if (left?.source === 'api' && this.options.unregister) {
        await this.options.unregister(left.id).catch((error) => this.log.warn({ instance: left.id, err: messageOf(error) }, 'removing the registered instance failed'));
        this.log.info({ instance: left.id, alloc: t.allocId, reason }, 'removed the VM its doze vm owner had registered');
      }
      return;
    }
    const { instance } = t;
    if (!wasManaged || !instance) return;
    await this.options.admission.retire(instance, { wake: true });
    t.instance = undefined;
    this.log.info({ instance: instance.id, alloc: t.allocId, reason }, 'allocation no longer managed');
  }
}

/** A host-mode docker task published from Docker's own network: its container address, and the host port as a check address. */
function dockerPublished(instance: AnnotatedAllocation, facts: DockerTaskFacts): Pick<AnnotatedAllocation, 'address' | 'checkAddresses'> | undefined {
  if (instance.networkMode !== 'host' || !facts.dockerNetwork) return undefined;
  const hostPort = Number(instance.address.split(':')[1]);
  const containerPort = facts.dockerNetwork.published.get(hostPort);
  if (containerPort === undefined) return undefined;
  return { address: `${facts.dockerNetwork.ip}:${containerPort}`, checkAddresses: [...new Set([instance.address, ...instance.checkAddresses])] };
}

/** Another instance (static, registered, or another allocation's) already has this id or address. */
function clashReason(clash: Clash, instance: AnnotatedAllocation): string {
  if (clash.kind === 'key-taken') return clash.message;
  const { holder } = clash;
  return `instance id ${JSON.stringify(instance.id)} is already taken by ${holder.allocId ? `allocation ${holder.allocId}` : 'a configured instance'}`;
}
