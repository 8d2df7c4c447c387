import http from 'node:http';
import { z } from 'zod';
import type { UpstreamErrorCode } from '../shared/error-codes.js';
import { messageOf, upstreamErrorClass } from '../shared/errors.js';
import { summarizeIssues } from '../shared/zod-issues.js';

/*
 * A small typed client for the three Docker Engine API calls doze makes, over
 * the engine's unix socket (no dependency: node:http speaks HTTP over a
 * socketPath). It only reads: doze never pauses, stops or changes a container
 * (docs/docker.md says why the freezer, not /pause, puts a task to sleep).
 * Every answer is schema-checked; every failure is a DockerError with a
 * stable code. API v1.41 (Docker 20.10) has all of it; the path carries no
 * version, so the engine answers with its own.
 */

/** Meanings in agent/shared/error-codes.ts. */
export type DockerErrorCode = UpstreamErrorCode<'E_DOCKER_'>;

export class DockerError extends upstreamErrorClass<DockerErrorCode>('DockerError') {}

/** GET /containers/json: one row (only the fields doze reads; the rest pass through). */
export const containerSummarySchema = z.looseObject({
  Id: z.string().min(1),
  Names: z.array(z.string()).nullish().transform((names) => names ?? []),
  Labels: z.record(z.string(), z.string()).nullish().transform((labels) => labels ?? {}),
  State: z.string(),
});

/** GET /containers/{id}/json. */
export const containerInspectSchema = z.looseObject({
  Id: z.string().min(1),
  Name: z.string(),
  State: z.looseObject({
    Status: z.string(),
    Running: z.boolean(),
    Paused: z.boolean(),
    Pid: z.number().int().nonnegative(),
  }),
  Config: z.looseObject({ Labels: z.record(z.string(), z.string()).nullish().transform((labels) => labels ?? {}) }),
  HostConfig: z.looseObject({ NetworkMode: z.string().optional() }),
  NetworkSettings: z.looseObject({
    SandboxKey: z.string().optional(),
    Ports: z.record(z.string(), z.array(z.looseObject({ HostIp: z.string(), HostPort: z.string() })).nullable()).nullish(),
    Networks: z.record(z.string(), z.looseObject({ IPAddress: z.string().optional() })).nullish(),
  }),
});

export type ContainerSummary = z.infer<typeof containerSummarySchema>;
export type ContainerInspect = z.infer<typeof containerInspectSchema>;

export interface DockerEngineOptions {
  /** The engine's unix socket (docker-socket.ts finds it). */
  socket: string;
  /** Deadline of each call. */
  timeoutMs?: number;
}

export class DockerEngine {
  readonly socket: string;
  private readonly timeoutMs: number;

  constructor(options: DockerEngineOptions) {
    this.socket = options.socket;
    this.timeoutMs = options.timeoutMs ?? 5000;
  }

  /** GET /_ping: the engine answers "OK". */
  async ping(signal?: AbortSignal): Promise<void> {
    await this.request('/_ping', z.string(), signal);
  }

  /** Containers (running or not) carrying every label given (`key` alone, or `key=value`). */
  async containersWithLabels(labels: string[], signal?: AbortSignal): Promise<ContainerSummary[]> {
    const filters = encodeURIComponent(JSON.stringify({ label: labels }));
    return this.request(`/containers/json?all=1&filters=${filters}`, z.array(containerSummarySchema), signal);
  }

  async inspect(idOrName: string, signal?: AbortSignal): Promise<ContainerInspect> {
    return this.request(`/containers/${encodeURIComponent(idOrName)}/json`, containerInspectSchema, signal);
  }

  private async request<T>(path: string, schema: z.ZodType<T>, signal?: AbortSignal): Promise<T> {
    const deadline = AbortSignal.timeout(this.timeoutMs);
    const abort = signal ? AbortSignal.any([signal, deadline]) : deadline;
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request({ socketPath: this.socket, path, method: 'GET', headers: { host: 'docker' }, signal: abort }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      req.on('error', (error) => {
        const why = deadline.aborted ? `no answer within ${this.timeoutMs} ms` : messageOf(error);
        reject(new DockerError('E_DOCKER_UNREACHABLE', `Docker engine at ${this.socket}: ${why}`, { cause: error }));
      });
      req.end();
    });
    if (status < 200 || status > 299) {
      let message = body.trim();
      try {
        message = String((JSON.parse(body) as { message?: unknown }).message ?? message);
      } catch {
        // not JSON: keep the text
      }
      throw new DockerError('E_DOCKER_STATUS', `Docker engine: GET ${path.split('?')[0]} answered ${status}: ${message}`, { status });
    }
    let value: unknown = body;
    if (!(schema instanceof z.ZodString)) {
      try {
        value = JSON.parse(body);
      } catch (error) {
        throw new DockerError('E_DOCKER_RESPONSE', `Docker engine: GET ${path.split('?')[0]} answered no JSON`, { cause: error, status });
      }
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) throw new DockerError('E_DOCKER_RESPONSE', `Docker engine: GET ${path.split('?')[0]}: ${summarizeIssues(parsed.error)}`, { status });
    return parsed.data;
  }
}
