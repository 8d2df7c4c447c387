/**
 * A test double of the Nomad HTTP API subset doze uses, on 127.0.0.1 port 0.
 * It is not Nomad: it speaks Nomad's wire formats so the client, discovery
 * and the job helper can be tested without a Nomad binary (none can be
 * installed here). Shapes and rules follow Nomad's source and docs:
 *
 * - JSON fields are PascalCase; nil collections are null, as Go encodes them.
 *   Allocation shapes are held to Nomad's own samples, completed from its
 *   structs (test/fixtures/nomad/, test/discovery/contract-fixtures.test.ts).
 * - Reads carry X-Nomad-Index (+ X-Nomad-KnownLeader, X-Nomad-LastContact);
 *   blocking queries honour `index` and `wait` (default 5 min, max 10 min).
 *   Index rules: an allocation's ModifyIndex; a node's allocations the
 *   highest of theirs (the allocs table index when it has none); a job its
 *   ModifyIndex.
 * - `/v1/event/stream`: a `{}` heartbeat on connect and every `heartbeatMs`
 *   (Nomad: 30 s); frames `{"Index","Events"}`; `index=N` starts at the first
 *   buffered frame with Index >= N, or replays the newest when N is past it
 *   (nomad/stream/event_buffer.go StartAtClosest); a bounded buffer (Nomad's
 *   default 100). Allocation payloads have `Job` stripped (nomad/state/
 *   events.go). Topic and namespace filters apply; a frame left with no
 *   event is not sent. `namespace=*` covers the namespaces that existed when
 *   the stream connected (here: those of registered jobs), as Nomad resolves
 *   the wildcard once per subscription (nomad/event_endpoint.go). Every
 *   frame ends with a newline, as command/agent/event_endpoint.go writes it;
 *   `framing: "concatenated"` leaves the newlines out (a robustness test, not
 *   a Nomad behaviour). The answer is hijacked HTTP/1.1 without a length
 *   (`streamFraming`, Nomad ≥ 1.11.2) or chunked (older).
 * - `GET /v1/agent/self`: `{config, member, stats}` (lower-case keys, as
 *   Nomad's agentSelf struct), `stats.client.node_id` unless `agentNodeId`
 *   is null (a server-only agent).
 * - Errors are plain-text bodies with Nomad's status codes and wording
 *   ("Permission denied" 403, "alloc not found" 404, job validation 500).
 * - `POST /v1/jobs/parse` uses the job helper's offline parser
 *   (@cdktf/hcl2json + plugin/hcl-to-api-job.ts), not Nomad's HCL parser, and
 *   Canonicalize fills only a few defaults: tests through it check the HTTP
 *   exchange, not Nomad's HCL semantics.
 *
 * - `GET /v1/job/:id/allocations`: list stubs (no Job, no NetworkStatus),
 *   blocking on the highest ModifyIndex of the job's allocations.
 *   `GET /v1/allocation/:id/checks`: the Nomad-provider check results a test
 *   set (setChecks), `null` otherwise (the client's check store returns a nil
 *   map: client/serviceregistration/checks/checkstore/shim.go); 404 "Unknown
 *   allocation" for an allocation it does not know, and 404 "resource not
 *   found" for every allocation with `checksEndpoint: false` (Nomad < 1.4,
 *   whose alloc router has no such route: command/agent/alloc_endpoint.go).
 * - With `placeOnScale`, scaling a group up places the missing allocations on
 *   one node: pending, running after `runningAfterMs`, and (with
 *   `deployment`) DeploymentStatus.Healthy true after `healthyAfterMs`; named
 *   `checks` go from pending to success at the same time. A stand-in for the
 *   scheduler and the client, not a model of either. With `deployment`, the
 *   scale also starts a deployment (scheduler/reconciler), `running` until
 *   every placed allocation is healthy plus `minHealthyTimeMs`, then
 *   `successful`; `GET /v1/job/:id/deployment` reports the latest one (null
 *   before any). While one is active every scale is refused with 400 "job
 *   scaling blocked due to active deployment" (nomad/job_endpoint.go Scale).
 *
 * Not covered: scheduling (registering a job places nothing: tests add
 * allocations with addAllocation; only placeOnScale places any), evaluations
 * (EvalIDs are random), deployments beyond the above (startDeployment sets one
 * by hand), ACL policies beyond a list of capabilities per token (`acl`,
 * global rather than per namespace; a forbidden event stream is refused with
 * the early 200 of Nomad ≥ 1.11.2, or 403 with `streamRefusal: '403'`), multiple regions, blocking
 * jitter, gzip, the HCLv1 parser, TLS, and every endpoint not listed above.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

type Obj = Record<string, unknown>;

export interface NomadDoubleOptions {
  /** When set, every request must carry it as X-Nomad-Token (else 403). */
  token?: string;
  heartbeatMs?: number;
  eventBufferSize?: number;
  framing?: 'ndjson' | 'concatenated';
  /** Node id `GET /v1/agent/self` reports as `stats.client.node_id`; null: a server-only agent (no client stats). */
  agentNodeId?: string | null;
  /** The release `GET /v1/agent/self` reports (`config.Version.Version`); default 1.9.0. */
  version?: string;
  /** Scaling a group up places its missing allocations (see the header). */
  placeOnScale?: PlaceOnScale;
  /** false: Nomad < 1.4, no allocation checks route (404 "resource not found"). */
  checksEndpoint?: boolean;
  /**
   * ACL tokens and what each may do (see NomadCapability); a request with a
   * token not listed, or without one, is anonymous and may do nothing. Unset:
   * ACLs off (or the single `token`).
   */
  acl?: Record<string, NomadCapability[]>;
  /** How a forbidden event stream is refused: `early-200` (Nomad ≥ 1.11.2, the default) or `403` (older). */
  streamRefusal?: 'early-200' | '403';
  /** An accepted stream's framing: `hijacked` (Nomad ≥ 1.11.2: HTTP/1.1, no length, Connection: close; the default) or `chunked` (older). */
  streamFraming?: 'hijacked' | 'chunked';
}

