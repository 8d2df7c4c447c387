import { chmod, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { messageOf } from '../../errors.js';
import { ownerRequestSchema, type OwnerState, type OwnerStatus } from './owner-protocol.js';

/** What the control socket's requests act on: the owner. */
export interface OwnerOperations {
  readonly state: OwnerState;
  /** A stop is under way: sleeps and wakes are refused. */
  readonly isStopping: boolean;
  status(): OwnerStatus;
  sleep(deadlineMs: number): Promise<OwnerStatus>;
  wake(deadlineMs: number): Promise<OwnerStatus>;
}

/** A request that names no deadline is bounded by this. */
const DEFAULT_DEADLINE_MS = 30_000;
/** A line longer than this is not a request: the connection is dropped. */
const MAX_BUFFERED_CHARS = 65536;

/** The server side of owner-protocol.ts, on `<state dir>/control.sock` (mode 0600). */
export class OwnerControlServer {
  private readonly clients = new Set<Socket>();

  private constructor(private readonly server: Server, private readonly owner: OwnerOperations) {
    server.on('connection', (socket) => this.serve(socket));
  }

  /** Listens on `path` (replacing a stale socket file). */
  static async listen(path: string, owner: OwnerOperations): Promise<OwnerControlServer> {
    await rm(path, { force: true });
    const server = createServer();
    const control = new OwnerControlServer(server, owner);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(path, 0o600);
    return control;
  }

  /** Drops every client and stops listening. */
  async close(): Promise<void> {
    for (const socket of this.clients) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private serve(socket: Socket): void {
    this.clients.add(socket);
    socket.setEncoding('utf8');
    let buffer = '';
    const reply = (message: Record<string, unknown>) => {
      if (!socket.destroyed) socket.write(`${JSON.stringify(message)}\n`);
    };
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      if (buffer.length > MAX_BUFFERED_CHARS) socket.destroy();
      for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (!line) continue;
        let raw: unknown;
        try {
          raw = JSON.parse(line);
        } catch {
          reply({ id: null, ok: false, code: 'E_PROTOCOL', error: 'not JSON' });
          continue;
        }
        const request = ownerRequestSchema.safeParse(raw);
        if (!request.success) {
          const id = typeof raw === 'object' && raw !== null && 'id' in raw ? (raw as { id: unknown }).id : null;
          reply({ id: typeof id === 'number' || typeof id === 'string' ? id : null, ok: false, code: 'E_PROTOCOL', error: 'expected {"id", "op": "sleep" | "wake" | "status", "deadlineMs"?}' });
          continue;
        }
        const { id, op, deadlineMs } = request.data;
        if (op === 'status') {
          reply({ id, ok: true, ...this.owner.status() });
          continue;
        }
        if (this.owner.isStopping) {
          reply({ id, ok: false, code: 'E_OWNER_STOPPING', error: 'doze vm is stopping', state: this.owner.state });
          continue;
        }
        const work = op === 'sleep' ? this.owner.sleep(deadlineMs ?? DEFAULT_DEADLINE_MS) : this.owner.wake(deadlineMs ?? DEFAULT_DEADLINE_MS);
        work.then(
          (status) => reply({ id, ok: true, ...status }),
          (error: unknown) => reply({ id, ok: false, code: (error as { code?: string }).code ?? 'E_OWNER', error: messageOf(error), state: this.owner.state }),
        );
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => this.clients.delete(socket));
  }
}
