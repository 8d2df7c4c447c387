/**
 * Consul agent HTTP API DOUBLE (not Consul): the subset doze uses, on
 * 127.0.0.1, with Consul's JSON shapes (PascalCase) so the npm `consul`
 * client and doze's discovery can run against it unchanged.
 *
 * Served:
 *   GET  /v1/agent/services                  map ID → service (no blocking, as Consul)
 *   GET  /v1/agent/checks                    map CheckID → check (no blocking, as Consul)
 *   PUT  /v1/agent/service/register          Check / Checks; ?replace-existing-checks
 *   PUT  /v1/agent/service/deregister/:id
 *   PUT  /v1/agent/check/pass|warn|fail/:id  TTL checks; ?note=
 *   PUT  /v1/agent/check/update/:id          TTL checks; { Status, Output }
 *   GET  /v1/health/checks/:service          blocking (?index, ?wait)
 *   GET  /v1/health/service/:service         blocking; ?passing, ?tag
 * Faithful to Consul's documented behaviour: service ID defaults to Name;
 * check IDs default to `service:<id>` (`service:<id>:<n>` for several);
 * checks start `critical` unless `Status` says otherwise; TTL checks turn
 * critical with "TTL expired" when not renewed; HTTP/TCP/gRPC checks are run
 * by a CheckRunner when one is given (otherwise they keep their initial
 * status); blocking queries return at once for index 0 or an index below the
 * current one, else wait for a write or `wait` (default 5 m, max 10 m, plus up
 * to wait/16 jitter) and always carry `X-Consul-Index`; keys in registration
 * bodies are matched case-insensitively, snake_case included.
 *
 * ACLs (with `acl`): the token (X-Consul-Token, a bearer Authorization, or
 * ?token=) must have agent:read for GET /v1/agent/self and service:write on
 * the service to register, deregister or update its TTL checks (403
 * "Permission denied: token … lacks permission 'service:write' on …");
 * GET /v1/agent/services and /v1/agent/checks silently leave out services
 * (and their checks) the token cannot read, as Consul's agent endpoints
 * filter by ACL (agent/agent_endpoint.go). Rights are per service name or
 * "*"; node, key and intention rules are not modelled.
 *
 * Not covered: datacenters (`dc` is
 * ignored), namespaces/partitions/peers, the catalog, KV, sessions, Connect
 * and sidecars, `filter` expressions, hash-based blocking (`?hash=`), stale /
 * consistent modes, agent caching, maintenance mode,
 * DeregisterCriticalServiceAfter, script/docker/UDP/H2PING/alias/OS-service
 * checks (rejected with 400), and the agent→server split: there is one node,
 * so health endpoints see agent state at once (real Consul syncs it to the
 * servers by anti-entropy, and defers output-only changes up to
 * check_update_interval). The index is global: a blocking query wakes on any
 * write, which Consul's docs allow ("no guarantee of a change").
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { DozeError } from '../../../agent/shared/errors.js';
import type { CheckDefinition, CheckRunner, CheckStatus } from './check-runner.js';

export interface AgentApiDoubleOptions {
  node?: string;
  nodeId?: string;
  datacenter?: string;
  /** The node's address (used when a service has none). */
  nodeAddress?: string;
  /** Runs the HTTP, TCP and gRPC checks registered here. */
  runner?: CheckRunner;
  host?: string;
  port?: number;
  /** Tokens and their rights; unset: ACLs off (every token, or none, may do anything). */
  acl?: Record<string, ConsulRights>;
  /** The release `GET /v1/agent/self` reports (`Config.Version`); default 1.20.1. */
  version?: string;
}

export interface ConsulRights {
  agentRead?: boolean;
  /** Service names readable ("*": all). */
  serviceRead?: string[];
  /** Service names writable ("*": all); write implies read. */
  serviceWrite?: string[];
}

export interface AgentService {
  ID: string;
  Service: string;
  Tags: string[];
  Meta: Record<string, string>;
  Port: number;
  Address: string;
  Weights: { Passing: number; Warning: number };
  EnableTagOverride: boolean;
  Datacenter: string;
}

