/** Jobs in Nomad's API JSON shape (as `nomad job inspect` prints them), for tests. */

type Meta = Record<string, string> | null;

export interface WebJobOptions {
  id?: string;
  namespace?: string;
  type?: string;
  jobMeta?: Meta;
  groupMeta?: Meta;
  taskMeta?: Meta;
  networkMode?: 'bridge' | 'host';
  /** Drop the service's check / port, or the whole service. */
  check?: boolean;
  port?: boolean;
  service?: boolean;
  scalingMin?: number;
}

/** One group "web" with task "app" and service "web" on port "http" (to 8080) with an HTTP check. */
export function webJob(options: WebJobOptions = {}): Record<string, unknown> {
  const service = {
    Name: 'web',
    PortLabel: options.port === false ? '' : 'http',
    Provider: 'consul',
    Checks: options.check === false ? null : [{ Name: 'alive', Type: 'http', Path: '/health', PortLabel: '', Interval: 10_000_000_000, Timeout: 2_000_000_000 }],
  };
  return {
    ID: options.id ?? 'web',
    Name: options.id ?? 'web',
    Namespace: options.namespace ?? 'default',
    Type: options.type ?? 'service',
    Datacenters: ['dc1'],
    Meta: options.jobMeta ?? null,
    TaskGroups: [
      {
        Name: 'web',
        Count: 1,
        Meta: options.groupMeta ?? null,
        Scaling: options.scalingMin === undefined ? null : { Min: options.scalingMin, Max: 3, Enabled: false },
        Networks: [{ Mode: options.networkMode ?? 'bridge', DynamicPorts: [{ Label: 'http', Value: 0, To: 8080, HostNetwork: 'default' }], ReservedPorts: null }],
        Services: options.service === false ? null : [service],
        Tasks: [
          {
            Name: 'app',
            Driver: 'docker',
            Config: { image: 'hashicorp/http-echo:1.0', ports: ['http'] },
            Meta: options.taskMeta ?? null,
            Resources: { CPU: 100, MemoryMB: 64 },
          },
        ],
      },
    ],
  };
}
