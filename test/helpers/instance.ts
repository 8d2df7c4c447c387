import type { Teardown } from './teardown.js';
import { startApp, type AppOptions, type TestApp } from './app.js';
import { createFreezerCgroup, type TestCgroup } from './cgroup.js';
import { createNetns, type TestNetns } from './netns.js';

export interface TestInstance {
  ns: TestNetns;
  cgroup: TestCgroup;
  app: TestApp;
  /** Instance config for the agent, freezer runtime. */
  config(overrides?: Record<string, unknown>): Record<string, unknown>;
}

/** Namespace + veth + cgroup + app: one freezer-managed instance, all torn down with the test. */
export async function createInstance(t: Teardown, id = 'web', appOptions: AppOptions = {}): Promise<TestInstance> {
  const ns = await createNetns(t, { ipv6: appOptions.dualStack });
  const cgroup = await createFreezerCgroup(t);
  const app = await startApp(t, ns, cgroup, id, appOptions);
  return {
    ns,
    cgroup,
    app,
    config: (overrides = {}) => ({
      id,
      address: app.address,
      interface: ns.hostIf,
      idleTimeout: '300ms',
      runtime: { kind: 'freezer', cgroup: cgroup.name },
      ...overrides,
    }),
  };
}
