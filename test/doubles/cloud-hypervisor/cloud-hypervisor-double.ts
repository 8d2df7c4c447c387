/**
 * A test double of Cloud Hypervisor's REST API on a unix socket. It is not
 * Cloud Hypervisor (no binary can be installed here): it serves the part of
 * the API doze uses with the routes, status codes and state rules of Cloud
 * Hypervisor's own source (vmm/src/api/http/mod.rs, http_endpoint.rs,
 * vmm/src/vm.rs VmState::valid_transition) so the runtime can be tested
 * against the exact sequence and bodies the real VMM accepts.
 *
 * Covered, as Cloud Hypervisor does it:
 * - Routes under /api/v1: GET vmm.ping, GET vm.info, PUT vm.pause, vm.resume
 *   (a body is refused with 400: their handlers take none), PUT vm.snapshot
 *   `{destination_url}`, PUT vm.restore `{source_url, prefault}`, PUT
 *   vm.shutdown, PUT vmm.shutdown. Unknown routes 404; wrong methods 400.
 * - Errors: VmNotCreated is 404, every other VMM error 500; the body is a
 *   JSON array of messages, outermost first (error_response()).
 * - State rules: pause only from Running, resume only from Paused (a second
 *   pause or a resume of a running VM is an invalid transition, 500);
 *   snapshot only while Paused; restore only into a VMM with no VM
 *   (VmAlreadyCreated, 500); a restored VM is Paused until vm.resume.
 * - Snapshot files: `file://` URLs only; the destination directory must
 *   exist; it receives config.json, state.json and memory-ranges (as Cloud
 *   Hypervisor writes them). Restore reads them back.
 *
 * Not covered: booting a guest (tests start with a VM already Running or
 *   with none, as after a VMM restart), devices, hotplug, migration,
 *   `prefault` timing (recorded, not simulated), the `resume` flag of newer
 *   restores, fds over SCM_RIGHTS, and the real error wording (close
 *   paraphrases of Cloud Hypervisor's Display strings, not byte-exact).
 *   The "guest" is a counter and a few memory pages in a JSON file.
 */
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Teardown } from '../../helpers/teardown.js';

export type ChVmState = 'Created' | 'Running' | 'Paused' | 'Shutdown';

export interface ChRecordedRequest {
  method: string;
  path: string;
  /** Parsed JSON body, or undefined when there was none. */
  body: unknown;
  status: number;
}

interface Vm {
  state: ChVmState;
  /** Guest memory: what a snapshot must carry across a restore. */
  memory: { counter: number };
}

export class CloudHypervisorDouble {
  readonly requests: ChRecordedRequest[] = [];
  /** Delay before every answer (deadline tests). */
  delayMs = 0;
  /** Requests received and still held back by delayMs: 0 once a late request has landed. */
  held = 0;
  /** When set, vm.snapshot fails with this message (HTTP 500), as a full disk would make it. */
  snapshotError: string | undefined;
  private vm: Vm | undefined;
  private server: http.Server | undefined;
  private readonly sockets = new Set<Socket>();

  private constructor(readonly socketPath: string, readonly dir: string) {}

  /** A VMM with a running VM on a fresh socket in a temporary directory (removed at teardown). */
  static async start(t: Teardown, options: { vm?: ChVmState | null } = {}): Promise<CloudHypervisorDouble> {
    const dir = await mkdtemp(join(tmpdir(), 'dz-ch-'));
    const double = new CloudHypervisorDouble(join(dir, 'ch.sock'), dir);
    if (options.vm !== null) double.vm = { state: options.vm ?? 'Running', memory: { counter: 0 } };
    await double.listen();
    t.teardown(async () => {
      await double.stopProcess();
      await rm(dir, { recursive: true, force: true });
    });
    return double;
  }

  get state(): ChVmState | undefined {
    return this.vm?.state;
  }

  /** The guest does some work (only a running guest can). */
  guestTick(): number {
    if (this.vm?.state !== 'Running') throw new Error(`double: the guest cannot run while the VM is ${this.vm?.state ?? 'absent'}`);
    return ++this.vm.memory.counter;
  }

  get counter(): number | undefined {
    return this.vm?.memory.counter;
  }

  /** Paths of the state-changing requests, in order (what sequence tests compare). */
  get calls(): string[] {
    return this.requests.filter((r) => r.method !== 'GET').map((r) => `${r.method} ${r.path}`);
  }

  /** The VMM process dies (its VM with it); the socket file stays, as a killed process leaves it. */
  async stopProcess(): Promise<void> {
    if (!this.server) return;
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = undefined;
    this.vm = undefined;
  }

  /** A fresh VMM process on the same socket, with no VM (what `vm.restore` loads into). */
  async restartProcess(): Promise<void> {
    await this.stopProcess();
    await rm(this.socketPath, { force: true });
    await this.listen();
  }