export interface HealthCheck {
  Node: string;
  CheckID: string;
  Name: string;
  Status: CheckStatus;
  Notes: string;
  Output: string;
  ServiceID: string;
  ServiceName: string;
  ServiceTags: string[];
  Type: string;
  Interval: string;
  Timeout: string;
  ExposedPort: number;
  Definition: Record<string, unknown>;
  CreateIndex: number;
  ModifyIndex: number;
}

interface ServiceRecord extends AgentService {
  CreateIndex: number;
  ModifyIndex: number;
}

interface CheckRecord extends HealthCheck {
  ttlMs?: number;
  ttlTimer?: NodeJS.Timeout;
  runByRunner: boolean;
}

interface ParsedCheck {
  record: CheckRecord;
  /** What the runner needs to probe it (HTTP, TCP, gRPC checks). */
  probe?: Omit<CheckDefinition, 'id' | 'initialStatus'>;
}

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

const MAX_WAIT_MS = 10 * 60_000;
const DEFAULT_WAIT_MS = 5 * 60_000;
const OUTPUT_MAX = 4096;
const UNSUPPORTED_CHECK_KEYS = ['args', 'script', 'dockercontainerid', 'udp', 'h2ping', 'aliasservice', 'aliasnode', 'osservice'];

export class AgentApiDouble {
  readonly node: string;
  readonly nodeId: string;
  readonly datacenter: string;
  readonly nodeAddress: string;
  private readonly server: http.Server;
  private readonly services = new Map<string, ServiceRecord>();
  private readonly checks = new Map<string, CheckRecord>();
  private readonly waiters = new Set<() => void>();
  private readonly unsubscribe: (() => void) | undefined;
  private currentIndex = 1;
  private address: AddressInfo | undefined;

  constructor(private readonly options: AgentApiDoubleOptions = {}) {
    this.node = options.node ?? 'doze-test-node';
    this.nodeId = options.nodeId ?? '00000000-0000-4000-8000-000000000001';
    this.datacenter = options.datacenter ?? 'dc1';
    this.nodeAddress = options.nodeAddress ?? '127.0.0.1';
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.unsubscribe = options.runner?.subscribe((u) => this.setStatus(u.checkId, u.status, u.output, true));
  }

  static async start(options: AgentApiDoubleOptions = {}): Promise<AgentApiDouble> {
    const api = new AgentApiDouble(options);
    await api.listen();
    return api;
  }

