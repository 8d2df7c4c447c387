import Consul from 'consul';
import { z } from 'zod';
import type { ConsulConfig } from '../config/schema.js';
import { messageOf, upstreamErrorClass } from '../shared/errors.js';
import { httpUrl, tlsClientAgent } from '../shared/upstream-http.js';
import { summarizeIssues } from '../shared/zod-issues.js';
import type { UpstreamErrorCode } from '../shared/error-codes.js';

/*
 * The few Consul agent endpoints doze uses, through the npm `consul` client
 * (2.x, promise API), with every answer validated here:
 *   GET /v1/agent/self, GET /v1/agent/checks, GET /v1/agent/services,
 *   PUT /v1/agent/service/register, PUT /v1/agent/service/deregister/:id.
 * Consul's JSON is PascalCase. doze never writes a check Nomad owns (a
 * script check, a TTL check in Consul, is Nomad's to heartbeat: see
 * consul-link.ts); its shapes are held to Consul's docs in
 * test/fixtures/consul/.
 */

/** E_CONSUL_UNREACHABLE, E_CONSUL_HTTP, E_CONSUL_RESPONSE: their meanings are in shared/error-codes.ts. */
export type ConsulErrorCode = UpstreamErrorCode<'E_CONSUL_'>;

export class ConsulError extends upstreamErrorClass<ConsulErrorCode>('ConsulError') {}

const checkSchema = z.looseObject({
  CheckID: z.string().min(1),
  Name: z.string().optional(),
  /** passing | warning | critical (maintenance on node checks). */
  Status: z.string(),
  ServiceID: z.string().nullish(),
  ServiceName: z.string().nullish(),
  /** "ttl", "http", "tcp", "grpc", "script", … (empty on old agents). */
  Type: z.string().nullish(),
  Output: z.string().nullish(),
});
export const checksSchema = z.record(z.string(), checkSchema);
const servicesSchema = z.record(
  z.string(),
  z.looseObject({ ID: z.string(), Service: z.string(), Port: z.number().int().optional(), Address: z.string().optional(), Meta: z.record(z.string(), z.string()).nullish() }),
);

export type ConsulCheck = z.infer<typeof checkSchema>;
export type ConsulService = z.infer<(typeof servicesSchema)['valueType']>;

export interface ServiceRegistration {
  id: string;
  name: string;
  address?: string;
  port?: number;
  tags?: string[];
  meta?: Record<string, string>;
  check?: { name: string; http: string; interval: string; timeout: string; deregistercriticalserviceafter?: string };
}

interface PapiLikeError {
  isResponse?: boolean;
  statusCode?: number;
  message?: string;
}

export class ConsulAgentClient {
  readonly address: string;
  private readonly consul: Consul;

  constructor(config: Pick<ConsulConfig, 'address' | 'token' | 'tls'>, timeoutMs = 5000) {
    const url = httpUrl('Consul', config.address, 'http://127.0.0.1:8500');
    this.address = url.origin;
    const secure = url.protocol === 'https:';
    this.consul = new Consul({
      host: url.hostname,
      port: url.port ? Number(url.port) : secure ? 443 : 80,
      secure,
      defaults: { ...(config.token ? { token: config.token } : {}), timeout: timeoutMs } as { token?: string },
      ...(secure ? { agent: tlsClientAgent('Consul', config.tls) } : {}),
    });
  }

  /** `GET /v1/agent/checks`, as a list. */
  async checks(): Promise<ConsulCheck[]> {
    const raw = await this.call('GET /v1/agent/checks', () => this.consul.agent.check.list());
    return Object.values(this.validate('GET /v1/agent/checks', checksSchema, raw));
  }

  /** `GET /v1/agent/self` (needs agent:read): the agent's version (`Config.Version`), when it says one. */
  async self(): Promise<string | undefined> {
    const raw = (await this.call('GET /v1/agent/self', () => this.consul.agent.self())) as { Config?: { Version?: unknown } } | undefined;
    return typeof raw?.Config?.Version === 'string' ? raw.Config.Version : undefined;
  }

  /** `GET /v1/agent/services`: id → service. */
  async services(): Promise<Record<string, ConsulService>> {
    const raw = await this.call('GET /v1/agent/services', () => this.consul.agent.service.list());
    return this.validate('GET /v1/agent/services', servicesSchema, raw);
  }

  async register(service: ServiceRegistration): Promise<void> {
    await this.call('PUT /v1/agent/service/register', () => this.consul.agent.service.register(service));
  }

  async deregister(serviceId: string): Promise<void> {
    await this.call(`PUT /v1/agent/service/deregister/${serviceId}`, () => this.consul.agent.service.deregister(serviceId));
  }

  destroy(): void {
    this.consul.destroy();
  }

  private async call<T>(what: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      const e = error as PapiLikeError;
      if (e?.isResponse) {
        throw new ConsulError('E_CONSUL_HTTP', `Consul ${what} failed with HTTP ${e.statusCode}: ${e.message ?? ''}`, { cause: error, status: e.statusCode });
      }
      throw new ConsulError('E_CONSUL_UNREACHABLE', `Consul at ${this.address} is unreachable (${what}): ${messageOf(error)}`, { cause: error });
    }
  }

  private validate<T>(what: string, schema: z.ZodType<T>, raw: unknown): T {
    const parsed = schema.safeParse(raw);
    if (!parsed.success) throw new ConsulError('E_CONSUL_RESPONSE', `Consul ${what} answered with an unexpected body: ${summarizeIssues(parsed.error)}`, { cause: parsed.error });
    return parsed.data;
  }
}