  private async listen(): Promise<void> {
    const server = http.createServer((req, res) => void this.handle(req, res));
    server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socketPath, () => resolve());
    });
    this.server = server;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let text = '';
    for await (const chunk of req) text += String(chunk);
    if (this.delayMs > 0) {
      this.held++;
      await new Promise((resolve) => setTimeout(resolve, this.delayMs));
      this.held--;
    }
    const path = (req.url ?? '/').split('?')[0]!;
    const method = req.method ?? 'GET';
    let body: unknown;
    let badJson = false;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        badJson = true;
      }
    }
    const answer = await this.route(method, path, text !== '', badJson, body);
    this.requests.push({ method, path, body, status: answer.status });
    res.writeHead(answer.status, { 'Content-Type': 'application/json', Server: 'Cloud Hypervisor API' });
    res.end(answer.body === undefined ? undefined : JSON.stringify(answer.body));
  }

  private async route(method: string, path: string, hasBody: boolean, badJson: boolean, body: unknown): Promise<{ status: number; body?: unknown }> {
    const prefix = '/api/v1/';
    if (!path.startsWith(prefix)) return error(404, ['Not Found']);
    const endpoint = path.slice(prefix.length);
    const put = method === 'PUT';
    const get = method === 'GET';
    switch (endpoint) {
      case 'vmm.ping':
        if (!get) return error(400, ['Bad Request']);
        return { status: 200, body: { build_version: 'doze-double', version: 'v41.0-double', pid: process.pid, features: ['kvm'] } };
      case 'vm.info':
        if (!get) return error(400, ['Bad Request']);
        if (!this.vm) return notCreated('VmInfo');
        return { status: 200, body: { config: { cpus: { boot_vcpus: 1 }, memory: { size: 268435456 } }, state: this.vm.state, memory_actual_size: 268435456, device_tree: {} } };
      case 'vm.pause':
      case 'vm.resume':
      case 'vm.shutdown': {
        // vm_action_put_handler!: these take no body.
        if (!put || hasBody) return error(400, ['Bad Request']);
        if (!this.vm) return notCreated(endpoint);
        const to: ChVmState = endpoint === 'vm.pause' ? 'Paused' : endpoint === 'vm.resume' ? 'Running' : 'Shutdown';
        if (!validTransition(this.vm.state, to)) {
          const verb = endpoint === 'vm.pause' ? 'pause' : endpoint === 'vm.resume' ? 'resume' : 'shut down';
          return error(500, ['Error from API', `The VM could not be ${verb === 'shut down' ? 'shut down' : verb + 'd'}`, `Invalid transition: InvalidStateTransition(${this.vm.state}, ${to})`]);
        }
        this.vm.state = to;
        return { status: 204 };
      }
      case 'vm.snapshot': {
        if (!put) return error(400, ['Bad Request']);
        if (!hasBody) return error(400, ['Bad Request']);
        if (badJson || !isRecord(body) || typeof body.destination_url !== 'string') return error(400, ['Failed to deserialize JSON']);
        if (!this.vm) return notCreated('VmSnapshot');
        if (this.vm.state !== 'Paused') return error(500, ['Error from API', 'The VM could not be snapshotted', 'Snapshot error: Trying to snapshot while VM is running']);
        if (this.snapshotError) return error(500, ['Error from API', 'The VM could not be snapshotted', this.snapshotError]);
        const dir = urlPath(body.destination_url);
        if (!dir) return error(500, ['Error from API', 'The VM could not be snapshotted', `Unsupported URL scheme: ${body.destination_url}`]);
        if (!existsSync(dir) || !statSync(dir).isDirectory()) return error(500, ['Error from API', 'The VM could not be snapshotted', `Error creating snapshot files in ${dir}: No such file or directory (os error 2)`]);
        await writeFile(join(dir, 'config.json'), JSON.stringify({ cpus: { boot_vcpus: 1 }, memory: { size: 268435456 } }));
        await writeFile(join(dir, 'state.json'), JSON.stringify({ format: 'ch-double-state', vm_state: 'Paused' }));
        await writeFile(join(dir, 'memory-ranges'), JSON.stringify({ format: 'ch-double-memory', memory: this.vm.memory }));
        return { status: 204 };
      }
      case 'vm.restore': {
        if (!put) return error(400, ['Bad Request']);
        if (!hasBody) return error(400, ['Bad Request']);
        if (badJson || !isRecord(body) || typeof body.source_url !== 'string') return error(400, ['Failed to deserialize JSON']);
        if (this.vm) return error(500, ['Error from API', 'The VM could not be restored', 'VM is already created']);
        const dir = urlPath(body.source_url);
        if (!dir) return error(500, ['Error from API', 'The VM could not be restored', `Unsupported URL scheme: ${body.source_url}`]);
        let memory: { counter: number };
        try {
          await readFile(join(dir, 'config.json'), 'utf8');
          await readFile(join(dir, 'state.json'), 'utf8');
          memory = (JSON.parse(await readFile(join(dir, 'memory-ranges'), 'utf8')) as { memory: { counter: number } }).memory;
        } catch {
          return error(500, ['Error from API', 'The VM could not be restored', `Cannot read snapshot from ${dir}: No such file or directory (os error 2)`]);
        }
        this.vm = { state: 'Paused', memory };
        return { status: 204 };
      }
      case 'vmm.shutdown':
        if (!put) return error(400, ['Bad Request']);
        setImmediate(() => void this.stopProcess());
        return { status: 200 };
      default:
        return error(404, ['Not Found']);
    }
  }
}

function error(status: number, messages: string[]): { status: number; body: string[] } {
  return { status, body: messages };
}

function notCreated(action: string): { status: number; body: string[] } {
  return error(404, ['Error from API', `The ${action} request failed`, 'VM is not created']);
}

/** Cloud Hypervisor's VmState::valid_transition for the states the double has. */
function validTransition(from: ChVmState, to: ChVmState): boolean {
  switch (from) {
    case 'Created':
      return to !== 'Created';
    case 'Running':
      return to === 'Paused' || to === 'Shutdown';
    case 'Paused':
      return to === 'Running' || to === 'Shutdown';
    case 'Shutdown':
      return to === 'Running';
  }
}

function urlPath(url: string): string | undefined {
  return url.startsWith('file://') && url.length > 'file://'.length ? url.slice('file://'.length) : undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
