import type { InstanceConfig } from '../config/schema.js';
import type { Detector } from '../detector/detector.js';
import { describeKey, newInstance, trafficKey, type InstanceOrigin, type InstanceSource, type ReadonlyInstance } from '../detector/managed-instance.js';
import { messageOf } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { createRuntime } from '../runtimes/create-runtime.js';
import type { Runtime } from '../runtimes/runtime.js';
import { monotonicNs } from '../shared/clock.js';

/*
 * One way in and one way out for every instance, whoever brings it: the
 * config file (agent.ts), the status API (registry.ts), Nomad discovery
 * (discovery/nomad-instances.ts).
 *
 * Admission reserves the instance's id and traffic key before its first
 * await, so two admissions of one address (an API registration and a
 * discovery in the same tick) cannot both pass the check; then it builds and
 * probes the runtime and hands the instance to the detector. Whatever fails
 * frees the reservation and closes the runtime. Retirement wakes the instance
 * (when asked), takes it from the detector, wakes a sleep that completed
 * under the removal and releases its rules and listeners, holding its id and
 * key until then. Results carry the reason; each caller says it in its own
 * terms (a config error, an HTTP status, an allocation's state).
 */

export type { InstanceSource };

/** Who holds an id or a traffic key: a managed instance, or one being admitted or retired. */
export interface Holder {
  id: string;
  source: InstanceSource;
  /** The allocation of an instance from Nomad. */
  allocId?: string;
}

export type Clash =
  | { kind: 'id-taken'; holder: Holder }
  /** `message` names the address (or host port) and its holder, the same for every caller. */
  | { kind: 'key-taken'; holder: Holder; message: string };

export type AdmissionRefusal =
  | Clash
  /** The runtime did not answer its probe; `reason` is what it said. */
  | { kind: 'runtime'; reason: string }
  /** The detector could not take it on (attaching its program, tracking its key, adopting it). */
  | { kind: 'attach'; error: unknown }
  /** The caller no longer wanted it once its runtime answered (`stillWanted`). */
  | { kind: 'withdrawn' };

export type AdmissionResult = { admitted: true; instance: ReadonlyInstance } | { admitted: false; refusal: AdmissionRefusal };

export interface AdmissionRequest {
  config: InstanceConfig;
  source: InstanceSource;
  origin?: InstanceOrigin;
  /** Why it must never sleep, if it must not (shown as heldBy). */
  sleepBlockedBy?: string;
  /** A runtime already built and probed (probedRuntime), now the admission's: closed if the instance is refused. */
  runtime?: Runtime;
  /** The instance it takes the place of (a registration's new body): its id and key are no clash, and it is retired once the new runtime answers. */
  replaces?: ReadonlyInstance;
  /** Asked once the runtime answered: false withdraws the admission (its allocation went away meanwhile). */
  stillWanted?: () => boolean;
}

export interface RuntimeHooks {
  /** Builds the runtime (tests); default createRuntime(config.runtime). */
  createRuntime?: (config: InstanceConfig) => Runtime;
  /** Wraps each runtime (tests inject slow or failing behaviour around a real one). */
  wrapRuntime?: (runtime: Runtime, instance: InstanceConfig) => Runtime;
}

export type ProbedRuntime = { ok: true; runtime: Runtime } | { ok: false; reason: string };

/** The instance's runtime, built through the hooks and probed; closed again when it does not answer. */
export async function probedRuntime(config: InstanceConfig, hooks: RuntimeHooks = {}): Promise<ProbedRuntime> {
  const base = hooks.createRuntime ? hooks.createRuntime(config) : createRuntime(config.runtime);
  const runtime = hooks.wrapRuntime ? hooks.wrapRuntime(base, config) : base;
  const probe = await runtime.probe();
  if (probe.ok) return { ok: true, runtime };
  await closeQuietly(runtime);
  return { ok: false, reason: probe.reason ?? 'unavailable' };
}

export interface InstanceAdmissionOptions extends RuntimeHooks {
  detector: Detector;
  log: Logger;
  /** Undoes the agent's per-instance sleep plumbing (redirect rule, stub and hold listeners). */
  release: (id: string) => Promise<void>;
}

export class InstanceAdmission {
  /** Ids and traffic keys of the instances being admitted or retired, and who holds each. */
  private readonly reservedIds = new Map<string, Holder>();
  private readonly reservedKeys = new Map<string, Holder>();

  constructor(private readonly options: InstanceAdmissionOptions) {}

