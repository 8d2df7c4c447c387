import axios, { type AxiosInstance, type AxiosResponse } from 'axios';
import { z } from 'zod';
import { messageOf, upstreamErrorClass } from '../shared/errors.js';
import { httpUrl, tlsClientAgent, type TlsFiles } from '../shared/upstream-http.js';
import { summarizeIssues } from '../shared/zod-issues.js';
import type { UpstreamErrorCode } from '../shared/error-codes.js';
import {
  agentSelfSchema,
  allocationChecksSchema,
  allocationSchema,
  allocationStubSchema,
  deploymentSchema,
  jobRegisterResponseSchema,
  jobSchema,
  type NomadAgentSelf,
  type NomadAllocation,
  type NomadAllocationChecks,
  type NomadAllocationStub,
  type NomadDeployment,
  type NomadJob,
  type NomadJobRegisterResponse,
} from './nomad-schemas.js';

/*
 * A thin typed client for the few Nomad HTTP endpoints doze uses (no
 * maintained Nomad client exists on npm). Every response body is validated
 * before it is returned; every failure is a NomadError with a stable code.
 */

/** TLS files as NOMAD_CACERT / NOMAD_CLIENT_CERT / NOMAD_CLIENT_KEY / NOMAD_TLS_SERVER_NAME name them. */
export type NomadTlsOptions = TlsFiles;

export interface NomadClientOptions {
  /** e.g. "http://127.0.0.1:4646" (NOMAD_ADDR). */
  address: string;
  token?: string;
  namespace?: string;
  region?: string;
  tls?: NomadTlsOptions;
  /** Deadline of a non-blocking request. */
  timeoutMs?: number;
}

export interface BlockingQuery {
  /** Return only once Nomad's index for the resource is past this (X-Nomad-Index of the previous answer). */
  index?: number;
  /** How long Nomad may hold the request (Nomad's default 5 min, maximum 10 min). */
  waitMs?: number;
  signal?: AbortSignal;
}

export interface Indexed<T> {
  /** X-Nomad-Index: pass it back as `index` to block until something changes. */
  index: number;
  value: T;
}

/** E_NOMAD_UNREACHABLE, E_NOMAD_HTTP, E_NOMAD_RESPONSE, E_NOMAD_STREAM_REFUSED: their meanings are in shared/error-codes.ts. */
export type NomadErrorCode = UpstreamErrorCode<'E_NOMAD_'>;

export class NomadError extends upstreamErrorClass<NomadErrorCode>('NomadError') {}

/** Nomad holds a blocking query up to wait + wait/16 (jitter); allow that plus a margin. */
function blockingTimeoutMs(waitMs: number): number {
  return waitMs + Math.ceil(waitMs / 16) + 5000;
}

export class NomadClient {
  readonly address: string;
  readonly namespace: string | undefined;
  readonly region: string | undefined;
  /** Shared with the event stream, which needs the same headers and TLS. */
  readonly http: AxiosInstance;
  private readonly timeoutMs: number;

  constructor(options: NomadClientOptions) {
    const url = httpUrl('Nomad', options.address, 'http://127.0.0.1:4646');
    this.address = url.origin;
    this.namespace = options.namespace;
    this.region = options.region;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (options.token) headers['X-Nomad-Token'] = options.token;
    this.http = axios.create({
      baseURL: this.address,
      headers,
      httpsAgent: url.protocol === 'https:' ? tlsClientAgent('Nomad', options.tls) : undefined,
      // Status and JSON are judged here, so failures carry Nomad's own message.
      validateStatus: () => true,
      responseType: 'text',
      transformResponse: [(data: unknown) => data],
      maxRedirects: 0,
      proxy: false,
    });
  }

  /** Query parameters every request carries: namespace and region, unless overridden. */
  params(extra: Record<string, string | number | undefined> = {}): Record<string, string> {
    const out: Record<string, string> = {};
    const all = { namespace: this.namespace, region: this.region, ...extra };
    for (const [key, value] of Object.entries(all)) if (value !== undefined && value !== '') out[key] = String(value);
    return out;
  }

  /** `GET /v1/node/:id/allocations`: every allocation placed on one client node (with its job). */
  nodeAllocations(nodeId: string, query: BlockingQuery = {}): Promise<Indexed<NomadAllocation[]>> {
    return this.read(`/v1/node/${encodeURIComponent(nodeId)}/allocations`, z.array(allocationSchema), query);
  }

  /** `GET /v1/allocation/:id`: one allocation, with its job. */
  allocation(allocId: string, query: BlockingQuery = {}): Promise<Indexed<NomadAllocation>> {
    return this.read(`/v1/allocation/${encodeURIComponent(allocId)}`, allocationSchema, query);
  }

