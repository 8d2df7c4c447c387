import type { InstanceConfig } from '../config/schema.js';
import type { Detector } from '../detector/detector.js';
import type { ReadonlyInstance } from '../detector/managed-instance.js';
import { messageOf } from '../shared/errors.js';
import type { AdmissionRefusal, InstanceAdmission } from './admission.js';
import type { Logger } from '../shared/log.js';
import { describeRegistrationRefusal, type RegistrationRefusal } from './registration-policy.js';
import { SerialQueue } from '../shared/serial-queue.js';

/*
 * Instances registered at run time through the status API
 * (`PUT /api/instances/{id}`, `DELETE /api/instances/{id}`): what
 * `doze vm run --register` uses to hand its VM to the node's agent. They sit
 * beside the configured (`static`) and discovered (`nomad`) instances, are
 * marked `source: "api"` in the view, and only they can be replaced or
 * removed through the API. They come and go through InstanceAdmission, as the
 * others do: a removal wakes the instance first, then releases its rules,
 * programs and listeners.
 */

export type RegisterResult =
  | { status: 201 | 200; instance: ReadonlyInstance; created: boolean }
  | { status: 403 | 409 | 422; error: string };

export type UnregisterResult = { status: 200; instance: ReadonlyInstance } | { status: 404 | 409; error: string };

export interface InstanceRegistryOptions {
  admission: InstanceAdmission;
  detector: Detector;
  log: Logger;
  /** What a registration may name (registration-policy.ts): a refusal is a 403. */
  policy: (config: InstanceConfig) => RegistrationRefusal | undefined;
}

export class InstanceRegistry {
  /** Registrations and removals run one at a time: a PUT and the DELETE after it apply in order. */
  private readonly queue = new SerialQueue();
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
    return this.queue.run(work);
  }

  private async doRegister(config: InstanceConfig): Promise<RegisterResult> {
    const { admission, detector } = this.options;
    const forbidden = this.options.policy(config);
    if (forbidden) {
      this.log.warn({ instance: config.id, refusal: forbidden }, 'registration refused');
      return { status: 403, error: describeRegistrationRefusal(forbidden) };
    }
    const existing = detector.get(config.id);
    // Only a registration through the API can be replaced through it.
    const replaces = existing?.source === 'api' ? existing : undefined;
    const clash = admission.clash(config, replaces);
    if (clash) return this.refused(config, clash);
    // A re-registration (the owner repeats its PUT, e.g. after an agent restart) changes nothing.
    if (replaces && JSON.stringify(replaces.config) === JSON.stringify(config)) return { status: 200, instance: replaces, created: false };

    const result = await admission.admit({ config, source: 'api', replaces });
    if (!result.admitted) return this.refused(config, result.refusal);
    this.log.info({ instance: config.id, address: config.address, interface: config.interface, runtime: result.instance.runtime.kind }, replaces ? 'registration replaced' : 'instance registered');
    return { status: replaces ? 200 : 201, instance: result.instance, created: !replaces };
  }

  private refused(config: InstanceConfig, refusal: AdmissionRefusal): RegisterResult {
    switch (refusal.kind) {
      case 'id-taken':
        return { status: 409, error: `instance id ${JSON.stringify(config.id)} is taken by a ${refusal.holder.source === 'nomad' ? 'Nomad allocation' : 'configured instance'}` };
      case 'key-taken':
        return { status: 409, error: refusal.message };
      case 'runtime':
        return { status: 422, error: `runtime: ${refusal.reason}` };
      case 'attach':
        return { status: 422, error: `attaching to ${config.interface} failed: ${messageOf(refusal.error)}` };
      case 'withdrawn':
        return { status: 409, error: `the registration of ${JSON.stringify(config.id)} was withdrawn` };
    }
  }

  private async doUnregister(id: string, reason: string): Promise<UnregisterResult> {
    const instance = this.options.detector.get(id);
    if (!instance) return { status: 404, error: `no instance ${JSON.stringify(id)}` };
    if (instance.source !== 'api') return { status: 409, error: `instance ${JSON.stringify(id)} is ${instance.source === 'nomad' ? 'discovered from Nomad' : 'configured'}, not registered through the API` };
    await this.options.admission.retire(instance, { wake: true });
    this.log.info({ instance: id, reason }, 'instance no longer managed');
    return { status: 200, instance };
  }
}