/**
 * The ACL rights doze's calls need (nomad/acl: agent, node and namespace
 * capabilities); global here, not per namespace.
 */
export type NomadCapability = 'agent:read' | 'node:read' | 'read-job' | 'scale-job' | 'submit-job' | 'parse-job';

export interface PlaceOnScale {
  runningAfterMs?: number;
  /** The allocation is deployment-tracked: DeploymentStatus.Healthy turns true this long after it runs. */
  deployment?: boolean;
  healthyAfterMs?: number;
  /** Nomad-provider check ids; pending until healthy, then success. */
  checks?: string[];
  /** Readiness-mode check ids (`on_update = "ignore"`): failing throughout, which must not matter. */
  readinessChecks?: string[];
  /** The deployment stays running this long after the last placed allocation is healthy (Nomad's default 10 s). */
  minHealthyTimeMs?: number;
  nodeId?: string;
}

export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface AllocationSpec {
  /** Allocation id (a UUID in Nomad); generated when omitted. Tests that name kernel objects after it pick it first. */
  id?: string;
  jobId: string;
  group: string;
  namespace?: string;
  nodeId?: string;
  clientStatus?: string;
  /** Bridge-mode allocation address (NetworkStatus.Address); generated when omitted. */
  bridgeAddress?: string;
  /** The node's address, for host ports. */
  hostIp?: string;
}

interface Frame {
  Index: number;
  Events: Obj[];
}

interface Stream {
  /** Writes to the stream's connection (hijacked or chunked). */
  write: (text: string) => void;
  socket: Socket;
  topics: Set<string>;
  namespace: string;
  /** For `namespace=*`: the namespaces that existed at connect (Nomad resolves the wildcard once). */
  namespaces: Set<string>;
  heartbeat: NodeJS.Timeout;
}

interface Injection {
  method: string;
  path: string;
  status: number;
  body: string;
  headers: Record<string, string>;
}

const MAX_WAIT_MS = 600_000;
/** nomad/structs/deployment.go Active. */
const ACTIVE_DEPLOYMENT = new Set(['running', 'paused', 'blocked', 'unblocking', 'initializing', 'pending']);

export class NomadDouble {
  readonly requests: RecordedRequest[] = [];
  readonly scaleRequests: { jobId: string; body: Obj }[] = [];
  /** Scales refused with 400 during an active deployment. */
  refusedScales = 0;
  private server!: http.Server;
  private readonly sockets = new Set<Socket>();
  private readonly streams = new Set<Stream>();
  private readonly changes = new EventEmitter();
  private readonly jobs = new Map<string, Obj>();
  private readonly allocs = new Map<string, Obj>();
  private readonly buffer: Frame[] = [];
  private readonly injections: Injection[] = [];
  /** Delay before every answer (deadline tests). */
  delayMs = 0;
  /** Requests received and still held back by delayMs: 0 once a late request has landed. */
  held = 0;
  private readonly checks = new Map<string, Obj>();
  /** Latest deployment per job key. */
  private readonly deployments = new Map<string, Obj>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private index = 10;
  private allocsTableIndex = 1;
  private nextBridgeIp = 2;
  private nextPort = 20000;
  url = '';

  private constructor(private readonly options: Required<Omit<NomadDoubleOptions, 'token' | 'agentNodeId' | 'placeOnScale'>> & { token?: string; agentNodeId?: string | null; placeOnScale?: PlaceOnScale }) {
    this.changes.setMaxListeners(0);
  }

