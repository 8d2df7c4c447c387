import type { Server } from 'node:http';
import { ConfigError, messageOf } from './shared/errors.js';
import type { DozeConfig, InstanceConfig } from './config/schema.js';
import type { Runtime } from './runtimes/runtime.js';
import { Detector } from './detector/detector.js';
import { EntryWake } from './detector/entry-wake.js';
import type { Logger } from './shared/log.js';
import { checkInterfaces, checkTools, reportSwap } from './preflight.js';
import type { StubServer } from './health/stub-server.js';
import { SleepGuards } from './sleep-guards.js';
import { BpffsLock } from './sources/bpffs-lock.js';
import { EbpfSource } from './sources/ebpf-source.js';
import { Metrics } from './status/metrics.js';
import { createStatusApp, listen } from './status/server.js';
import { InstanceAdmission, probedRuntime, type AdmissionRefusal } from './instances/admission.js';
import { InstanceRegistry } from './instances/registry.js';
import { registrationRefusal, registrationRoots } from './instances/registration-policy.js';
import { checkExposure } from './config/exposure.js';
import { checkUpstreamVersions, readUpstreamVersions, type UpstreamVersions } from './upstream-versions.js';
import { Discovery, type DiscoveryTuning } from './discovery/discovery.js';

export interface AgentOptions {
  /** Override the compiled eBPF object (tests, packaging). */
  objectPath?: string;
  /** Wrap each instance's runtime (tests inject slow or failing behaviour around a real one). */
  wrapRuntime?: (runtime: Runtime, instance: InstanceConfig) => Runtime;
  /** Backoff and retry knobs of Nomad/Consul discovery (tests). */
  nomadInstances?: DiscoveryTuning;
  /** Failure knobs (tests): drop this many wake events, as a lost perf record would. */
  faults?: { dropWakeEvents?: number };
}

/** One agent per node: wires the traffic source, the detector, the runtimes and the status API. */
export class Agent {
  private server: Server | undefined;
  /** Nomad/Consul discovery, when `nomad` or `consul` is configured (agent/discovery/discovery.ts). */
  discovery: Discovery | undefined;
  /** Wakes a sleeper a process enters (agent/detector/entry-wake.ts). */
  private entryWake: EntryWake | undefined;

  private constructor(
    readonly config: DozeConfig,
    readonly detector: Detector<SleepGuards>,
    readonly source: EbpfSource,
    readonly metrics: Metrics,
    readonly guards: SleepGuards,
    /** Instances registered through the status API (`doze vm run --register`; agent/instances/registry.ts). */
    readonly registry: InstanceRegistry,
    /** This agent's claim on its bpffs (one agent per set of pinned maps). */
    private readonly lock: BpffsLock,
    /** The Nomad and Consul versions read at start (agent/upstream-versions.ts), for the status. */
    readonly versions: UpstreamVersions,
    private readonly log: Logger,
  ) {}

  static async start(config: DozeConfig, log: Logger, options: AgentOptions = {}): Promise<Agent> {
    // Before anything else: an exposed status API without a token is a config error (exit 2).
    checkExposure(config);
    const checks = config.healthChecks;
    await checkTools(checks.fromUid !== undefined || checks.fromUser !== undefined || checks.fromSources.length > 0 ? ['tc', 'ip', 'iptables'] : undefined);
    // Before anything is touched: a second agent on these pins must leave them alone, even on its way out.
    const lock = await BpffsLock.acquire({ bpffs: config.bpffs, listen: config.listen, chainPrefix: config.netfilter.chainPrefix, log });
    try {
      return await Agent.startLocked(config, log, options, lock);
    } catch (error) {
      await lock.release();
      throw error;
    }
  }