  async listen(): Promise<void> {
    const host = this.options.host ?? '127.0.0.1';
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', (error) => reject(new DozeError('E_DOUBLE', `agent API double cannot listen on ${host}: ${error.message}`, { cause: error })));
      this.server.listen(this.options.port ?? 0, host, () => resolve());
    });
    this.address = this.server.address() as AddressInfo;
  }

  get port(): number {
    if (!this.address) throw new DozeError('E_DOUBLE', 'agent API double is not listening');
    return this.address.port;
  }

  get url(): string {
    return `http://${this.options.host ?? '127.0.0.1'}:${this.port}`;
  }

  /** The current X-Consul-Index. */
  get index(): number {
    return this.currentIndex;
  }

  /** Direct view for assertions (same shape as GET /v1/agent/checks values). */
  check(checkId: string): HealthCheck | undefined {
    const record = this.checks.get(checkId);
    return record ? publicCheck(record) : undefined;
  }

  listChecks(): HealthCheck[] {
    return [...this.checks.values()].map(publicCheck);
  }

  listServices(): AgentService[] {
    return [...this.services.values()].map((s) => agentService(s));
  }

  async close(): Promise<void> {
    this.unsubscribe?.();
    for (const check of this.checks.values()) this.dropCheck(check);
    this.checks.clear();
    for (const wake of this.waiters) wake();
    this.waiters.clear();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  private bump(): void {
    this.currentIndex++;
    for (const wake of this.waiters) wake();
    this.waiters.clear();
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://double');
      const method = req.method ?? 'GET';
      const path = url.pathname;
      let match: RegExpExecArray | null;
      const rights = this.rightsOf(req, url);
      if (path === '/v1/agent/self') {
        allow(method, 'GET');
        if (rights && !rights.agentRead) throw denied(req, 'agent:read', this.node);
        // Config as Consul's agent/agent_endpoint.go Self writes it (Version, Revision, BuildDate, Server beside the names).
        const Config = { Datacenter: this.datacenter, PrimaryDatacenter: this.datacenter, NodeName: this.node, NodeID: this.nodeId, Revision: 'd0ub1e', Server: false, Version: this.options.version ?? '1.20.1', BuildDate: '2024-10-01T00:00:00Z' };
        return json(res, { Config, Member: { Name: this.node, Addr: this.nodeAddress, Status: 1 } });
      }
      if (path === '/v1/agent/services') {
        allow(method, 'GET');
        const visible = [...this.services.values()].filter((s) => mayRead(rights, s.Service));
        return json(res, Object.fromEntries(visible.map((s) => [s.ID, agentService(s)])));
      }
      if (path === '/v1/agent/checks') {
        allow(method, 'GET');
        const visible = [...this.checks.values()].filter((c) => mayRead(rights, c.ServiceName));
        return json(res, Object.fromEntries(visible.map((c) => [c.CheckID, publicCheck(c)])));
      }
      if (path === '/v1/agent/service/register') {
        allow(method, 'PUT');
        const body = await readJson(req);
        const name = normalized(body).name;
        if (rights && !mayWrite(rights, String(name ?? ''))) throw denied(req, 'service:write', String(name ?? ''));
        this.register(body, url.searchParams.has('replace-existing-checks') && url.searchParams.get('replace-existing-checks') !== 'false');
        return empty(res);
      }
      if ((match = /^\/v1\/agent\/service\/deregister\/(.+)$/.exec(path))) {
        allow(method, 'PUT');
        const service = this.services.get(decodeURIComponent(match[1]!));
        if (rights && service && !mayWrite(rights, service.Service)) throw denied(req, 'service:write', service.Service);
        this.deregister(decodeURIComponent(match[1]!));
        return empty(res);
      }
      if ((match = /^\/v1\/agent\/check\/(pass|warn|fail|update)\/(.+)$/.exec(path)) && rights) {
        const check = this.checks.get(decodeURIComponent(match[2]!));
        if (check && !mayWrite(rights, check.ServiceName)) throw denied(req, 'service:write', check.ServiceName);
      }
      if ((match = /^\/v1\/agent\/check\/(pass|warn|fail)\/(.+)$/.exec(path))) {
        allow(method, 'PUT');
        const status = ({ pass: 'passing', warn: 'warning', fail: 'critical' } as const)[match[1] as 'pass' | 'warn' | 'fail'];
        this.updateTtl(decodeURIComponent(match[2]!), status, url.searchParams.get('note') ?? '');
        return empty(res);
      }
      if ((match = /^\/v1\/agent\/check\/update\/(.+)$/.exec(path))) {
        allow(method, 'PUT');
        const body = normalized(await readJson(req));
        const status = String(body.status ?? '');
        if (!isStatus(status)) throw new HttpError(400, `Invalid check status: "${status}"`);
        this.updateTtl(decodeURIComponent(match[1]!), status, String(body.output ?? ''));
        return empty(res);
      }
      if ((match = /^\/v1\/health\/checks\/(.+)$/.exec(path))) {
        allow(method, 'GET');
        const service = decodeURIComponent(match[1]!);
        await this.block(req, url);
        return json(res, this.serviceChecks(service).map(publicCheck), this.blockingHeaders());
      }
      if ((match = /^\/v1\/health\/service\/(.+)$/.exec(path))) {
        allow(method, 'GET');
        const service = decodeURIComponent(match[1]!);
        await this.block(req, url);
        return json(res, this.serviceEntries(service, url.searchParams), this.blockingHeaders());
      }
      throw new HttpError(404, '404 page not found');
    } catch (error) {
      const status = error instanceof HttpError ? error.status : 500;
      const message = error instanceof Error ? error.message : String(error);
      if (res.headersSent) return void res.destroy();
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(message);
    }
  }

  /** The request's token's rights; undefined with ACLs off. An unknown token has none. */
  private rightsOf(req: http.IncomingMessage, url: URL): ConsulRights | undefined {
    const acl = this.options.acl;
    if (!acl) return undefined;
    const bearer = /^Bearer (.+)$/i.exec(req.headers.authorization ?? '')?.[1];
    const token = (req.headers['x-consul-token'] as string | undefined) ?? bearer ?? url.searchParams.get('token') ?? '';
    return acl[token] ?? {};
  }

  /** Waits as a Consul blocking query would; returns at once when not blocking. */
  private async block(req: http.IncomingMessage, url: URL): Promise<void> {
    const index = Number(url.searchParams.get('index') ?? '0');
    if (!Number.isFinite(index) || index <= 0 || index < this.currentIndex) return;
    const waitText = url.searchParams.get('wait');
    const parsed = waitText === null ? DEFAULT_WAIT_MS : parseGoDuration(waitText);
    if (parsed === undefined) throw new HttpError(400, `Invalid wait time: "${waitText}"`);
    const wait = Math.min(parsed > 0 ? parsed : DEFAULT_WAIT_MS, MAX_WAIT_MS);
    const budget = wait + Math.random() * (wait / 16);
    const start = this.currentIndex;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        req.socket.off('close', done);
        resolve();
      };
      const timer = setTimeout(done, budget);
      this.waiters.add(done);
      req.socket.once('close', done);
      if (this.currentIndex !== start) done();
    });
  }

  private blockingHeaders(): Record<string, string> {
    return {
      'x-consul-index': String(this.currentIndex),
      'x-consul-knownleader': 'true',
      'x-consul-lastcontact': '0',
      'x-consul-effective-consistency': 'leader',
    };
  }

  private register(raw: unknown, replaceExistingChecks: boolean): void {
    const body = normalized(raw);
    const name = typeof body.name === 'string' ? body.name : '';
    if (name === '') throw new HttpError(400, 'Missing service name');
    const id = typeof body.id === 'string' && body.id !== '' ? body.id : name;
    const port = body.port === undefined ? 0 : Number(body.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new HttpError(400, `Invalid service port: ${String(body.port)}`);
    const definitions: unknown[] = Array.isArray(body.checks) ? body.checks : body.check ? [body.check] : [];
    // Validate everything before changing anything.
    const checks = definitions.map((definition, i) => this.parseCheck(normalized(definition), id, name, definitions.length === 1 ? undefined : i + 1));

    const previous = this.services.get(id);
    const index = this.currentIndex + 1;
    const weights = normalized(body.weights);
    const service: ServiceRecord = {
      ID: id,
      Service: name,
      Tags: stringArray(body.tags),
      Meta: stringMap(body.meta),
      Port: port,
      Address: typeof body.address === 'string' ? body.address : '',
      Weights: { Passing: Number(weights.passing ?? 1), Warning: Number(weights.warning ?? 1) },
      EnableTagOverride: body.enabletagoverride === true,
      Datacenter: this.datacenter,
      CreateIndex: previous?.CreateIndex ?? index,
      ModifyIndex: index,
    };
    this.services.set(id, service);
    const keep = new Set(checks.map((c) => c.record.CheckID));
    for (const check of [...this.checks.values()]) {
      if (check.ServiceID !== id) continue;
      if (keep.has(check.CheckID) || replaceExistingChecks) {
        this.dropCheck(check);
        this.checks.delete(check.CheckID);
      } else {
        check.ServiceTags = service.Tags;
      }
    }
    for (const check of checks) this.addCheck(check, index);
    this.bump();
  }

  private parseCheck(def: Record<string, unknown>, serviceId: string, serviceName: string, ordinal: number | undefined): ParsedCheck {
    const unsupported = UNSUPPORTED_CHECK_KEYS.find((k) => def[k] !== undefined && def[k] !== '' && def[k] !== null);
    if (unsupported) throw new HttpError(400, `Invalid check: ${unsupported} checks are not supported by the Consul double`);
    const kinds = (['http', 'tcp', 'grpc', 'ttl'] as const).filter((k) => typeof def[k] === 'string' && def[k] !== '');
    if (kinds.length !== 1) throw new HttpError(400, 'Invalid check: must set exactly one of HTTP, TCP, GRPC or TTL');
    const kind = kinds[0]!;
    const target = String(def[kind]);
    const intervalText = durationText(def.interval);
    const timeoutText = durationText(def.timeout);
    const status = def.status === undefined || def.status === '' ? 'critical' : String(def.status);
    if (!isStatus(status)) throw new HttpError(400, `Invalid check status: "${status}"`);
    const checkId = optionalString(def.checkid) ?? optionalString(def.id) ?? (ordinal === undefined ? `service:${serviceId}` : `service:${serviceId}:${ordinal}`);
    const definition: Record<string, unknown> = { Interval: intervalText, Timeout: timeoutText };
    if (kind === 'http') Object.assign(definition, { HTTP: target, Method: def.method ?? '', Header: def.header ?? {}, Body: def.body ?? '' });
    if (def.tlsskipverify === true) definition.TLSSkipVerify = true;
    if (typeof def.tlsservername === 'string' && def.tlsservername) definition.TLSServerName = def.tlsservername;
    if (def.grpcusetls === true) definition.GRPCUseTLS = true;
    else if (kind !== 'ttl') definition[kind.toUpperCase()] = target;
    const record: CheckRecord = {
      Node: this.node,
      CheckID: checkId,
      Name: optionalString(def.name) ?? `Service '${serviceName}' check`,
      Status: status,
      Notes: typeof def.notes === 'string' ? def.notes : '',
      Output: '',
      ServiceID: serviceId,
      ServiceName: serviceName,
      ServiceTags: [],
      Type: kind,
      Interval: intervalText,
      Timeout: timeoutText,
      ExposedPort: 0,
      Definition: definition,
      CreateIndex: 0,
      ModifyIndex: 0,
      runByRunner: false,
    };
    if (kind === 'ttl') {
      record.ttlMs = parseGoDuration(target);
      if (!record.ttlMs || record.ttlMs <= 0) throw new HttpError(400, 'Invalid check: TTL must be > 0 for TTL checks');
      return { record };
    }
    const intervalMs = parseGoDuration(intervalText);
    if (!intervalMs || intervalMs <= 0) throw new HttpError(400, `Invalid check: Interval must be > 0 for ${kind.toUpperCase()} checks`);
    const timeoutMs = timeoutText === '' ? undefined : parseGoDuration(timeoutText);
    if (timeoutMs !== undefined && timeoutMs < 0) throw new HttpError(400, `Invalid check: Timeout "${timeoutText}"`);
    if (timeoutText !== '' && timeoutMs === undefined) throw new HttpError(400, `Invalid check: Timeout "${timeoutText}"`);
    return {
      record,
      probe: {
        kind,
        target,
        intervalMs,
        timeoutMs,
        method: optionalString(def.method),
        header: headerMap(def.header),
        body: optionalString(def.body),
        disableRedirects: def.disableredirects === true,
        outputMaxSize: optionalNumber(def.outputmaxsize),
        successBeforePassing: optionalNumber(def.successbeforepassing),
        failuresBeforeCritical: optionalNumber(def.failuresbeforecritical),
        failuresBeforeWarning: optionalNumber(def.failuresbeforewarning),
        tlsSkipVerify: def.tlsskipverify === true,
        tlsServerName: optionalString(def.tlsservername),
        grpcUseTls: def.grpcusetls === true,
      },
    };
  }

  private addCheck({ record: parsed, probe }: ParsedCheck, index: number): void {
    const existing = this.checks.get(parsed.CheckID);
    if (existing) this.dropCheck(existing);
    const record: CheckRecord = { ...parsed, ServiceTags: this.services.get(parsed.ServiceID)?.Tags ?? [], CreateIndex: index, ModifyIndex: index };
    this.checks.set(record.CheckID, record);
    if (record.ttlMs !== undefined) {
      this.armTtl(record);
    } else if (probe && this.options.runner) {
      record.runByRunner = true;
      this.options.runner.add({ ...probe, id: record.CheckID, initialStatus: record.Status });
    }
  }

  private deregister(id: string): void {
    if (!this.services.has(id)) throw new HttpError(404, `Unknown service ID "${id}". Ensure that the service ID is passed, not the service name.`);
    this.services.delete(id);
    for (const check of [...this.checks.values()]) {
      if (check.ServiceID !== id) continue;
      this.dropCheck(check);
      this.checks.delete(check.CheckID);
    }
    this.bump();
  }

  private updateTtl(checkId: string, status: CheckStatus, output: string): void {
    const check = this.checks.get(checkId);
    if (!check) throw new HttpError(404, `Unknown check ID "${checkId}". Ensure that the check ID is passed, not the check name.`);
    if (check.ttlMs === undefined) throw new HttpError(500, `CheckID "${checkId}" does not have associated TTL`);
    const total = Buffer.byteLength(output);
    const kept = total > OUTPUT_MAX ? `${Buffer.from(output).subarray(0, OUTPUT_MAX).toString('utf8')} ... (captured ${OUTPUT_MAX} of ${total} bytes)` : output;
    this.armTtl(check);
    this.setStatus(checkId, status, kept, false);
  }

  /** (Re)starts a TTL check's expiry: critical with "TTL expired" unless renewed in time. */
  private armTtl(check: CheckRecord): void {
    clearTimeout(check.ttlTimer);
    if (check.ttlMs === undefined) return;
    check.ttlTimer = setTimeout(() => {
      if (this.checks.get(check.CheckID) !== check) return;
      const last = check.Output;
      this.setStatus(check.CheckID, 'critical', last === '' ? 'TTL expired' : `TTL expired (last output before timeout follows): ${last}`, false);
    }, check.ttlMs);
    check.ttlTimer.unref();
  }

  private setStatus(checkId: string, status: CheckStatus, output: string, fromRunner: boolean): void {
    const check = this.checks.get(checkId);
    if (!check || (fromRunner && !check.runByRunner)) return;
    if (check.Status === status && check.Output === output) return;
    check.Status = status;
    check.Output = output;
    check.ModifyIndex = this.currentIndex + 1;
    this.bump();
  }

  private dropCheck(check: CheckRecord): void {
    clearTimeout(check.ttlTimer);
    if (check.runByRunner) this.options.runner?.remove(check.CheckID);
  }

  private serviceChecks(serviceName: string): CheckRecord[] {
    return [...this.checks.values()].filter((c) => c.ServiceName === serviceName);
  }

  private serviceEntries(serviceName: string, query: URLSearchParams): unknown[] {
    const passingOnly = query.has('passing') && !['false', '0'].includes(query.get('passing') ?? '');
    const tags = query.getAll('tag');
    const nodeCheck: HealthCheck = {
      Node: this.node, CheckID: 'serfHealth', Name: 'Serf Health Status', Status: 'passing', Notes: '',
      Output: 'Agent alive and reachable', ServiceID: '', ServiceName: '', ServiceTags: [], Type: '', Interval: '',
      Timeout: '', ExposedPort: 0, Definition: {}, CreateIndex: 1, ModifyIndex: 1,
    };
    const node = {
      ID: this.nodeId, Node: this.node, Address: this.nodeAddress, Datacenter: this.datacenter,
      TaggedAddresses: { lan: this.nodeAddress, wan: this.nodeAddress }, Meta: {}, CreateIndex: 1, ModifyIndex: 1,
    };
    return [...this.services.values()]
      .filter((s) => s.Service === serviceName && tags.every((tag) => s.Tags.includes(tag)))
      .map((s) => ({
        Node: node,
        Service: {
          ID: s.ID, Service: s.Service, Tags: s.Tags, Address: s.Address, Meta: s.Meta, Port: s.Port, Weights: s.Weights,
          EnableTagOverride: s.EnableTagOverride, CreateIndex: s.CreateIndex, ModifyIndex: s.ModifyIndex,
        },
        Checks: [nodeCheck, ...[...this.checks.values()].filter((c) => c.ServiceID === s.ID).map(publicCheck)],
      }))
      .filter((entry) => !passingOnly || entry.Checks.every((c) => c.Status === 'passing'));
  }
}