  static async start(options: NomadDoubleOptions = {}): Promise<NomadDouble> {
    const double = new NomadDouble({ heartbeatMs: 30_000, eventBufferSize: 100, framing: 'ndjson', checksEndpoint: true, acl: {}, streamRefusal: 'early-200', streamFraming: 'hijacked', version: '1.9.0', ...options });
    double.server = http.createServer((req, res) => void double.handle(req, res));
    double.server.on('connection', (socket) => {
      double.sockets.add(socket);
      socket.on('close', () => double.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => double.server.listen(0, '127.0.0.1', resolve));
    double.url = `http://127.0.0.1:${(double.server.address() as AddressInfo).port}`;
    return double;
  }

  async close(): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    for (const stream of this.streams) clearInterval(stream.heartbeat);
    this.streams.clear();
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Current raft-like index. */
  get lastIndex(): number {
    return this.index;
  }

  get openStreams(): number {
    return this.streams.size;
  }

  /** Cuts every open event stream mid-flight, as a restarting server or a broken network would. */
  dropEventStreams(): void {
    for (const stream of this.streams) {
      clearInterval(stream.heartbeat);
      stream.socket.destroy();
    }
    this.streams.clear();
  }

  /**
   * A leader change or snapshot restore: Nomad starts a new event broker with
   * an empty buffer (nomad/stream/event_broker.go), and open streams end.
   */
  newBroker(): void {
    this.buffer.length = 0;
    this.dropEventStreams();
  }

  /** Grants or replaces a token's rights (with `acl`). */
  setToken(token: string, rights: NomadCapability[]): void {
    this.options.acl[token] = rights;
  }

  /** The next request matching method and path (`*suffix`: any path ending so) gets this answer instead. */
  injectOnce(method: string, path: string, answer: { status?: number; body: string; headers?: Record<string, string> }): void {
    this.injections.push({ method, path, status: answer.status ?? 200, body: answer.body, headers: answer.headers ?? {} });
  }

  /** Writes raw bytes to every open event stream (malformed-frame tests). */
  writeToStreams(text: string): void {
    for (const stream of this.streams) stream.write(text);
  }

  /** Stores a job as Nomad would after registering it (with a few canonical defaults). */
  registerJob(input: Obj): Obj {
    const index = ++this.index;
    const namespace = typeof input.Namespace === 'string' && input.Namespace ? input.Namespace : 'default';
    const key = `${namespace}/${String(input.ID)}`;
    const previous = this.jobs.get(key);
    const job: Obj = {
      Region: 'global',
      Type: 'service',
      Priority: 50,
      Datacenters: ['*'],
      Meta: null,
      Constraints: null,
      ...structuredClone(input),
      Namespace: namespace,
      Status: 'pending',
      Version: previous ? (previous.Version as number) + 1 : 0,
      CreateIndex: previous ? previous.CreateIndex : index,
      ModifyIndex: index,
      JobModifyIndex: index,
    };
    job.TaskGroups = (job.TaskGroups as Obj[]).map((g) => ({ Count: 1, Meta: null, Networks: null, Services: null, Constraints: null, ...g }));
    this.jobs.set(key, job);
    this.changes.emit('change');
    return job;
  }

  /**
   * `nomad job stop` without -purge: the job stays, as a new version with Stop set
   * (nomad/job_endpoint.go Deregister), and its allocations are told to stop.
   */
  stopJob(jobId: string, namespace = 'default'): void {
    const key = `${namespace}/${jobId}`;
    const job = this.jobs.get(key);
    if (!job) throw new Error(`double: no job ${jobId}`);
    const index = ++this.index;
    this.jobs.set(key, { ...job, Stop: true, Status: 'dead', Version: (job.Version as number) + 1, ModifyIndex: index, JobModifyIndex: index });
    for (const alloc of this.allocs.values()) if (alloc.JobID === jobId && alloc.Namespace === namespace && alloc.DesiredStatus === 'run') this.stopAllocation(alloc.ID as string);
    this.changes.emit('change');
  }

  getJob(jobId: string, namespace = 'default'): Obj | undefined {
    return this.jobs.get(`${namespace}/${jobId}`);
  }

  /** Places an allocation of a registered job's group on a node (PlanResult event). */
  addAllocation(spec: AllocationSpec): Obj {
    const namespace = spec.namespace ?? 'default';
    const job = this.jobs.get(`${namespace}/${spec.jobId}`);
    if (!job) throw new Error(`double: register job ${spec.jobId} first`);
    const group = (job.TaskGroups as Obj[]).find((g) => g.Name === spec.group);
    if (!group) throw new Error(`double: job ${spec.jobId} has no group ${spec.group}`);
    const hostIp = spec.hostIp ?? '10.0.0.5';
    const network = ((group.Networks as Obj[] | null) ?? [])[0];
    const mode = (network?.Mode as string) || 'host';
    const ports: Obj[] = [];
    const allocatedNetwork = network ? structuredClone(network) : undefined;
    for (const kind of ['DynamicPorts', 'ReservedPorts'] as const) {
      const list = (allocatedNetwork?.[kind] as Obj[] | null | undefined) ?? [];
      for (const port of list) {
        if (kind === 'DynamicPorts') port.Value = this.nextPort++;
        port.IgnoreCollision ??= false;
        ports.push({ Label: port.Label, Value: port.Value, To: port.To ?? 0, HostIP: hostIp, IgnoreCollision: false });
      }
    }
    if (allocatedNetwork) allocatedNetwork.IP = hostIp;
    const id = spec.id ?? randomUUID();
    if (this.allocs.has(id)) throw new Error(`double: allocation ${id} exists`);
    const index = ++this.index;
    const tasks = (group.Tasks as Obj[]).map((t) => String(t.Name));
    const alloc: Obj = {
      ID: id,
      Namespace: namespace,
      EvalID: randomUUID(),
      Name: `${spec.jobId}.${spec.group}[0]`,
      NodeID: spec.nodeId ?? 'node-1',
      NodeName: spec.nodeId ?? 'node-1',
      JobID: spec.jobId,
      Job: structuredClone(job),
      TaskGroup: spec.group,
      DesiredStatus: 'run',
      DesiredDescription: '',
      ClientStatus: spec.clientStatus ?? 'running',
      ClientDescription: '',
      TaskStates: Object.fromEntries(tasks.map((t) => [t, { State: 'running', Failed: false, Restarts: 0, Events: null }])),
      AllocatedResources: {
        Tasks: Object.fromEntries(tasks.map((t) => [t, { Cpu: { CpuShares: 100, ReservedCores: null }, Memory: { MemoryMB: 64, MemoryMaxMB: 0 }, Networks: null, Devices: null }])),
        // nomad/structs AllocatedResources.TaskLifecycles: nil for a task without a lifecycle block.
        TaskLifecycles: Object.fromEntries((group.Tasks as Obj[]).map((t) => [String(t.Name), (t.Lifecycle as Obj | undefined) ?? null])),
        Shared: { DiskMB: 300, Networks: allocatedNetwork ? [allocatedNetwork] : null, Ports: ports.length ? ports : null },
      },
      NetworkStatus: mode === 'bridge' ? { InterfaceName: 'eth0', Address: spec.bridgeAddress ?? `172.26.64.${this.nextBridgeIp++}`, AddressIPv6: '', DNS: null } : null,
      DeploymentID: '',
      CreateIndex: index,
      ModifyIndex: index,
      AllocModifyIndex: index,
      CreateTime: Date.now() * 1_000_000,
      ModifyTime: Date.now() * 1_000_000,
    };
    this.allocs.set(id, alloc);
    this.allocsTableIndex = index;
    this.publish(index, 'PlanResult', alloc);
    return structuredClone(alloc);
  }

  /** Changes fields of an allocation (AllocationUpdated event, or the given type). */
  updateAllocation(allocId: string, patch: Obj, type = 'AllocationUpdated'): Obj {
    const alloc = this.allocs.get(allocId);
    if (!alloc) throw new Error(`double: no allocation ${allocId}`);
    const index = ++this.index;
    Object.assign(alloc, patch, { ModifyIndex: index, ModifyTime: Date.now() * 1_000_000 });
    this.allocsTableIndex = index;
    this.publish(index, type, alloc);
    return structuredClone(alloc);
  }

  /**
   * The client records a task event (nomad/structs TaskEvent: Type, Time in Unix ns, DisplayMessage,
   * and the type's own fields, e.g. KillTimeout for Killing) and syncs the allocation to the servers:
   * an AllocationUpdated event whose TaskStates carry the task's last 10 events
   * (client/allocrunner/taskrunner/task_runner.go appendEvent keeps 10).
   */
  private lastEventNs = 0;
  taskEvent(allocId: string, task: string, type: string, fields: Obj = {}): Obj {
    const alloc = this.allocs.get(allocId);
    if (!alloc) throw new Error(`double: no allocation ${allocId}`);
    const states = structuredClone(alloc.TaskStates as Record<string, Obj>);
    const state = states[task];
    if (!state) throw new Error(`double: allocation ${allocId} has no task ${task}`);
    // Unix ns, increasing (a JS number keeps them to about 256 ns, so 1 µs apart at least).
    this.lastEventNs = Math.max(Date.now() * 1_000_000, this.lastEventNs + 1000);
    const event: Obj = { Type: type, Time: this.lastEventNs, DisplayMessage: '', Details: {}, FailsTask: false, ...fields };
    state.Events = [...((state.Events as Obj[] | null) ?? []), event].slice(-10);
    return this.updateAllocation(allocId, { TaskStates: states });
  }

  /**
   * Sets the results `GET /v1/allocation/:id/checks` reports (check id →
   * Status "success" | "failure" | "pending"); ids in `readiness` are in
   * readiness mode. Shape: nomad/structs/checks.go CheckQueryResult
   * (StatusCode and Task omitempty).
   */
  setChecks(allocId: string, statuses: Record<string, string>, readiness: string[] = []): void {
    const result = (id: string, status: string): Obj => {
      const out: Obj = { ID: id, Mode: readiness.includes(id) ? 'readiness' : 'healthiness', Status: status, Output: '', Timestamp: Math.floor(Date.now() / 1000), Group: 'web', Service: 'web', Check: id };
      if (status === 'success') out.StatusCode = 200;
      return out;
    };
    this.checks.set(allocId, Object.fromEntries(Object.entries(statuses).map(([id, status]) => [id, result(id, status)])));
  }

  /** Sets the job's latest deployment by hand (status "running" is active). */
  startDeployment(jobId: string, status = 'running', namespace = 'default'): Obj {
    const job = this.jobs.get(`${namespace}/${jobId}`);
    if (!job) throw new Error(`double: no job ${jobId}`);
    const index = ++this.index;
    const deployment: Obj = { ID: randomUUID(), Namespace: namespace, JobID: jobId, JobVersion: job.Version, JobModifyIndex: job.JobModifyIndex, JobCreateIndex: job.CreateIndex, IsMultiregion: false, TaskGroups: null, Status: status, StatusDescription: status === 'running' ? 'Deployment is running' : `Deployment ${status}`, CreateIndex: index, ModifyIndex: index };
    this.deployments.set(`${namespace}/${jobId}`, deployment);
    this.changes.emit('change');
    return structuredClone(deployment);
  }

  /** Ends the job's latest deployment (default "successful"). */
  endDeployment(jobId: string, status = 'successful', namespace = 'default'): void {
    const deployment = this.deployments.get(`${namespace}/${jobId}`);
    if (!deployment) return;
    Object.assign(deployment, { Status: status, StatusDescription: `Deployment completed ${status === 'successful' ? 'successfully' : status}`, ModifyIndex: ++this.index });
    this.changes.emit('change');
  }

  /** Allocations of a job (full objects), for assertions. */
  jobAllocationsOf(jobId: string, namespace = 'default'): Obj[] {
    return [...this.allocs.values()].filter((a) => a.JobID === jobId && a.Namespace === namespace).map((a) => structuredClone(a));
  }

  /** The server asks the allocation to stop, then its client reports it complete: two events, as in Nomad. */
  stopAllocation(allocId: string): void {
    this.updateAllocation(allocId, { DesiredStatus: 'stop', DesiredDescription: 'alloc is being stopped' }, 'AllocationUpdateDesiredStatus');
    this.updateAllocation(allocId, { ClientStatus: 'complete' });
  }

  private publish(index: number, type: string, alloc: Obj): void {
    const payload = structuredClone(alloc);
    payload.Job = null; // Nomad strips the job from allocation events.
    const frame: Frame = {
      Index: index,
      Events: [{ Topic: 'Allocation', Type: type, Key: alloc.ID, Namespace: alloc.Namespace, FilterKeys: [alloc.JobID, alloc.DeploymentID], Index: index, Payload: { Allocation: payload } }],
    };
    this.buffer.push(frame);
    if (this.buffer.length > this.options.eventBufferSize) this.buffer.shift();
    for (const stream of this.streams) this.sendFrame(stream, frame);
    this.changes.emit('change');
  }

  private sendFrame(stream: Stream, frame: Frame): void {
    const events = frame.Events.filter((e) => (stream.topics.has('*') || stream.topics.has(String(e.Topic))) && (stream.namespace === '*' ? stream.namespaces.has(String(e.Namespace)) : e.Namespace === stream.namespace));
    if (events.length === 0) return;
    stream.write(this.frameText({ Index: frame.Index, Events: events }));
  }

  private frameText(value: unknown): string {
    return JSON.stringify(value) + (this.options.framing === 'ndjson' ? '\n' : '');
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://double');
    let body = '';
    for await (const chunk of req) body += String(chunk);
    if (this.delayMs > 0) {
      this.held++;
      await new Promise((resolve) => setTimeout(resolve, this.delayMs));
      this.held--;
    }
    this.requests.push({ method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, headers: req.headers, body });

    const injected = this.injections.findIndex((i) => i.method === req.method && (i.path === url.pathname || (i.path.startsWith('*') && url.pathname.endsWith(i.path.slice(1)))));
    if (injected >= 0) {
      const [answer] = this.injections.splice(injected, 1);
      res.writeHead(answer!.status, { 'Content-Type': 'application/json', ...answer!.headers });
      res.end(answer!.body);
      return;
    }
    if (this.options.token !== undefined && req.headers['x-nomad-token'] !== this.options.token) return this.text(res, 403, 'Permission denied');

    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    const needs = requiredCapability(req.method ?? 'GET', parts);
    if (needs && !this.allowed(req, needs)) {
      if (url.pathname === '/v1/event/stream' && this.options.streamRefusal === 'early-200') return this.earlyRefusal(req);
      return this.text(res, 403, 'Permission denied');
    }
    const route = `${req.method} /${parts.slice(0, 2).join('/')}`;
    try {
      if (req.method === 'GET' && parts[0] === 'v1' && parts[1] === 'node' && parts[3] === 'allocations' && parts.length === 4) {
        return await this.blocking(req, res, url, () => this.nodeAllocations(parts[2]!));
      }
      if (req.method === 'GET' && parts[1] === 'allocation' && parts.length === 3) {
        return await this.blocking(req, res, url, () => {
          const alloc = this.allocs.get(parts[2]!);
          return alloc ? { index: alloc.ModifyIndex as number, body: alloc } : { status: 404, text: 'alloc not found' };
        });
      }
      if (req.method === 'GET' && parts[1] === 'job' && parts[3] === 'allocations' && parts.length === 4) {
        return await this.blocking(req, res, url, () => this.jobAllocationStubs(parts[2]!, url.searchParams.get('namespace') || 'default'));
      }
      if (req.method === 'GET' && parts[1] === 'allocation' && parts[3] === 'checks' && parts.length === 4) {
        if (!this.options.checksEndpoint) return this.text(res, 404, 'resource not found');
        if (!this.allocs.has(parts[2]!)) return this.text(res, 404, `Unknown allocation "${parts[2]!}"`);
        return this.json(res, this.checks.get(parts[2]!) ?? null);
      }
      if (req.method === 'GET' && parts[1] === 'job' && parts[3] === 'deployment' && parts.length === 4) {
        const key = `${url.searchParams.get('namespace') || 'default'}/${parts[2]}`;
        return await this.blocking(req, res, url, () => {
          const deployment = this.deployments.get(key);
          return { index: (deployment?.ModifyIndex as number | undefined) ?? 1, body: deployment ?? null };
        });
      }
      if (req.method === 'GET' && parts[1] === 'job' && parts.length === 3) {
        return await this.blocking(req, res, url, () => {
          const job = this.jobs.get(`${url.searchParams.get('namespace') || 'default'}/${parts[2]}`);
          return job ? { index: job.ModifyIndex as number, body: job } : { status: 404, text: 'job not found' };
        });
      }
      if (req.method === 'GET' && url.pathname === '/v1/event/stream') return this.eventStream(req, res, url);
      if (req.method === 'GET' && url.pathname === '/v1/agent/self') return this.json(res, this.agentSelf());
      if (req.method === 'POST' && url.pathname === '/v1/jobs/parse') return await this.parse(res, body);
      if ((req.method === 'POST' || req.method === 'PUT') && url.pathname === '/v1/jobs') return this.register(res, body, url);
      if ((req.method === 'POST' || req.method === 'PUT') && parts[1] === 'job' && parts[3] === 'scale' && parts.length === 4) return this.scale(res, parts[2]!, body, url);
      return this.text(res, 404, `Invalid URL (${route})`);
    } catch (error) {
      return this.text(res, 500, String(error));
    }
  }

  private allowed(req: http.IncomingMessage, needs: NomadCapability): boolean {
    const acl = this.options.acl;
    if (Object.keys(acl).length === 0) return true;
    const token = req.headers['x-nomad-token'];
    const rights = typeof token === 'string' ? acl[token] : undefined;
    // Scaling is allowed by scale-job or submit-job (nomad/job_endpoint.go Scale).
    return (rights?.includes(needs) ?? false) || (needs === 'scale-job' && (rights?.includes('submit-job') ?? false));
  }

  /**
   * Nomad ≥ 1.11.2: the handler hijacks the connection and writes `200 OK`
   * (HTTP/1.1 since 1.11.3, no length: `Connection: close`) before the RPC
   * checks the token; the 403 then has nowhere to go and the connection
   * closes with an empty body (command/agent/event_endpoint.go).
   */
  private earlyRefusal(req: http.IncomingMessage): void {
    req.socket.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nVary: Accept-Encoding\r\nConnection: close\r\n\r\n');
  }

  private text(res: http.ServerResponse, status: number, text: string): void {
    res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
    res.end(text);
  }

  private json(res: http.ServerResponse, value: unknown, index?: number): void {
    const headers: Record<string, string> = { 'Content-Type': 'application/json' };
    if (index !== undefined) Object.assign(headers, { 'X-Nomad-Index': String(index), 'X-Nomad-KnownLeader': 'true', 'X-Nomad-LastContact': '0' });
    res.writeHead(200, headers);
    res.end(JSON.stringify(value));
  }

  /** Nomad's agentSelf: lower-case top-level keys; a client agent's stats carry `client.node_id`. */
  private agentSelf(): Obj {
    const nodeId = this.options.agentNodeId === undefined ? 'node-1' : this.options.agentNodeId;
    const stats: Obj = { runtime: { arch: 'amd64', goroutines: '42' }, nomad: { leader: 'true' } };
    if (nodeId !== null) stats.client = { node_id: nodeId, known_servers: '127.0.0.1:4647', num_allocations: String(this.allocs.size), last_heartbeat: '1.2s', heartbeat_ttl: '15s' };
    return {
      // version.VersionInfo as Nomad's agent config carries it (command/agent/config.go Version), and the member's build tag.
      config: { Region: 'global', Datacenter: 'dc1', NodeName: 'double', Version: { Revision: 'd0ub1e', Version: this.options.version, VersionPrerelease: '', VersionMetadata: '' } },
      member: { Name: 'double.global', Addr: '127.0.0.1', Port: 4648, Status: 'alive', Tags: { build: `${this.options.version}:d0ub1e` } },
      stats,
    };
  }

  private nodeAllocations(nodeId: string): { index: number; body: unknown } {
    const list = [...this.allocs.values()].filter((a) => a.NodeID === nodeId);
    const index = list.length ? Math.max(...list.map((a) => a.ModifyIndex as number)) : this.allocsTableIndex;
    return { index, body: list };
  }

  /**
   * AllocListStub (nomad/structs/alloc.go): these fields only, so no Job,
   * NetworkStatus or DeploymentID, and AllocatedResources (omitempty) only
   * with ?resources=true, which doze never asks for.
   */
  private jobAllocationStubs(jobId: string, namespace: string): { index: number; body: unknown } {
    const list = [...this.allocs.values()].filter((a) => a.JobID === jobId && a.Namespace === namespace);
    const index = list.length ? Math.max(...list.map((a) => a.ModifyIndex as number)) : this.allocsTableIndex;
    const stubs = list.map((a) => {
      const c = structuredClone(a);
      return {
        ID: c.ID, EvalID: c.EvalID, Name: c.Name, Namespace: c.Namespace, NodeID: c.NodeID, NodeName: c.NodeName, JobID: c.JobID, JobType: 'service', JobVersion: 0,
        TaskGroup: c.TaskGroup, DesiredStatus: c.DesiredStatus, DesiredDescription: c.DesiredDescription, ClientStatus: c.ClientStatus, ClientDescription: c.ClientDescription,
        DesiredTransition: { Migrate: null, Reschedule: null, ForceReschedule: null, NoShutdownDelay: null }, TaskStates: c.TaskStates, DeploymentStatus: c.DeploymentStatus ?? null,
        FollowupEvalID: '', NextAllocation: '', RescheduleTracker: null, PreemptedAllocations: null, PreemptedByAllocation: '',
        CreateIndex: c.CreateIndex, ModifyIndex: c.ModifyIndex, CreateTime: c.CreateTime, ModifyTime: c.ModifyTime,
      };
    });
    return { index, body: stubs };
  }

  /** placeOnScale: pending now, running later, healthy later still. */
  private place(jobId: string, group: string, namespace: string, how: PlaceOnScale, deploymentId: string | undefined): string {
    const alloc = this.addAllocation({ jobId, group, namespace, nodeId: how.nodeId, clientStatus: 'pending' });
    const id = alloc.ID as string;
    const tasks = Object.keys(alloc.TaskStates as Obj);
    this.updateAllocation(id, { TaskStates: Object.fromEntries(tasks.map((t) => [t, { State: 'pending', Failed: false, Restarts: 0, Events: null }])), DeploymentID: deploymentId ?? '', DeploymentStatus: null });
    const readiness = how.readinessChecks ?? [];
    const checkStatuses = (status: string) => ({ ...Object.fromEntries((how.checks ?? []).map((c) => [c, status])), ...Object.fromEntries(readiness.map((c) => [c, 'failure'])) });
    if (how.checks?.length || readiness.length) this.setChecks(id, checkStatuses('pending'), readiness);
    const later = (ms: number, fn: () => void) => {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        if (this.allocs.get(id)?.DesiredStatus === 'run') fn();
      }, ms);
      this.timers.add(timer);
    };
    const runningAfter = how.runningAfterMs ?? 0;
    later(runningAfter, () => this.updateAllocation(id, { ClientStatus: 'running', TaskStates: Object.fromEntries(tasks.map((t) => [t, { State: 'running', Failed: false, Restarts: 0, Events: null }])) }));
    later(runningAfter + (how.healthyAfterMs ?? 0), () => {
      if (how.checks?.length || readiness.length) this.setChecks(id, checkStatuses('success'), readiness);
      if (how.deployment) this.updateAllocation(id, { DeploymentStatus: { Healthy: true, Timestamp: new Date().toISOString(), Canary: false, ModifyIndex: this.index + 1 } });
    });
    return id;
  }