  /** `GET /v1/job/:id/allocations`: every allocation of one job (list stubs), including stopped ones. */
  jobAllocations(jobId: string, query: BlockingQuery = {}): Promise<Indexed<NomadAllocationStub[]>> {
    return this.read(`/v1/job/${encodeURIComponent(jobId)}/allocations`, z.array(allocationStubSchema), query);
  }

  /**
   * `GET /v1/allocation/:id/checks`: the status of the allocation's
   * Nomad-provider checks (Nomad ≥ 1.4); Nomad's `null` (no such checks) is `{}` here.
   */
  async allocationChecks(allocId: string, options: { signal?: AbortSignal } = {}): Promise<NomadAllocationChecks> {
    const path = `/v1/allocation/${encodeURIComponent(allocId)}/checks`;
    const response = await this.request(`GET ${path}`, () => this.http.get<string>(path, { params: this.params(), timeout: this.timeoutMs, signal: options.signal }));
    return this.body(response, `GET ${path}`, allocationChecksSchema) ?? {};
  }

  /** `GET /v1/job/:id/deployment`: the job's latest deployment, or null. */
  latestDeployment(jobId: string, query: BlockingQuery = {}): Promise<Indexed<NomadDeployment | null>> {
    return this.read(`/v1/job/${encodeURIComponent(jobId)}/deployment`, deploymentSchema, query);
  }

  /**
   * `GET /v1/agent/self` of the agent at `address`: this client node's id
   * (`stats.client.node_id`, from Nomad's client Stats()). A server-only
   * agent has no `client` stats: that is an E_NOMAD_RESPONSE naming the fix.
   */
  async agentSelf(options: { signal?: AbortSignal } = {}): Promise<NomadAgentSelf> {
    const what = 'GET /v1/agent/self';
    const response = await this.request(what, () =>
      this.http.get<string>('/v1/agent/self', { params: this.params({ namespace: undefined }), timeout: this.timeoutMs, signal: options.signal }),
    );
    const self = this.body(response, what, agentSelfSchema);
    const nodeId = self.stats?.['client']?.['node_id'];
    if (!nodeId) {
      throw new NomadError('E_NOMAD_RESPONSE', `the Nomad agent at ${this.address} is not a client (${what} has no stats.client.node_id): point doze at the local client agent, or set nomad.nodeId`, { status: response.status });
    }
    return { nodeId, name: self.member?.Name, region: self.config?.Region ?? undefined, datacenter: self.config?.Datacenter ?? undefined };
  }

  /** `GET /v1/agent/self`'s `config.Version.Version` ("1.9.3"): the local agent's release, client or server. */
  async agentVersion(options: { signal?: AbortSignal } = {}): Promise<string | undefined> {
    const what = 'GET /v1/agent/self';
    const response = await this.request(what, () =>
      this.http.get<string>('/v1/agent/self', { params: this.params({ namespace: undefined }), timeout: this.timeoutMs, signal: options.signal }),
    );
    const version = this.body(response, what, agentSelfSchema).config?.Version;
    return (typeof version === 'string' ? version : version?.Version) ?? undefined;
  }

  /** `GET /v1/job/:id`. */
  job(jobId: string, query: BlockingQuery = {}): Promise<Indexed<NomadJob>> {
    return this.read(`/v1/job/${encodeURIComponent(jobId)}`, jobSchema, query);
  }

  /**
   * `POST /v1/jobs/parse`: Nomad's own HCL parser. The job comes back as
   * loose JSON: validating it is the caller's business (the job helper
   * reports problems by place, not as a schema dump). `variables`: HCL
   * variable values, as the content of a variables file (api/jobs.go
   * JobsParseRequest.Variables), for jobs whose variables have no default.
   */
  async parseJob(jobHcl: string, variables?: string): Promise<Record<string, unknown>> {
    const response = await this.send('POST', '/v1/jobs/parse', { JobHCL: jobHcl, ...(variables ? { Variables: variables } : {}), Canonicalize: true });
    return this.body(response, 'POST /v1/jobs/parse', z.record(z.string(), z.unknown()));
  }

  /** `POST /v1/jobs`: register (create or update) a job. */
  async registerJob(job: Record<string, unknown>): Promise<NomadJobRegisterResponse> {
    const response = await this.send('POST', '/v1/jobs', { Job: job });
    return this.body(response, 'POST /v1/jobs', jobRegisterResponseSchema);
  }

