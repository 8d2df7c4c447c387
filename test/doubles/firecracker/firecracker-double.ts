/**
 * A test double of Firecracker's REST API on a unix socket. It is not
 * Firecracker (no binary can be installed here): it serves the part of the API
 * doze uses with the paths, bodies, status codes and state rules of
 * Firecracker's swagger (src/firecracker/swagger/firecracker.yaml), its
 * snapshot docs (docs/snapshotting/snapshot-support.md) and its integration
 * tests (test_negative_snapshot_create), so the runtime is tested against the
 * exact request sequence and bodies the real VMM expects.
 *
 * One double is one Firecracker process: it starts "Not started" and can take
 * either a boot (PUT /machine-config, /boot-source, /network-interfaces/{id},
 * /actions InstanceStart) or one snapshot load, never both.
 *
 * Covered, as Firecracker does it:
 * - GET / (InstanceInfo: app_name, id, state "Not started"|"Running"|"Paused",
 *   vmm_version). Errors are 400 with `{"fault_message": …}`.
 * - PATCH /vm `{state: "Paused"|"Resumed"}`: 400 before boot ("not supported
 *   before starting the microVM"); repeated calls are accepted (the docs:
 *   "successive calls of this request are ignored").
 * - PUT /snapshot/create `{snapshot_type?, snapshot_path, mem_file_path}`: 400
 *   before boot, 400 while running ("save/restore unavailable while
 *   running"), 400 for "Diff" without dirty page tracking ("Diff snapshots
 *   are not allowed on uVMs with dirty page tracking disabled."). A Diff
 *   holds only the pages dirtied since the last snapshot or load.
 * - PUT /snapshot/load `{snapshot_path, mem_backend: {backend_type: "File",
 *   backend_path} | mem_file_path, track_dirty_pages?, resume_vm?,
 *   network_overrides?: [{iface_id, host_dev_name}]}`: 400 after boot or load
 *   ("not supported after starting the microVM"), 400 after any boot-time
 *   resource was configured ("Loading a microVM snapshot not allowed after
 *   configuring boot-specific resources."), 400 unless exactly one of
 *   mem_backend / mem_file_path; an override for an unknown iface is refused;
 *   a failed load ends the process, as the docs say it does. A loaded VM is
 *   Paused unless resume_vm.
 * - Tap devices: with `taps` set, the tap an interface names (after
 *   overrides) must be one of them, as Firecracker opens it at boot or load.
 *
 * Not covered: a guest (memory is a few JSON "pages", page 0 a counter; the
 * snapshot and memory files are JSON, not Firecracker's formats), the Uffd
 * backend, drives, vsock, balloon, MMDS, metrics and logger, rate limiters,
 * the jailer, snapshot versioning, clock_realtime, and exact wording beyond
 * the messages quoted above.
 *
 * Double-only checks, stricter than Firecracker (which would silently load
 * garbage): a memory file that is a Diff layer is refused, and so is a state
 * file that does not belong with the memory file (the "use the state file of
 * the last layer merged" rule of the snapshot docs).
 */
import { randomUUID } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { Socket } from 'node:net';

export type FcState = 'Not started' | 'Running' | 'Paused';

export interface FcRecordedRequest {
  method: string;
  path: string;
  body: unknown;
  status: number;
}

export interface FirecrackerDoubleOptions {
  /** Tap devices that exist on the "host"; unset: any name opens. */
  taps?: Set<string>;
}

interface NetIface {
  iface_id: string;
  host_dev_name: string;
}

/** The double's memory file (JSON, not Firecracker's raw guest memory). */
export interface DoubleMemoryFile {
  format: 'fc-double-memory';
  layer: 'full' | 'diff';
  /** Which snapshot wrote (full) or last merged into (after a rebase) this file. */
  snapshotId: string;
  pages: Record<string, number>;
}

interface DoubleStateFile {
  format: 'fc-double-vmstate';
  snapshotId: string;
  layer: 'full' | 'diff';
  netIfaces: NetIface[];
  pageCount: number;
}

const PAGES = 8;

