import type { DozeConfig } from '../config/schema.js';
import { ConsulLink } from './consul-link.js';
import type { DiscoveryReport } from './discovery-report.js';
import { AllocationManager, type AllocationManagerOptions, type AllocationManagerTuning } from './nomad-instances.js';

/*
 * What the agent keeps in step with Nomad and Consul, when either is
 * configured: the allocations on this Nomad client node become instances
 * (nomad-instances.ts), and the agent keeps its own registration in Consul
 * (consul-link.ts), tagged with this node's id once Nomad has told it. Either
 * runs without the other. One report for GET /api/status.
 */

export interface DiscoveryTuning extends AllocationManagerTuning {
  /** How often the Consul registration is verified. */
  consulResyncMs?: number;
}

export interface DiscoveryOptions extends DiscoveryTuning, Omit<AllocationManagerOptions, 'config'> {
  config: Pick<DozeConfig, 'nomad' | 'consul'> & { healthChecks?: Pick<DozeConfig['healthChecks'], 'tls'>; docker?: DozeConfig['docker'] };
  /** The status API's "host:port", for the doze-agent check. */
  statusAddress: () => string;
}

export class Discovery {
  readonly nomad: AllocationManager | undefined;
  readonly consul: ConsulLink | undefined;
  private readonly controller = new AbortController();

  constructor(options: DiscoveryOptions) {
    const { nomad, consul, healthChecks, docker } = options.config;
    if (nomad) this.nomad = new AllocationManager({ ...options, config: { nomad, healthChecks, docker } });
    if (consul) {
      this.consul = new ConsulLink({
        config: consul,
        log: options.log.child({ component: 'consul' }),
        statusAddress: options.statusAddress,
        signal: this.controller.signal,
        nodeId: () => this.nomad?.nodeId,
        resyncMs: options.consulResyncMs,
        minBackoffMs: options.minBackoffMs,
        maxBackoffMs: options.maxBackoffMs,
      });
    }
  }

  static start(options: DiscoveryOptions): Discovery {
    const discovery = new Discovery(options);
    discovery.consul?.start();
    discovery.nomad?.start();
    return discovery;
  }

  /** For GET /api/status. */
  report(): DiscoveryReport {
    const nomad = this.nomad?.report();
    return {
      connections: {
        ...(nomad ? nomad.connections : {}),
        ...(this.consul ? { consul: this.consul.tracker.status() } : {}),
      },
      allocations: nomad?.allocations ?? [],
    };
  }

  /**
   * Stops discovery and the Consul link (deregistering the agent). Managed
   * instances stay in the detector: the agent's own shutdown wakes and releases them.
   */
  async stop(): Promise<void> {
    this.controller.abort();
    await this.nomad?.stop();
    await this.consul?.stop();
  }
}
