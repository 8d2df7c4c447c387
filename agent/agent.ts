import type { Server } from 'node:http';
import { ConfigError, messageOf } from './errors.js';
import type { DozeConfig, InstanceConfig } from './config/schema.js';
import type { Runtime } from './runtimes/runtime.js';
import { Detector } from './detector/detector.js';
import { ManagedInstance } from './detector/managed-instance.js';
import type { Logger } from './log.js';
import { checkTools } from './preflight.js';
import { CheckMarking } from './netfilter/check-marking.js';
import { CheckRedirect } from './netfilter/check-redirect.js';
import { StubServer, type StubStatus } from './health/stub-server.js';
import type { SleepHooks } from './detector/detector.js';
import { hostOf, portOf } from './sources/ipv4.js';
import { routeSource } from './netfilter/route-source.js';
import { createRuntime } from './runtimes/create-runtime.js';
import { monotonicNs } from './sources/bpf-records.js';
import { EbpfSource } from './sources/ebpf-source.js';
import { Metrics } from './status/metrics.js';
import { createStatusApp, listen } from './status/server.js';
import { startNomadInstances, type NomadInstances, type NomadInstancesTuning } from './discovery/nomad-instances.js';

export interface AgentOptions {
  /** Override the compiled eBPF object (tests, packaging). */
  objectPath?: string;
  /** Wrap each instance's runtime (tests inject slow or failing behaviour around a real one). */
  wrapRuntime?: (runtime: Runtime, instance: InstanceConfig) => Runtime;
  /** Backoff and retry knobs of Nomad/Consul discovery (tests). */
  nomadInstances?: NomadInstancesTuning;
}

/** One agent per node: wires the traffic source, the detector, the runtimes and the status API. */
export class Agent {
  private server: Server | undefined;
  private marking: CheckMarking | undefined;
  private redirect: CheckRedirect | undefined;
  /** Nomad/Consul discovery, when `nomad` or `consul` is configured (agent/discovery/nomad-instances.ts). */
  discovery: NomadInstances | undefined;

  private constructor(
    readonly config: DozeConfig,
    readonly detector: Detector,
    readonly source: EbpfSource,
    readonly metrics: Metrics,
    readonly stub: StubServer,
    private readonly log: Logger,
  ) {}

