import type { ConsulConfig } from '../config/schema.js';
import { formatDuration } from '../config/duration.js';
import { messageOf } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { ConnectionTracker } from './connection-tracker.js';
import { nextBackoff, delay } from './backoff.js';
import { ConsulAgentClient } from './consul-agent.js';
import { consulProbes, describeMissing, missingRights } from './permissions.js';

/*
 * The agent's standing with its local Consul agent: it registers itself as
 * service `doze-agent` with an HTTP check on its own `/healthz`, and
 * re-checks every `resyncMs` that the registration is still there (a
 * restarted Consul agent in dev mode, or an operator, may have dropped it).
 * Deregistered on a clean stop. Consul unreachable: nothing else stops; the
 * tracker says so and the registration loop retries with backoff.
 *
 * Nomad's checks are never touched. Its HTTP, TCP and gRPC checks of a
 * sleeping instance reach the stub; a script check, which Nomad runs by
 * exec'ing into the task, cannot run in a frozen task, so doze does not
 * manage a group whose managed task has one (agent/nomad/managed-group.ts).
 * Passing such a check's TTL in Nomad's place would only make it flap:
 * Nomad reports the timed-out exec as critical every interval
 * (client/allocrunner/taskrunner/script_check_hook.go).
 */

export const AGENT_SERVICE = 'doze-agent';

export interface ConsulLinkOptions {
  config: ConsulConfig;
  log: Logger;
  /** "host:port" the status API listens on (its /healthz is the check). */
  statusAddress: () => string;
  signal: AbortSignal;
  /** Nomad node id, for the registration's meta, once known. */
  nodeId?: () => string | undefined;
  /** How often the registration is verified (default 30 s). */
  resyncMs?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export class ConsulLink {
  readonly client: ConsulAgentClient;
  readonly tracker: ConnectionTracker;
  private maintaining: Promise<void> | undefined;
  private registered = false;
  /** Rights the Consul token lacks, found at start (permissions.ts). */
  private missingRights: string[] = [];

  constructor(private readonly options: ConsulLinkOptions) {
    this.client = new ConsulAgentClient(options.config);
    this.tracker = new ConnectionTracker(this.client.address, (status) => {
      if (status.connected) options.log.info({ consul: status.address }, 'Consul reachable');
      else options.log.warn({ consul: status.address, err: status.error }, 'Consul unreachable; instances keep being managed, retrying with backoff');
    });
  }

  start(): void {
    this.maintaining = this.maintain();
  }

  get serviceRegistered(): boolean {
    return this.registered;
  }

  async stop(): Promise<void> {
    await this.maintaining?.catch(() => undefined);
    if (this.registered) {
      await this.client.deregister(AGENT_SERVICE).catch((error) => this.options.log.warn({ err: messageOf(error) }, 'could not deregister doze-agent from Consul'));
      this.registered = false;
    }
    this.client.destroy();
  }

  /** Keeps the registration in place (or, with register=false, just watches reachability). */
  private async maintain(): Promise<void> {
    const { signal } = this.options;
    let backoffMs = 0;
    let probed = false;
    while (!signal.aborted) {
      try {
        if (!probed) {
          // Every right the token lacks, named at once (service:write shows as the registration's 403).
          const missing = await missingRights(consulProbes(this.client));
          probed = true;
          this.missingRights = missing;
          if (missing.length > 0) this.options.log.warn({ missing }, describeMissing('Consul', missing));
        }
        const services = await this.client.services();
        if (this.options.config.register) {
          const registration = this.registration();
          const current = services[AGENT_SERVICE];
          // Re-register when it is gone or stale (the node id becomes known after the first registration).
          if (!current || current.Port !== registration.port || (current.Meta?.['nomad_node_id'] ?? '') !== (registration.meta['nomad_node_id'] ?? '')) {
            await this.client.register(registration);
            this.options.log.info({ service: AGENT_SERVICE, check: registration.check?.http }, 'registered in Consul');
          }
          this.registered = true;
        }
        this.tracker.up({ service: this.options.config.register ? AGENT_SERVICE : undefined, missingRights: this.missingRights });
        backoffMs = 0;
        await delay(this.options.resyncMs ?? 30_000, signal);
      } catch (error) {
        if (signal.aborted) return;
        const refused = (error as { status?: number }).status === 403;
        this.tracker.down(refused ? `${messageOf(error)} (the token needs service:write on ${AGENT_SERVICE} to register it, and service:read to see it)` : messageOf(error));
        backoffMs = nextBackoff(backoffMs, this.options);
        await delay(backoffMs, signal);
      }
    }
  }

  private registration() {
    const address = this.options.statusAddress();
    const split = address.lastIndexOf(':');
    const host = address.slice(0, split);
    const port = Number(address.slice(split + 1));
    // A wildcard listener is checked over loopback: Consul runs on the same node.
    const wildcard = host === '0.0.0.0' || host === '::' || host === '[::]' || host === '';
    const checkHost = wildcard ? '127.0.0.1' : host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
    const nodeId = this.options.nodeId?.();
    return {
      id: AGENT_SERVICE,
      name: AGENT_SERVICE,
      ...(wildcard ? {} : { address: host }),
      port,
      tags: ['doze'],
      meta: { ...(nodeId ? { nomad_node_id: nodeId } : {}) },
      check: {
        name: 'doze agent /healthz',
        http: `http://${checkHost}:${port}/healthz`,
        interval: formatDuration(this.options.config.checkInterval),
        timeout: '2s',
      },
    };
  }
}
