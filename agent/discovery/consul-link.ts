import type { ConsulConfig } from '../config/schema.js';
import { formatDuration } from '../config/duration.js';
import { messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import { ConnectionTracker } from '../status/connections.js';
import { nextBackoff, sleep } from './backoff.js';
import { allocationTtlChecks, ConsulAgentClient, type ConsulCheck } from './consul-agent.js';

/*
 * The agent's standing with its local Consul agent:
 *
 * 1. Registration. The agent registers itself as service `doze-agent` with
 *    an HTTP check on its own `/healthz`, and re-checks every `resyncMs` that
 *    the registration is still there (a restarted Consul agent in dev mode,
 *    or an operator, may have dropped it). Deregistered on a clean stop.
 *
 * 2. TTL pass-through. A Nomad script check runs inside the task and reaches
 *    Consul as a TTL check; a frozen task stops heartbeating and the TTL
 *    would expire (shared/REFERENCE.md: "doze must pass such TTL checks
 *    itself through Consul's agent API"). While an instance sleeps, doze
 *    passes the TTL checks of its allocation's Nomad services every
 *    `ttlPassInterval` (Nomad's service client registers a script check with
 *    TTL = interval + ttlCheckBuffer, 31 s, so the default 10 s is safe). Honesty: only checks that were passing (or warning)
 *    when the instance fell asleep are vouched for, each with the status it
 *    had; a check that was critical stays critical. On a failed wake the
 *    vouched checks are failed at once. Nomad-owned checks are never
 *    re-registered or deregistered, only updated.
 *
 * Consul unreachable: nothing else stops; the tracker says so and the
 * registration loop retries with backoff.
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

interface Sleeper {
  instanceId: string;
  allocId: string;
  /** Check id → what doze keeps reporting; undefined until the first round after falling asleep. */
  vouched: Map<string, 'pass' | 'warn'> | undefined;
}

export class ConsulLink {
  readonly client: ConsulAgentClient;
  readonly tracker: ConnectionTracker;
  private readonly sleepers = new Map<string, Sleeper>();
  private passTimer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;
  private roundAgain = false;
  private maintaining: Promise<void> | undefined;
  private registered = false;
  /** TTL updates sent, for tests and the status API. */
  passes = 0;

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

  /** The instance is asleep: vouch for its allocation's TTL checks from now on (first round at once). */
  sleeping(instanceId: string, allocId: string): void {
    this.sleepers.set(instanceId, { instanceId, allocId, vouched: undefined });
    if (!this.passTimer) {
      this.passTimer = setInterval(() => void this.passRound(), this.options.config.ttlPassInterval);
      this.passTimer.unref();
    }
    void this.passRound();
  }

  /** The instance is awake again (or gone): its own heartbeats take over. */
  awake(instanceId: string): void {
    this.sleepers.delete(instanceId);
    if (this.sleepers.size === 0 && this.passTimer) {
      clearInterval(this.passTimer);
      this.passTimer = undefined;
    }
  }

  /** A wake failed: the checks doze vouched for go critical now instead of at their TTL. */
  async failed(instanceId: string, reason: string): Promise<void> {
    const sleeper = this.sleepers.get(instanceId);
    this.awake(instanceId);
    if (!sleeper?.vouched) return;
    for (const checkId of sleeper.vouched.keys()) {
      await this.client
        .updateTtl(checkId, 'fail', `doze: waking ${instanceId} failed: ${reason}`)
        .catch((error) => this.options.log.warn({ check: checkId, err: messageOf(error) }, 'could not fail a TTL check'));
    }
  }

  /** Vouched check ids per sleeping instance (status API, tests). */
  vouchedChecks(instanceId: string): string[] {
    return [...(this.sleepers.get(instanceId)?.vouched?.keys() ?? [])];
  }

  get serviceRegistered(): boolean {
    return this.registered;
  }

  async stop(): Promise<void> {
    clearInterval(this.passTimer);
    this.passTimer = undefined;
    this.sleepers.clear();
    await this.maintaining?.catch(() => undefined);
    await this.round?.catch(() => undefined);
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
    while (!signal.aborted) {
      try {
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
        this.tracker.up({ service: this.options.config.register ? AGENT_SERVICE : undefined });
        backoffMs = 0;
        await sleep(this.options.resyncMs ?? 30_000, signal);
      } catch (error) {
        if (signal.aborted) return;
        this.tracker.down(messageOf(error));
        backoffMs = nextBackoff(backoffMs, this.options);
        await sleep(backoffMs, signal);
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

  /** One pass over every sleeper: one list of the agent's checks, then one TTL update per vouched check. */
  private passRound(): Promise<void> {
    if (this.round) {
      this.roundAgain = true;
      return this.round;
    }
    this.round = (async () => {
      try {
        do {
          this.roundAgain = false;
          if (this.sleepers.size === 0) return;
          let checks: ConsulCheck[];
          try {
            checks = await this.client.checks();
          } catch (error) {
            this.tracker.down(messageOf(error));
            return;
          }
          let failure: unknown;
          for (const sleeper of [...this.sleepers.values()]) {
            if (this.sleepers.get(sleeper.instanceId) !== sleeper) continue;
            const ttl = allocationTtlChecks(checks, sleeper.allocId);
            if (!sleeper.vouched) {
              sleeper.vouched = new Map();
              for (const check of ttl) {
                if (check.Status === 'passing') sleeper.vouched.set(check.CheckID, 'pass');
                else if (check.Status === 'warning') sleeper.vouched.set(check.CheckID, 'warn');
              }
              if (ttl.length > 0) this.options.log.info({ instance: sleeper.instanceId, checks: [...sleeper.vouched.keys()], left: ttl.filter((c) => !sleeper.vouched!.has(c.CheckID)).map((c) => c.CheckID) }, 'passing TTL checks while asleep');
            }
            const present = new Map(ttl.map((c) => [c.CheckID, c.Status]));
            for (const [checkId, status] of sleeper.vouched) {
              const now = present.get(checkId);
              if (now === undefined) continue; // Nomad re-syncs it; nothing to renew meanwhile
              // Nomad re-syncs its registrations every 30 s and after a Consul restart, re-registering a
              // missing check with its initial status, usually critical (command/agent/consul/service_client.go
              // sync); this round puts it back, so it is critical for at most one ttlPassInterval.
              if (now !== (status === 'pass' ? 'passing' : 'warning')) this.options.log.info({ instance: sleeper.instanceId, check: checkId, status: now }, 'a vouched TTL check was re-registered (or changed) while asleep; passing it again');
              try {
                await this.client.updateTtl(checkId, status, `doze: ${sleeper.instanceId} is asleep; its check is answered by the doze agent`);
                this.passes++;
              } catch (error) {
                failure = error;
              }
            }
          }
          if (failure) this.tracker.down(messageOf(failure));
          else this.tracker.up();
        } while (this.roundAgain && this.sleepers.size > 0);
      } finally {
        this.round = undefined;
      }
    })();
    return this.round;
  }
}