export class FirecrackerDouble {
  readonly requests: FcRecordedRequest[] = [];
  readonly pid = Math.floor(Math.random() * 1e6);
  /** Delay before every answer (deadline tests). */
  delayMs = 0;
  /** Requests received and still held back by delayMs: 0 once a late request has landed. */
  held = 0;
  state: FcState = 'Not started';
  /** Set once this process has exited (stopped, or ended by a failed load). */
  exited = false;
  private configured = false;
  private trackDirtyPages = false;
  private bootSource = false;
  private netIfaces: NetIface[] = [];
  private pages: Record<string, number> = {};
  private dirty = new Set<string>();
  private server: http.Server | undefined;
  private readonly sockets = new Set<Socket>();

  private constructor(readonly socketPath: string, private readonly options: FirecrackerDoubleOptions) {}

  /** A fresh Firecracker process on `socketPath` (the path must not exist, as for Firecracker). */
  static async start(socketPath: string, options: FirecrackerDoubleOptions = {}): Promise<FirecrackerDouble> {
    const double = new FirecrackerDouble(socketPath, options);
    const server = http.createServer((req, res) => void double.handle(req, res));
    server.on('connection', (socket) => {
      double.sockets.add(socket);
      socket.on('close', () => double.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => resolve());
    });
    double.server = server;
    return double;
  }