  /** Who already holds this id or traffic key (managed, being admitted or retired), if anyone but `replaces`. */
  clash(config: Pick<InstanceConfig, 'id' | 'address' | 'interface'>, replaces?: ReadonlyInstance): Clash | undefined {
    const { detector } = this.options;
    const key = trafficKey(config);
    const idHolder = this.reservedIds.get(config.id) ?? holderOf(detector.get(config.id), replaces);
    if (idHolder) return { kind: 'id-taken', holder: idHolder };
    const keyHolder = this.reservedKeys.get(key) ?? holderOf(detector.instances().find((i) => i.key === key), replaces);
    if (!keyHolder) return undefined;
    const message = `${describeKey(config)} is already managed as ${JSON.stringify(keyHolder.id)} (instances are keyed by IPv4 address, or by port on the node's own interfaces)`;
    return { kind: 'key-taken', holder: keyHolder, message };
  }

  /** Takes an instance on: the instance managed, or why not (nothing of it is left behind then). */
  async admit(request: AdmissionRequest): Promise<AdmissionResult> {
    const { config } = request;
    const clash = this.clash(config, request.replaces);
    if (clash) {
      if (request.runtime) await closeQuietly(request.runtime);
      return { admitted: false, refusal: clash };
    }
    // Before the first await: an admission started in the same tick sees these as taken.
    const unreserve = this.reserve(config.id, trafficKey(config), { id: config.id, source: request.source, ...(request.origin ? { allocId: request.origin.allocId } : {}) });
    try {
      let runtime = request.runtime;
      if (!runtime) {
        const probed = await probedRuntime(config, this.options);
        if (!probed.ok) return { admitted: false, refusal: { kind: 'runtime', reason: probed.reason } };
        runtime = probed.runtime;
      }
      if (request.stillWanted && !request.stillWanted()) {
        await closeQuietly(runtime);
        return { admitted: false, refusal: { kind: 'withdrawn' } };
      }
      if (request.replaces) await this.retire(request.replaces, { wake: true });
      const instance = newInstance(config, runtime, monotonicNs(), { source: request.source, origin: request.origin, sleepBlockedBy: request.sleepBlockedBy });
      try {
        await this.options.detector.add(instance);
      } catch (error) {
        // add() undid its own part; the runtime, and any rules a sleep it adopted set up, are ours.
        await closeQuietly(runtime);
        if (!this.options.detector.get(config.id)) await this.options.release(config.id).catch(() => undefined);
        return { admitted: false, refusal: { kind: 'attach', error } };
      }
      return { admitted: true, instance };
    } finally {
      unreserve();
    }
  }

  /**
   * Lets a managed instance go: woken first when asked (nothing may be left asleep), taken from
   * the detector, then its rules and listeners released. Failures are logged, never thrown: what
   * can be undone is.
   */
  async retire(instance: ReadonlyInstance, options: { wake: boolean }): Promise<void> {
    const { detector, log } = this.options;
    const unreserve = this.reserve(instance.id, instance.key, holderOf(instance)!);
    try {
      if (detector.get(instance.id) === instance) {
        await detector.remove(instance.id, options).catch((error) => log.warn({ instance: instance.id, err: messageOf(error) }, 'removing the instance failed part way'));
      }
      // A sleep decided just before the removal may still have completed.
      if (options.wake) {
        const state = await instance.runtime.inspect().catch(() => 'gone' as const);
        if (state === 'asleep' || state === 'transitioning') {
          await instance.runtime.wake(instance.config.wakeTimeout).catch((error) => log.error({ instance: instance.id, err: messageOf(error) }, 'could not wake a removed instance'));
        }
      }
      if (!detector.get(instance.id)) {
        await this.options.release(instance.id).catch((error) => log.warn({ instance: instance.id, err: messageOf(error) }, "releasing the instance's rules failed"));
      }
    } finally {
      unreserve();
    }
  }

  /** Reserves what is free of `id` and `key` for `holder`; the returned function frees what it reserved. */
  private reserve(id: string, key: string, holder: Holder): () => void {
    const taken: Array<[Map<string, Holder>, string]> = [];
    for (const [reserved, name] of [[this.reservedIds, id], [this.reservedKeys, key]] as const) {
      if (reserved.has(name)) continue;
      reserved.set(name, holder);
      taken.push([reserved, name]);
    }
    return () => {
      for (const [reserved, name] of taken) if (reserved.get(name) === holder) reserved.delete(name);
    };
  }
}

function holderOf(instance: ReadonlyInstance | undefined, except?: ReadonlyInstance): Holder | undefined {
  if (!instance || instance === except) return undefined;
  return { id: instance.id, source: instance.source, ...(instance.origin ? { allocId: instance.origin.allocId } : {}) };
}

async function closeQuietly(runtime: Runtime): Promise<void> {
  await runtime.close?.().catch(() => undefined);
}
