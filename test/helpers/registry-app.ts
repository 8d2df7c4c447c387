import type { ExecutionContext } from 'ava';
import type { AddressInfo } from 'node:net';
import type { InstanceConfig } from '../../agent/config/schema.js';
import { configSchema, instanceSchema } from '../../agent/config/schema.js';
import { Detector } from '../../agent/detector/detector.js';
import { ManagedInstance } from '../../agent/detector/managed-instance.js';
import { createLogger } from '../../agent/shared/log.js';
import { InstanceAdmission } from '../../agent/instances/admission.js';
import { InstanceRegistry } from '../../agent/instances/registry.js';
import { registrationRefusal, registrationRoots, type RegistrationRoots } from '../../agent/instances/registration-policy.js';
import { monotonicNs } from '../../agent/shared/clock.js';
import { createRuntime } from '../../agent/runtimes/create-runtime.js';
import type { Runtime } from '../../agent/runtimes/runtime.js';
import { Metrics } from '../../agent/status/metrics.js';
import { createStatusApp, listen } from '../../agent/status/server.js';
import { FakeTrafficSource } from './fake-traffic-source.js';

export interface RegistryApp {
  url: string;
  detector: Detector;
  registry: InstanceRegistry;
  /** Where the registry's instances (and any the test adds beside them) come and go. */
  admission: InstanceAdmission;
  source: FakeTrafficSource;
  /** Instance ids whose rules and listeners were released, in order. */
  released: string[];
  /** Adds a configured (source "static") instance. */
  addStatic(raw: Record<string, unknown>): Promise<ManagedInstance>;
}

/**
 * The status API with a real detector and registry over a fake traffic source
 * (no kernel objects, no root): the registration routes end to end.
 */
export async function startRegistryApp(
  t: ExecutionContext,
  options: {
    token?: string;
    createRuntime?: (config: InstanceConfig) => Runtime;
    /** registrations.enabled, off unless given (as in the agent): off, the routes answer 404. */
    registrations?: boolean;
    /** What registrations may name; by default the agent's defaults (Nomad's task cgroups, /run/doze). */
    roots?: RegistrationRoots;
  } = {},
): Promise<RegistryApp> {
  const log = createLogger('silent');
  const source = new FakeTrafficSource();
  const detector = new Detector(source, log);
  const released: string[] = [];
  const admission = new InstanceAdmission({ detector, log, release: async (id) => void released.push(id), createRuntime: options.createRuntime });
  const roots = options.roots ?? registrationRoots(configSchema.parse({}));
  const registry = new InstanceRegistry({ admission, detector, log, policy: (config) => registrationRefusal(config, roots) });
  const app = createStatusApp({ detector, metrics: new Metrics(detector), token: options.token, log, registry: options.registrations === true ? registry : undefined });
  const server = await listen(app, '127.0.0.1:0');
  detector.start();
  t.teardown(async () => {
    await detector.stop({ wakeAll: false });
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    detector,
    registry,
    admission,
    source,
    released,
    async addStatic(raw) {
      const config: InstanceConfig = instanceSchema.parse(raw);
      const instance = new ManagedInstance(config, createRuntime(config.runtime), monotonicNs());
      await detector.add(instance);
      return instance;
    },
  };
}