  /** The deployment succeeds once every placed allocation is healthy, plus min_healthy_time. */
  private deploymentWatch(jobId: string, namespace: string, deploymentId: string, placed: string[], minHealthyMs: number): void {
    const check = () => {
      const current = this.deployments.get(`${namespace}/${jobId}`);
      if (current?.ID !== deploymentId || !ACTIVE_DEPLOYMENT.has(String(current.Status))) return this.changes.off('change', check);
      if (!placed.every((id) => (this.allocs.get(id)?.DeploymentStatus as Obj | null | undefined)?.Healthy === true)) return;
      this.changes.off('change', check);
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        if (this.deployments.get(`${namespace}/${jobId}`)?.ID === deploymentId) this.endDeployment(jobId, 'successful', namespace);
      }, minHealthyMs);
      this.timers.add(timer);
    };
    this.changes.on('change', check);
  }

  /** Answers now, or once the resource's index passes `index`, or when `wait` runs out. */
  private async blocking(req: http.IncomingMessage, res: http.ServerResponse, url: URL, read: () => { index: number; body: unknown } | { status: number; text: string }): Promise<void> {
    const minIndex = Number(url.searchParams.get('index') ?? 0);
    const waitMs = Math.min(parseWait(url.searchParams.get('wait')) ?? 300_000, MAX_WAIT_MS);
    const deadline = Date.now() + waitMs;
    let closed = false;
    res.on('close', () => (closed = true));
    while (true) {
      const result = read();
      if ('status' in result) return this.text(res, result.status, result.text);
      if (!(minIndex > 0) || result.index > minIndex || Date.now() >= deadline) return this.json(res, result.body, Math.max(result.index, 1));
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.changes.off('change', done);
          req.socket.off('close', done);
          resolve();
        };
        const timer = setTimeout(done, Math.max(deadline - Date.now(), 0));
        this.changes.on('change', done);
        req.socket.once('close', done);
      });
      if (closed) return;
    }
  }

  private eventStream(req: http.IncomingMessage, res: http.ServerResponse, url: URL): void {
    const rawIndex = url.searchParams.get('index') ?? '0';
    if (!/^\d+$/.test(rawIndex)) return this.text(res, 400, `Unable to parse index: strconv.Atoi: parsing "${rawIndex}": invalid syntax`);
    const index = Number(rawIndex);
    const topicParams = url.searchParams.getAll('topic');
    // "Allocation" and "Allocation:*" both mean every allocation event.
    const topics = new Set(topicParams.length ? topicParams.map((t) => t.split(':')[0]!) : ['*']);
    let write: (text: string) => void;
    if (this.options.streamFraming === 'hijacked') {
      // Nomad ≥ 1.11.2 hijacks the connection and writes an HTTP/1.1 answer
      // without a length (1.11.3 fixed its protocol line): the body ends when
      // the connection does (command/agent/event_endpoint.go).
      req.socket.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nVary: Accept-Encoding\r\nConnection: close\r\n\r\n');
      write = (text) => void req.socket.write(text);
    } else {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache' });
      write = (text) => void res.write(text);
    }
    write(this.frameText({}));
    const stream: Stream = {
      write,
      socket: req.socket,
      topics,
      namespace: url.searchParams.get('namespace') || 'default',
      namespaces: new Set(['default', ...[...this.jobs.values()].map((j) => String(j.Namespace))]),
      heartbeat: setInterval(() => write(this.frameText({})), this.options.heartbeatMs),
    };
    stream.heartbeat.unref();
    this.streams.add(stream);
    req.socket.on('close', () => {
      clearInterval(stream.heartbeat);
      this.streams.delete(stream);
    });
    // StartAtClosest: the first frame at or after `index`, else the newest; 0 replays the buffer.
    let start = index === 0 ? 0 : this.buffer.findIndex((f) => f.Index >= index);
    if (start < 0) start = this.buffer.length - 1;
    for (const frame of this.buffer.slice(Math.max(start, 0))) this.sendFrame(stream, frame);
  }

  private async parse(res: http.ServerResponse, body: string): Promise<void> {
    let request: Obj;
    try {
      request = JSON.parse(body) as Obj;
    } catch {
      return this.text(res, 400, 'Invalid request body');
    }
    if (typeof request.JobHCL !== 'string') return this.text(res, 400, 'Job HCL is empty');
    const { parseHclOffline } = await import('../../../plugin/parse-hcl-offline.js');
    let job: Obj;
    try {
      job = await parseHclOffline('input.hcl', request.JobHCL);
    } catch (error) {
      return this.text(res, 400, (error as Error).message);
    }
    if (request.Canonicalize === true) {
      job = { Namespace: 'default', Region: 'global', Type: 'service', Priority: 50, ...job };
      job.TaskGroups = ((job.TaskGroups as Obj[]) ?? []).map((g) => ({ Count: 1, ...g }));
    }
    return this.json(res, job);
  }

  private register(res: http.ServerResponse, body: string, url: URL): void {
    let request: Obj;
    try {
      request = JSON.parse(body) as Obj;
    } catch (error) {
      return this.text(res, 400, `Invalid request body: ${(error as Error).message}`);
    }
    const job = request.Job as Obj | undefined;
    const errors = validateJob(job);
    if (errors.length) return this.text(res, 500, `${errors.length} error${errors.length > 1 ? 's' : ''} occurred:\n${errors.map((e) => `\t* ${e}\n`).join('')}\n`);
    if (!job!.Namespace && url.searchParams.get('namespace')) job!.Namespace = url.searchParams.get('namespace');
    const stored = this.registerJob(job!);
    return this.json(res, { EvalID: randomUUID(), EvalCreateIndex: stored.ModifyIndex, JobModifyIndex: stored.JobModifyIndex, Warnings: '', Index: stored.ModifyIndex, LastContact: 0, KnownLeader: false });
  }

  private scale(res: http.ServerResponse, jobId: string, body: string, url: URL): void {
    const job = this.jobs.get(`${url.searchParams.get('namespace') || 'default'}/${jobId}`);
    if (!job) return this.text(res, 404, `job "${jobId}" not found`);
    let request: Obj;
    try {
      request = JSON.parse(body) as Obj;
    } catch {
      return this.text(res, 400, 'Invalid request body');
    }
    const groupName = (request.Target as Obj | undefined)?.Group;
    if (typeof groupName !== 'string' || !groupName) return this.text(res, 400, 'missing task group name');
    const group = (job.TaskGroups as Obj[]).find((g) => g.Name === groupName);
    if (!group) return this.text(res, 400, `task group "${groupName}" specified for scaling does not exist in job`);
    const count = request.Count;
    if (count !== undefined && count !== null) {
      if (typeof count !== 'number' || !Number.isInteger(count) || count < 0) return this.text(res, 400, 'scaling action count can\'t be negative');
      const scaling = group.Scaling as Obj | null | undefined;
      if (typeof scaling?.Min === 'number' && count < scaling.Min) return this.text(res, 400, `group count was less than scaling policy minimum: ${count} < ${scaling.Min}`);
      if (typeof scaling?.Max === 'number' && count > scaling.Max) return this.text(res, 400, `group count was greater than scaling policy maximum: ${count} > ${scaling.Max}`);
    }
    const deployment = this.deployments.get(`${String(job.Namespace)}/${jobId}`);
    if (deployment && ACTIVE_DEPLOYMENT.has(String(deployment.Status)) && deployment.JobCreateIndex === job.CreateIndex) {
      this.refusedScales++;
      return this.text(res, 400, 'job scaling blocked due to active deployment');
    }
    this.scaleRequests.push({ jobId, body: request });
    const index = ++this.index;
    if (typeof count === 'number') {
      group.Count = count;
      job.ModifyIndex = index;
      job.JobModifyIndex = index;
      job.Version = (job.Version as number) + 1;
      // Without a scheduler, scaling down stops the newest surplus allocations.
      const live = [...this.allocs.values()].filter((a) => a.JobID === jobId && a.TaskGroup === groupName && a.DesiredStatus === 'run');
      for (const alloc of live.slice(count).reverse()) this.stopAllocation(alloc.ID as string);
      const how = this.options.placeOnScale;
      if (how && count > live.length) {
        const deploymentId = how.deployment ? (this.startDeployment(jobId, 'running', String(job.Namespace)).ID as string) : undefined;
        const placed: string[] = [];
        for (let i = live.length; i < count; i++) placed.push(this.place(jobId, groupName, String(job.Namespace), how, deploymentId));
        if (deploymentId) this.deploymentWatch(jobId, String(job.Namespace), deploymentId, placed, how.minHealthyTimeMs ?? 0);
      }
    }
    this.changes.emit('change');
    return this.json(res, { EvalID: randomUUID(), EvalCreateIndex: index, JobModifyIndex: job.JobModifyIndex, Warnings: '', Index: index, LastContact: 0, KnownLeader: false });
  }
}