  static async start(config: DozeConfig, log: Logger, options: AgentOptions = {}): Promise<Agent> {
    await checkTools(config.healthChecks.fromUid !== undefined || config.healthChecks.fromSources.length > 0 ? ['tc', 'ip', 'iptables'] : undefined);
    // Probe every runtime before touching the kernel: a bad instance is a config error.
    const prepared = [];
    for (const [index, instanceConfig] of config.instances.entries()) {
      const base = createRuntime(instanceConfig.runtime);
      const runtime = options.wrapRuntime ? options.wrapRuntime(base, instanceConfig) : base;
      const probe = await runtime.probe();
      if (!probe.ok) throw new ConfigError(`instances[${index}] (${instanceConfig.id}).runtime: ${probe.reason}`);
      prepared.push({ instanceConfig, runtime });
    }
    const source = new EbpfSource({ bpffs: config.bpffs, checkMark: config.healthChecks.mark, objectPath: options.objectPath, log });
    await source.start();
    const checks = config.healthChecks;
    const checksMarked = checks.fromUid !== undefined || checks.fromSources.length > 0;
    // The detector and the stub need each other; the hooks close over `agent`, set just below.
    let agent!: Agent;
    const stub = new StubServer({
      host: config.stub.listen.slice(0, config.stub.listen.lastIndexOf(':')),
      status: (id) => stubStatus(agent.detector.get(id)?.state),
      failureReason: (id) => agent.detector.get(id)?.failure,
      onAnswered: (id) => {
        const instance = agent.detector.get(id);
        if (!instance) return;
        instance.checksAnswered++;
        agent.metrics.checksAnswered.inc({ instance: id, runtime: instance.runtime.kind });
      },
    });
    const hooks: SleepHooks = {
      guardChecks: checksMarked,
      beforePause: async (instance) => {
        if (!agent.redirect) return;
        const host = (await routeSource(instance.ip)) ?? stub.host;
        const stubPort = await stub.open(instance.id, host);
        for (const address of [instance.config.address, ...instance.config.checkAddresses]) {
          await agent.redirect.add(instance.id, { ip: hostOf(address), port: portOf(address), stubHost: host, stubPort });
        }
      },
      awake: async (instance) => {
        await agent.redirect?.remove(instance.id);
      },
      wakeFailed: async (instance, reason) => {
        // Refuse from now on: Consul goes critical, Nomad reschedules.
        stub.markFailed(instance.id, reason);
      },
    };
    const detector = new Detector(source, log, { hooks, budget: config.budget });
    const metrics = new Metrics(detector);
    agent = new Agent(config, detector, source, metrics, stub, log);
    try {
      if (checksMarked) {
        agent.marking = new CheckMarking({ mark: checks.mark, fromUid: checks.fromUid, fromSources: checks.fromSources }, config.netfilter.chainPrefix);
        await agent.marking.install();
        agent.redirect = new CheckRedirect(checks.mark, config.netfilter.chainPrefix);
        await agent.redirect.install();
      }
      for (const { instanceConfig, runtime } of prepared) {
        await detector.add(new ManagedInstance(instanceConfig, runtime, monotonicNs()));
      }
      const app = createStatusApp({ detector, metrics, token: config.token, log, refresh: () => agent.refreshCounters(), discovery: () => agent.discovery?.report() });
      agent.server = await listen(app, config.listen);
      // --- Nomad + Consul discovery: allocations become instances (agent/discovery/nomad-instances.ts) ---
      if (config.nomad || config.consul) {
        agent.discovery = await startNomadInstances({
          ...options.nomadInstances,
          config,
          detector,
          log,
          wrapRuntime: options.wrapRuntime,
          statusAddress: () => agent.address,
          release: async (id) => {
            await agent.redirect?.remove(id);
            await stub.close(id);
          },
        });
      }
      // --- end Nomad + Consul discovery ---
    } catch (error) {
      await agent.stop().catch(() => undefined);
      throw error;
    }
    detector.start();
    log.info({ listen: config.listen, instances: config.instances.length }, 'doze agent running');
    return agent;
  }

  /** Refresh idle times for the status API from one counters read. */
  async refreshCounters(): Promise<void> {
    const counters = await this.source.counters();
    for (const instance of this.detector.instances()) {
      const c = counters.get(instance.ip);
      if (c) instance.lastSeenNs = c.lastSeenNs;
    }
  }

  /** Clean exit: wake everything this agent put to sleep, then remove its programs, maps, rules and listeners. */
  async stop(): Promise<void> {
    // Every step runs even if an earlier one failed: nothing may be left behind.
    const step = async (what: string, work: () => Promise<unknown>) => {
      try {
        await work();
      } catch (error) {
        this.log.warn({ err: messageOf(error) }, `${what} failed during shutdown`);
      }
    };
    await step('stopping Nomad/Consul discovery', async () => this.discovery?.stop());
    await step('waking instances', () => this.detector.stop({ wakeAll: true }));
    await step('closing the status API', async () => {
      if (!this.server) return;
      const closed = new Promise<void>((resolve) => this.server!.close(() => resolve()));
      this.server.closeAllConnections();
      await closed;
    });
    for (const instance of this.detector.instances()) {
      await step(`releasing ${instance.id}`, () => this.detector.remove(instance.id, { wake: false }));
    }
    await step('removing eBPF programs and maps', () => this.source.close({ removePins: true }));
    await step('closing the health stub', () => this.stub.stop());
    await step('removing redirect rules', async () => this.redirect?.uninstall());
    await step('removing marking rules', async () => this.marking?.remove());
    this.log.info('doze agent stopped');
  }

  get address(): string {
    const a = this.server?.address();
    return a && typeof a === 'object' ? `${a.address}:${a.port}` : this.config.listen;
  }
}

/** Only an instance that is asleep or on its way (and can come back) gets a positive answer. */
function stubStatus(state: string | undefined): StubStatus {
  if (state === 'pausing' || state === 'sleeping' || state === 'waking') return 'sleeping';
  if (state === 'failed') return 'failed';
  return 'other';
}