  /** `POST /v1/job/:id/scale`: set one group's count (scale mode). */
  async scaleGroup(jobId: string, group: string, count: number, message: string): Promise<NomadJobRegisterResponse> {
    const path = `/v1/job/${encodeURIComponent(jobId)}/scale`;
    const response = await this.send('POST', path, { Count: count, Target: { Group: group }, Message: message });
    return this.body(response, `POST ${path}`, jobRegisterResponseSchema);
  }

  private async read<T>(path: string, schema: z.ZodType<T>, query: BlockingQuery): Promise<Indexed<T>> {
    const blocking = query.index !== undefined && query.index > 0;
    const waitMs = query.waitMs ?? 300_000;
    const params = this.params(blocking ? { index: query.index, wait: `${waitMs}ms` } : {});
    const what = `GET ${path}`;
    const response = await this.request(what, () =>
      this.http.get<string>(path, { params, timeout: blocking ? blockingTimeoutMs(waitMs) : this.timeoutMs, signal: query.signal }),
    );
    const value = this.body(response, what, schema);
    const header = response.headers['x-nomad-index'];
    const index = Number(header);
    if (header === undefined || !Number.isSafeInteger(index) || index < 0) {
      throw new NomadError('E_NOMAD_RESPONSE', `Nomad ${what} answered without a valid X-Nomad-Index header (got ${JSON.stringify(header ?? null)})`);
    }
    return { index, value };
  }

  private send(method: 'POST', path: string, body: unknown): Promise<AxiosResponse<string>> {
    return this.request(`${method} ${path}`, () =>
      this.http.request<string>({ method, url: path, data: body, params: this.params(), timeout: this.timeoutMs, headers: { 'Content-Type': 'application/json' } }),
    );
  }

  private async request(what: string, call: () => Promise<AxiosResponse<string>>): Promise<AxiosResponse<string>> {
    try {
      return await call();
    } catch (error) {
      if (axios.isCancel(error)) throw new NomadError('E_NOMAD_UNREACHABLE', `Nomad ${what} was cancelled`, { cause: error });
      throw new NomadError('E_NOMAD_UNREACHABLE', `Nomad at ${this.address} is unreachable (${what}): ${messageOf(error)}`, { cause: error });
    }
  }

  /** Checks the status, parses JSON and validates it: the one place a Nomad answer becomes a typed value. */
  body<T>(response: AxiosResponse<string>, what: string, schema: z.ZodType<T>): T {
    const text = typeof response.data === 'string' ? response.data : '';
    if (response.status < 200 || response.status >= 300) {
      // Nomad's error bodies are plain text ("alloc not found", "Permission denied").
      const detail = text.trim().slice(0, 2000) || '(empty body)';
      const needs = response.status === 403 ? requiredCapability(what) : undefined;
      throw new NomadError('E_NOMAD_HTTP', `Nomad ${what} failed with HTTP ${response.status}: ${detail}${needs ? ` (the token needs ${needs})` : ''}`, { status: response.status });
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (error) {
      throw new NomadError('E_NOMAD_RESPONSE', `Nomad ${what} answered with a body that is not JSON: ${JSON.stringify(text.slice(0, 120))}`, { cause: error, status: response.status });
    }
    const parsed = schema.safeParse(raw);
    if (!parsed.success) {
      throw new NomadError('E_NOMAD_RESPONSE', `Nomad ${what} answered with an unexpected body: ${summarizeIssues(parsed.error)}`, { cause: parsed.error, status: response.status });
    }
    return parsed.data;
  }
}

/**
 * The ACL capability a call needs (Nomad's acl package and each endpoint's
 * check: command/agent/agent_endpoint.go, nomad/node_endpoint.go,
 * nomad/alloc_endpoint.go, nomad/job_endpoint.go, nomad/event_endpoint.go).
 */
export function requiredCapability(what: string): string | undefined {
  const [method, path = ''] = what.split(' ');
  if (path.startsWith('/v1/agent/')) return 'agent:read';
  if (path.startsWith('/v1/node/')) return 'node:read';
  if (path === '/v1/event/stream') return 'read-job in every namespace subscribed to';
  if (path === '/v1/jobs/parse') return 'parse-job (or submit-job) in the namespace';
  if (path === '/v1/jobs' && method !== 'GET') return 'submit-job in the job\'s namespace';
  if (/^\/v1\/job\/[^/]+\/scale$/.test(path) && method !== 'GET') return 'scale-job (or submit-job) in the job\'s namespace';
  if (path.startsWith('/v1/job') || path.startsWith('/v1/allocation')) return 'read-job in the namespace';
  return undefined;
}