/** The capability a route needs (nomad/acl; command/agent/*_endpoint.go). */
function requiredCapability(method: string, parts: string[]): NomadCapability | undefined {
  if (parts[1] === 'agent') return 'agent:read';
  if (parts[1] === 'node') return 'node:read';
  if (parts[1] === 'event') return 'read-job';
  if (parts[1] === 'jobs' && parts[2] === 'parse') return 'parse-job';
  if (parts[1] === 'jobs' && method !== 'GET') return 'submit-job';
  if (parts[1] === 'job' && parts[3] === 'scale' && method !== 'GET') return 'scale-job';
  if (parts[1] === 'job' || parts[1] === 'allocation' || parts[1] === 'jobs') return 'read-job';
  return undefined;
}

/** The handful of structural rules Nomad's Job.Validate enforces that tests rely on. */
function validateJob(job: Obj | undefined): string[] {
  if (!job || typeof job !== 'object') return ['Missing job'];
  const errors: string[] = [];
  if (typeof job.ID !== 'string' || !job.ID) errors.push('Missing job ID');
  const groups = job.TaskGroups;
  if (!Array.isArray(groups) || groups.length === 0) errors.push('Missing job task groups');
  else {
    for (const [i, group] of (groups as Obj[]).entries()) {
      if (!group.Name) errors.push(`Task group ${i + 1} missing name`);
      const tasks = group.Tasks;
      if (!Array.isArray(tasks) || tasks.length === 0) errors.push(`Task group ${String(group.Name)} validation failed: Missing tasks for task group`);
      else for (const task of tasks as Obj[]) if (!task.Driver) errors.push(`Task ${String(task.Name)} validation failed: Missing task driver`);
    }
  }
  return errors;
}

/** Go duration as Nomad's `wait` takes it ("500ms", "5s", "1m"). */
function parseWait(text: string | null): number | undefined {
  if (!text) return undefined;
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(text);
  if (!match) return undefined;
  return Number(match[1]) * ({ ms: 1, s: 1000, m: 60_000 } as const)[match[2] as 'ms' | 's' | 'm'];
}