  /** Boots a VM through the API, the way a user's launcher would. */
  static async booted(socketPath: string, options: FirecrackerDoubleOptions & { trackDirtyPages?: boolean; ifaces?: NetIface[] } = {}): Promise<FirecrackerDouble> {
    const double = await FirecrackerDouble.start(socketPath, options);
    const boot: Array<[string, string, unknown]> = [
      ['PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 128, track_dirty_pages: options.trackDirtyPages ?? false }],
      ['PUT', '/boot-source', { kernel_image_path: '/images/vmlinux', boot_args: 'console=ttyS0' }],
      ...(options.ifaces ?? [{ iface_id: 'eth0', host_dev_name: 'tap0' }]).map((i): [string, string, unknown] => ['PUT', `/network-interfaces/${i.iface_id}`, i]),
      ['PUT', '/actions', { action_type: 'InstanceStart' }],
    ];
    for (const [method, path, body] of boot) {
      const answer = await double.route(method, path, body);
      if (answer.status !== 204) throw new Error(`double: boot step ${method} ${path} failed: ${JSON.stringify(answer.body)}`);
    }
    return double;
  }

  /** The guest does some work: page 0 counts, and a page is dirtied. */
  guestTick(): number {
    if (this.state !== 'Running') throw new Error(`double: the guest cannot run while the VM is ${this.state}`);
    const next = (this.pages['0'] ?? 0) + 1;
    this.pages['0'] = next;
    this.dirty.add('0');
    return next;
  }

  get counter(): number | undefined {
    return this.pages['0'];
  }

  get interfaces(): NetIface[] {
    return this.netIfaces.map((i) => ({ ...i }));
  }

  /** Method, path and body of the state-changing requests, in order. */
  get calls(): Array<[string, string, unknown]> {
    return this.requests.filter((r) => r.method !== 'GET').map((r) => [r.method, r.path, r.body]);
  }

  /** The process exits (SIGTERM/SIGKILL): its API goes away; the socket file stays, as Firecracker leaves it. */
  async exit(): Promise<void> {
    if (this.exited) return;
    this.exited = true;
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let text = '';
    for await (const chunk of req) text += String(chunk);
    if (this.delayMs > 0) {
      this.held++;
      await new Promise((resolve) => setTimeout(resolve, this.delayMs));
      this.held--;
    }
    let body: unknown;
    let answer: { status: number; body?: unknown; exitAfter?: boolean };
    try {
      body = text ? JSON.parse(text) : undefined;
      answer = await this.route(req.method ?? 'GET', (req.url ?? '/').split('?')[0]!, body);
    } catch {
      answer = fault('The body of the request is not valid JSON');
    }
    this.requests.push({ method: req.method ?? 'GET', path: req.url ?? '/', body, status: answer.status });
    res.writeHead(answer.status, { 'Content-Type': 'application/json' });
    res.end(answer.body === undefined ? undefined : JSON.stringify(answer.body));
    if (answer.exitAfter) setImmediate(() => void this.exit());
  }

  private async route(method: string, path: string, body: unknown): Promise<{ status: number; body?: unknown; exitAfter?: boolean }> {
    const started = this.state !== 'Not started';
    if (method === 'GET' && path === '/') return { status: 200, body: { app_name: 'Firecracker', id: 'anonymous-instance', state: this.state, vmm_version: '1.12.0-double' } };
    if (method === 'PUT' && path === '/machine-config') {
      if (started) return postBoot();
      if (!isRecord(body) || typeof body.vcpu_count !== 'number' || typeof body.mem_size_mib !== 'number') return fault('Invalid machine configuration');
      this.configured = true;
      this.trackDirtyPages = body.track_dirty_pages === true;
      return { status: 204 };
    }
    if (method === 'PUT' && path === '/boot-source') {
      if (started) return postBoot();
      if (!isRecord(body) || typeof body.kernel_image_path !== 'string') return fault('Invalid boot source');
      this.configured = true;
      this.bootSource = true;
      return { status: 204 };
    }
    if (method === 'PUT' && path.startsWith('/network-interfaces/')) {
      if (started) return postBoot();
      if (!isRecord(body) || typeof body.iface_id !== 'string' || typeof body.host_dev_name !== 'string' || `/network-interfaces/${body.iface_id}` !== path) return fault('Invalid network interface');
      this.configured = true;
      this.netIfaces = [...this.netIfaces.filter((i) => i.iface_id !== body.iface_id), { iface_id: body.iface_id, host_dev_name: body.host_dev_name }];
      return { status: 204 };
    }
    if (method === 'PUT' && path === '/actions') {
      if (!isRecord(body) || body.action_type !== 'InstanceStart') return fault('Invalid action');
      if (started) return postBoot();
      if (!this.bootSource) return fault('Cannot start microvm without kernel configuration.');
      const tap = this.missingTap(this.netIfaces);
      if (tap) return fault(`Start microVM error: Open tap device failed: ${tap}: No such device`);
      for (let i = 0; i < PAGES; i++) this.pages[String(i)] = 0;
      this.dirty = new Set(Object.keys(this.pages));
      this.state = 'Running';
      return { status: 204 };
    }
    if (method === 'PATCH' && path === '/vm') {
      if (!isRecord(body) || (body.state !== 'Paused' && body.state !== 'Resumed')) return fault('Invalid VM state');
      if (!started) return fault('The requested operation is not supported before starting the microVM.');
      this.state = body.state === 'Paused' ? 'Paused' : 'Running';
      return { status: 204 };
    }
    if (method === 'PUT' && path === '/snapshot/create') return this.create(body);
    if (method === 'PUT' && path === '/snapshot/load') return this.load(body);
    return fault(`Invalid request method and/or path: ${method} ${path}.`);
  }

  private async create(body: unknown): Promise<{ status: number; body?: unknown }> {
    if (this.state === 'Not started') return fault('The requested operation is not supported before starting the microVM.');
    if (!isRecord(body) || typeof body.snapshot_path !== 'string' || typeof body.mem_file_path !== 'string') return fault('snapshot_path and mem_file_path are required');
    const type = body.snapshot_type ?? 'Full';
    if (type !== 'Full' && type !== 'Diff') return fault(`unknown snapshot_type ${JSON.stringify(type)}`);
    if (this.state === 'Running') return fault('Failed to create snapshot: Cannot save the microVM state: save/restore unavailable while running');
    if (type === 'Diff' && !this.trackDirtyPages) return fault('Diff snapshots are not allowed on uVMs with dirty page tracking disabled.');
    const snapshotId = randomUUID();
    const pages = type === 'Full' ? { ...this.pages } : Object.fromEntries([...this.dirty].map((p) => [p, this.pages[p]!]));
    const layer = type === 'Full' ? 'full' : 'diff';
    const memory: DoubleMemoryFile = { format: 'fc-double-memory', layer, snapshotId, pages };
    const state: DoubleStateFile = { format: 'fc-double-vmstate', snapshotId, layer, netIfaces: this.netIfaces, pageCount: Object.keys(this.pages).length };
    try {
      await writeFile(body.mem_file_path, JSON.stringify(memory));
      await writeFile(body.snapshot_path, JSON.stringify(state));
    } catch (error) {
      return fault(`Failed to create snapshot: ${(error as Error).message}`);
    }
    this.dirty.clear();
    return { status: 204 };
  }

  private async load(body: unknown): Promise<{ status: number; body?: unknown; exitAfter?: boolean }> {
    if (this.state !== 'Not started') return fault('The requested operation is not supported after starting the microVM.');
    if (this.configured) return fault('Loading a microVM snapshot not allowed after configuring boot-specific resources.');
    if (!isRecord(body) || typeof body.snapshot_path !== 'string') return fault('snapshot_path is required');
    const backend = body.mem_backend;
    if ((backend === undefined) === (body.mem_file_path === undefined)) return fault('Exactly one of mem_backend and mem_file_path must be present.');
    let memPath: string;
    if (backend !== undefined) {
      if (!isRecord(backend) || typeof backend.backend_path !== 'string' || (backend.backend_type !== 'File' && backend.backend_type !== 'Uffd')) return fault('Invalid mem_backend');
      if (backend.backend_type === 'Uffd') return fault('double: the Uffd backend is not simulated');
      memPath = backend.backend_path;
    } else {
      if (typeof body.mem_file_path !== 'string') return fault('Invalid mem_file_path');
      memPath = body.mem_file_path;
    }
    // From here on a failure ends the process, as Firecracker's does.
    const failed = (message: string) => ({ ...fault(`Load snapshot error: ${message}`), exitAfter: true });
    let state: DoubleStateFile;
    let memory: DoubleMemoryFile;
    try {
      state = JSON.parse(await readFile(body.snapshot_path, 'utf8')) as DoubleStateFile;
      memory = JSON.parse(await readFile(memPath, 'utf8')) as DoubleMemoryFile;
    } catch (error) {
      return failed(`Cannot open snapshot files: ${(error as Error).message}`);
    }
    if (memory.layer !== 'full') return failed(`double: ${memPath} is a Diff layer, not a resumable memory file (merge it onto its base first)`);
    if (state.snapshotId !== memory.snapshotId) return failed(`double: state file ${body.snapshot_path} (${state.snapshotId}) does not belong with memory ${memPath} (${memory.snapshotId})`);
    if (Object.keys(memory.pages).length !== state.pageCount) return failed('double: the memory file does not cover guest memory');
    const ifaces = state.netIfaces.map((i) => ({ ...i }));
    const overrides = body.network_overrides ?? [];
    if (!Array.isArray(overrides)) return failed('Invalid network_overrides');
    for (const override of overrides as unknown[]) {
      if (!isRecord(override) || typeof override.iface_id !== 'string' || typeof override.host_dev_name !== 'string') return failed('Invalid network override');
      const iface = ifaces.find((i) => i.iface_id === override.iface_id);
      if (!iface) return failed(`Invalid network override: no interface ${override.iface_id} in the snapshot`);
      iface.host_dev_name = override.host_dev_name;
    }
    const tap = this.missingTap(ifaces);
    if (tap) return failed(`Open tap device failed: ${tap}: No such device`);
    this.netIfaces = ifaces;
    this.pages = { ...memory.pages };
    this.dirty.clear();
    this.trackDirtyPages = body.track_dirty_pages === true || body.enable_diff_snapshots === true;
    this.state = body.resume_vm === true ? 'Running' : 'Paused';
    return { status: 204 };
  }

  private missingTap(ifaces: NetIface[]): string | undefined {
    if (!this.options.taps) return undefined;
    return ifaces.find((i) => !this.options.taps!.has(i.host_dev_name))?.host_dev_name;
  }
}

function fault(message: string): { status: number; body: { fault_message: string } } {
  return { status: 400, body: { fault_message: message } };
}

function postBoot() {
  return fault('The requested operation is not supported after starting the microVM.');
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
