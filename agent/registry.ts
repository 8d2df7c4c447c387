import type { InstanceConfig } from './config/schema.js';
import type { Detector } from './detector/detector.js';
import { describeKey, ManagedInstance, trafficKey } from './detector/managed-instance.js';
import { messageOf } from './errors.js';
import type { Logger } from './log.js';
import { createRuntime } from './runtimes/create-runtime.js';
import type { Runtime } from './runtimes/runtime.js';
import { monotonicNs } from './sources/bpf-records.js';

/*
 * Instances registered at run time through the status API
 * (`PUT /api/instances/{id}`, `DELETE /api/instances/{id}`): what
 * `doze vm run --register` uses to hand its VM to the node's agent. They sit
 * beside the configured (`static`) and discovered (`nomad`) instances, are
 * marked `source: "api"` in the view, and only they can be replaced or
 * removed through the API. A removal wakes the instance first, then releases
 * its rules, programs and listeners, as discovery does for a stopped
 * allocation.
 */

export type RegisterResult =
  | { status: 201 | 200; instance: ManagedInstance; created: boolean }
  | { status: 409 | 422; error: string };

export type UnregisterResult = { status: 200; instance: ManagedInstance } | { status: 404 | 409; error: string };

export interface InstanceRegistryOptions {
  detector: Detector;
  log: Logger;
  /** Undoes the agent's per-instance sleep plumbing (redirect rule, stub and hold listeners). */
  release: (id: string) => Promise<void>;
  wrapRuntime?: (runtime: Runtime, instance: InstanceConfig) => Runtime;
  /** Builds the runtime (tests). */
  createRuntime?: (config: InstanceConfig) => Runtime;
}

export class InstanceRegistry {
  /** Registrations and removals run one at a time: two PUTs for one address must not both win. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly log: Logger;

  constructor(private readonly options: InstanceRegistryOptions) {
    this.log = options.log.child({ component: 'registry' });
  }

  register(config: InstanceConfig): Promise<RegisterResult> {
    return this.serial(() => this.doRegister(config));
  }

  unregister(id: string, reason = 'unregistered through the API'): Promise<UnregisterResult> {
    return this.serial(() => this.doUnregister(id, reason));
  }

  /** Ids of the instances registered through the API. */
  ids(): string[] {
    return this.options.detector.instances().filter((i) => i.source === 'api').map((i) => i.id);
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async doRegister(config: InstanceConfig): Promise<RegisterResult> {
    const { detector } = this.options;
    const existing = detector.get(config.id);
    if (existing && existing.source !== 'api') {
      return { status: 409, error: `instance id ${JSON.stringify(config.id)} is taken by a ${existing.source === 'nomad' ? 'Nomad allocation' : 'configured instance'}` };
    }
    const key = trafficKey(config);
    const sameAddress = detector.instances().find((i) => i.id !== config.id && i.key === key);
    if (sameAddress) return { status: 409, error: `${describeKey(config)} is already managed as ${JSON.stringify(sameAddress.id)} (instances are keyed by IPv4 address, or by port on the node's own interfaces)` };
    // A re-registration (the owner repeats its PUT, e.g. after an agent restart) changes nothing.
    if (existing && JSON.stringify(existing.config) === JSON.stringify(config)) return { status: 200, instance: existing, created: false };

    const base = this.options.createRuntime ? this.options.createRuntime(config) : createRuntime(config.runtime);
    const runtime = this.options.wrapRuntime ? this.options.wrapRuntime(base, config) : base;
    const probe = await runtime.probe();
    if (!probe.ok) {
      await runtime.close?.().catch(() => undefined);
      return { status: 422, error: `runtime: ${probe.reason ?? 'unavailable'}` };
    }
    if (existing) await this.remove(existing, 'replaced by a new registration');
    const managed = new ManagedInstance(config, runtime, monotonicNs());
    managed.source = 'api';
    try {
      await detector.add(managed);
    } catch (error) {
      // add() undid its own part; the runtime and the rules are ours (unless another instance holds the id).
      await runtime.close?.().catch(() => undefined);
      if (!detector.get(config.id)) await this.options.release(config.id).catch(() => undefined);
      return { status: 422, error: `attaching to ${config.interface} failed: ${messageOf(error)}` };
    }
    this.log.info({ instance: config.id, address: config.address, interface: config.interface, runtime: runtime.kind }, existing ? 'registration replaced' : 'instance registered');
    return { status: existing ? 200 : 201, instance: managed, created: !existing };
  }

  private async doUnregister(id: string, reason: string): Promise<UnregisterResult> {
    const instance = this.options.detector.get(id);
    if (!instance) return { status: 404, error: `no instance ${JSON.stringify(id)}` };
    if (instance.source !== 'api') return { status: 409, error: `instance ${JSON.stringify(id)} is ${instance.source === 'nomad' ? 'discovered from Nomad' : 'configured'}, not registered through the API` };
    await this.remove(instance, reason);
    return { status: 200, instance };
  }

  /** Wake first (nothing may be left asleep), then remove programs, map entries, rules and listeners. */
  private async remove(instance: ManagedInstance, reason: string): Promise<void> {
    const { detector } = this.options;
    try {
      await detector.remove(instance.id, { wake: true });
    } catch (error) {
      this.log.warn({ instance: instance.id, err: messageOf(error) }, 'removing the instance failed part way');
    }
    // A sleep decided just before the removal may still have completed.
    const state = await instance.runtime.inspect().catch(() => 'gone' as const);
    if (state === 'paused' || state === 'transitioning') {
      await instance.runtime.resume(instance.config.wakeTimeout).catch((error) => this.log.error({ instance: instance.id, err: messageOf(error) }, 'could not wake a removed instance'));
    }
    await this.options.release(instance.id).catch((error) => this.log.warn({ instance: instance.id, err: messageOf(error) }, "releasing the instance's rules failed"));
    this.log.info({ instance: instance.id, reason }, 'instance no longer managed');
  }
}