function publicCheck(c: HealthCheck): HealthCheck {
  return {
    Node: c.Node, CheckID: c.CheckID, Name: c.Name, Status: c.Status, Notes: c.Notes, Output: c.Output,
    ServiceID: c.ServiceID, ServiceName: c.ServiceName, ServiceTags: [...c.ServiceTags], Type: c.Type,
    Interval: c.Interval, Timeout: c.Timeout, ExposedPort: c.ExposedPort, Definition: { ...c.Definition },
    CreateIndex: c.CreateIndex, ModifyIndex: c.ModifyIndex,
  };
}

function agentService(s: ServiceRecord): AgentService {
  return {
    ID: s.ID, Service: s.Service, Tags: [...s.Tags], Meta: { ...s.Meta }, Port: s.Port, Address: s.Address,
    Weights: { ...s.Weights }, EnableTagOverride: s.EnableTagOverride, Datacenter: s.Datacenter,
  };
}

function isStatus(value: string): value is CheckStatus {
  return value === 'passing' || value === 'warning' || value === 'critical';
}

function allow(method: string, expected: string): void {
  if (method !== expected) throw new HttpError(405, `method ${method} not allowed`);
}

function json(res: http.ServerResponse, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function empty(res: http.ServerResponse): void {
  res.writeHead(200, { 'content-length': 0 });
  res.end();
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > 1 << 20) throw new HttpError(413, 'Request body too large');
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new HttpError(400, `Request decode failed: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** Consul's decoder is lenient about key case and accepts snake_case: match keys lowercased without underscores. */
function normalized(value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return {};
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k.toLowerCase().replaceAll('_', ''), v]));
}

function stringArray(value: unknown): string[] {
  return Array.isArray(value) ? value.map(String) : [];
}

function stringMap(value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null) return {};
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, String(v)]));
}

function headerMap(value: unknown): Record<string, string[]> | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, Array.isArray(v) ? v.map(String) : [String(v)]]));
}

function optionalString(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function optionalNumber(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/** A registration's duration field as Consul shows it: strings as given, nanosecond numbers as Go prints them. */
function durationText(value: unknown): string {
  if (value === undefined || value === null || value === '') return '';
  if (typeof value !== 'number') return String(value);
  const ms = value / 1e6;
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

const GO_UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, 'μs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Go's time.ParseDuration ("10s", "1m30s", "250ms", "0"; "10" has no unit
 * and is invalid) in milliseconds; a JSON number is nanoseconds, as Consul
 * decodes it.
 */
export function parseGoDuration(text: string | number): number | undefined {
  if (typeof text === 'number') return text / 1e6;
  const trimmed = text.trim();
  if (trimmed === '0') return 0;
  const piece = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/gy;
  let total = 0;
  let at = 0;
  for (let m = piece.exec(trimmed); m; m = piece.exec(trimmed)) {
    total += Number(m[1]) * GO_UNITS[m[2]!]!;
    at = piece.lastIndex;
  }
  return at === trimmed.length && at > 0 ? total : undefined;
}

function listed(list: string[] | undefined, name: string): boolean {
  return (list ?? []).some((entry) => entry === '*' || entry === name);
}

function mayRead(rights: ConsulRights | undefined, service: string): boolean {
  return !rights || listed(rights.serviceRead, service) || listed(rights.serviceWrite, service);
}

function mayWrite(rights: ConsulRights | undefined, service: string): boolean {
  return !rights || listed(rights.serviceWrite, service);
}

/** Consul's ACL refusal (acl/errors.go PermissionDeniedByACL wording). */
function denied(req: http.IncomingMessage, permission: string, resource: string): HttpError {
  // A made-up accessor id: the double never echoes a secret.
  const accessor = req.headers['x-consul-token'] ? '8e2a4b1c-0000-4000-8000-000000000000' : '00000000-0000-0000-0000-000000000002';
  return new HttpError(403, `Permission denied: token with AccessorID '${accessor}' lacks permission '${permission}' on "${resource}"`);
}