  private static async startLocked(config: DozeConfig, log: Logger, options: AgentOptions, lock: BpffsLock): Promise<Agent> {
    reportSwap(log, config.instances.some((i) => i.runtime.kind === 'freezer' && i.runtime.reclaim));
    // Know the Nomad it talks to before touching the kernel: an unsupported one is refused (exit 2).
    const versions = config.nomad || config.consul ? await readUpstreamVersions(config, log) : {};
    checkUpstreamVersions(versions, config);
    if (versions.nomad?.version || versions.consul?.version) log.info({ nomad: versions.nomad?.version, consul: versions.consul?.version }, 'upstream versions');
    // Probe every runtime and interface before touching the kernel: a bad instance is a config error.
    const prepared = [];
    for (const [index, instanceConfig] of config.instances.entries()) {
      const probed = await probedRuntime(instanceConfig, { wrapRuntime: options.wrapRuntime });
      if (!probed.ok) throw staticRefusal(index, instanceConfig.id, { kind: 'runtime', reason: probed.reason });
      prepared.push({ index, instanceConfig, runtime: probed.runtime });
    }
    await checkInterfaces(config);
    const source = new EbpfSource({
      bpffs: config.bpffs,
      // Observers are what checks are to the tc program: never counted, never a wake (docs/observers.md).
      checkMark: config.healthChecks.mark | (config.observers.fromSources.length > 0 ? config.observers.mark : 0),
      checkSources: [...config.healthChecks.fromSources, ...config.observers.fromSources],
      hostInterfaces: config.hostPorts.interfaces,
      objectPath: options.objectPath,
      log,
    });
    await source.start();
    // The guards read the detector's instances and report back to it: the detector makes them.
    const detector = new Detector<SleepGuards>(source, log, {
      hooks: (d) => new SleepGuards(config, d, log),
      budget: config.budget,
      dryRun: config.dryRun,
      earlyThaw: config.earlyThaw,
      dropWakeEvents: options.faults?.dropWakeEvents,
    });
    const guards = detector.hooks;
    const metrics = new Metrics(detector, () => source.eventsLost());
    // Configured, registered and discovered instances all come and go through it.
    const admission = new InstanceAdmission({ detector, log, release: (id) => guards.release(id), wrapRuntime: options.wrapRuntime });
    const roots = registrationRoots(config);
    const registry = new InstanceRegistry({ admission, detector, log, policy: (instance) => registrationRefusal(instance, roots) });
    const agent = new Agent(config, detector, source, metrics, guards, registry, lock, versions, log);
    agent.entryWake = new EntryWake(detector, log);
    try {
      await guards.install();
      for (const { index, instanceConfig, runtime } of prepared) {
        const result = await admission.admit({ config: instanceConfig, source: 'static', runtime });
        if (!result.admitted) throw staticRefusal(index, instanceConfig.id, result.refusal);
      }
      const app = createStatusApp({ detector, metrics, token: config.token, log, discovery: () => agent.discovery?.report(), versions: () => agent.versions, registry: config.registrations.enabled ? registry : undefined, hostInterfaces: () => source.watchedHostInterfaces(), coldStartThresholdMs: config.coldStartThreshold });
      agent.server = await listen(app, config.listen);
      await lock.setListen(agent.address);
      // --- Nomad + Consul discovery: allocations become instances (agent/discovery/discovery.ts) ---
      if (config.nomad || config.consul) {
        agent.discovery = Discovery.start({
          ...options.nomadInstances,
          config,
          detector,
          admission,
          log,
          statusAddress: () => agent.address,
          // An allocation that stopped takes the instance its doze vm owner registered with it (the owner may have died unheard).
          unregister: async (id) => void (await registry.unregister(id, 'its Nomad allocation stopped')),
        });
      }
      // --- end Nomad + Consul discovery ---
    } catch (error) {
      // Said before the cleanup's own lines, so the log reads cause first, then "doze agent stopped".
      log.error({ err: messageOf(error) }, 'agent failed to start: undoing what it set up');
      await agent.stop({ keepLock: true }).catch(() => undefined);
      throw error;
    }
    detector.start();
    log.info({ listen: config.listen, instances: config.instances.length }, 'doze agent running');
    return agent;
  }

  /**
   * Clean exit. A final stop (the default) wakes everything this agent put to sleep, then removes
   * its programs, maps, rules and listeners: nobody else would wake them. A hand-over stop
   * (`handover: true`: a successor agent will run on this node, an upgrade) wakes nobody and leaves
   * what a crash leaves: sleepers asleep (frozen, memory still out), the tc programs counting and
   * signalling on their interfaces, the pinned maps with their entries, the check redirects; it only
   * closes its listeners and helpers and releases the bpffs lock. The next agent adopts it all as
   * after a crash (Detector.add → runtime.inspect(): a sleeper is adopted asleep, and one traffic
   * reached meanwhile is found signalled in the state map and woken).
   */
  async stop(options: { keepLock?: boolean; handover?: boolean } = {}): Promise<void> {
    const handover = options.handover === true;
    // Every step runs even if an earlier one failed: nothing may be left behind.
    const step = async (what: string, work: () => Promise<unknown>) => {
      try {
        await work();
      } catch (error) {
        this.log.warn({ err: messageOf(error) }, `${what} failed during shutdown`);
      }
    };
    await step('stopping Nomad/Consul discovery', async () => this.discovery?.stop());
    await step(handover ? 'stopping the detector' : 'waking instances', () => this.detector.stop({ wakeAll: !handover }));
    this.entryWake?.stop();
    await step('closing the status API', async () => {
      if (!this.server) return;
      const closed = new Promise<void>((resolve) => this.server!.close(() => resolve()));
      this.server.closeAllConnections();
      await closed;
    });
    if (handover) {
      const asleep = this.detector.instances().filter((i) => i.state !== 'running').map((i) => i.id);
      await step('closing the map helpers (programs and pins stay)', () => this.source.close({ removePins: false, detach: false }));
      await step('closing the stub and hold listeners (redirects stay)', () => this.guards.stop({ keepRules: true }));
      if (!options.keepLock) await step('releasing the bpffs lock', () => this.lock.release());
      this.log.info({ asleep }, 'doze agent stopped for hand-over: sleepers stay asleep for the next agent');
      return;
    }
    for (const instance of this.detector.instances()) {
      await step(`releasing ${instance.id}`, () => this.detector.remove(instance.id, { wake: false }));
    }
    await step('removing eBPF programs and maps', () => this.source.close({ removePins: true }));
    await step('removing guards (stub, hold, netfilter)', () => this.guards.stop());
    // Last: until the pins are gone, no other agent may take them.
    if (!options.keepLock) await step('releasing the bpffs lock', () => this.lock.release());
    this.log.info('doze agent stopped');
  }

  get stub(): StubServer {
    return this.guards.stub;
  }

  get address(): string {
    const a = this.server?.address();
    return a && typeof a === 'object' ? `${a.address}:${a.port}` : this.config.listen;
  }
}

/**
 * Why a configured instance cannot be taken on, as a config error naming it; what attaching it
 * threw is thrown as it was. (The config loader refuses duplicate ids and addresses: a clash here is a bug.)
 */
function staticRefusal(index: number, id: string, refusal: AdmissionRefusal): unknown {
  const field = `instances[${index}] (${id})`;
  switch (refusal.kind) {
    case 'attach':
      return refusal.error;
    case 'runtime':
      return new ConfigError(`${field}.runtime: ${refusal.reason}`);
    case 'key-taken':
      return new ConfigError(`${field}.address: ${refusal.message}`);
    case 'id-taken':
      return new ConfigError(`${field}.id: already managed as a ${refusal.holder.source} instance`);
    case 'withdrawn':
      return new ConfigError(`${field}: withdrawn`);
  }
}
