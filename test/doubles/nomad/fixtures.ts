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

export interface DockerJobOptions extends WebJobOptions {
  /**
   * A Consul Connect group as the job endpoint's hooks leave it (what GET /v1/job/:id returns):
   * nomad/job_endpoint_hook_connect.go injects the sidecar task `connect-proxy-<service>` (docker,
   * Kind "connect-proxy:<service>", a prestart sidecar) and its dynamic port
   * `connect-proxy-<service>` (To = -1: the same port inside the namespace), and
   * nomad/job_endpoint_hook_expose_check.go gives an `expose = true` HTTP check a generated
   * dynamic port `svc_<service>_ck_<6 hex>` (To = -1) served by the sidecar.
   */
  connect?: boolean;
}

/** The expose check's generated port label in dockerJob({ connect: true }) (the hash is Nomad's; any 6 hex digits do here). */
export const EXPOSE_PORT_LABEL = 'svc_web_ck_3c3d0a';

/** webJob with its task as Nomad's docker driver takes it (image, ports), optionally a Connect group. */
export function dockerJob(options: DockerJobOptions = {}): Record<string, unknown> {
  const job = webJob(options);
  const group = (job.TaskGroups as Array<Record<string, any>>)[0]!;
  group.Tasks[0].Config = { image: 'dz-app:1', ports: ['http'] };
  if (!options.connect) return job;
  group.Networks[0].DynamicPorts.push(
    { Label: 'connect-proxy-web', Value: 0, To: -1, HostNetwork: 'default' },
    { Label: EXPOSE_PORT_LABEL, Value: 0, To: -1, HostNetwork: 'default' },
  );
  const service = group.Services[0];
  service.Connect = {
    Native: false,
    SidecarService: { Port: 'connect-proxy-web', Proxy: { Expose: { Paths: [{ Path: '/health', Protocol: 'http', LocalPathPort: 8080, ListenerPort: EXPOSE_PORT_LABEL }] } } },
  };
  service.Checks[0] = { ...service.Checks[0], Expose: true, PortLabel: EXPOSE_PORT_LABEL };
  group.Tasks.unshift({
    Name: 'connect-proxy-web',
    Driver: 'docker',
    Kind: 'connect-proxy:web',
    Lifecycle: { Hook: 'prestart', Sidecar: true },
    Config: { image: '${meta.connect.sidecar_image}', args: ['-c', '${NOMAD_SECRETS_DIR}/envoy_bootstrap.json', '-l', '${meta.connect.log_level}'] },
    Meta: null,
    Resources: { CPU: 250, MemoryMB: 128 },
  });
  return job;
}
