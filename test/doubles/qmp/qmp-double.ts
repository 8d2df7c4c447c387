import type { Teardown } from '../../helpers/teardown.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface QmpCommand {
  execute: string;
  arguments?: Record<string, unknown>;
  id?: unknown;
}

/** What the double answers to one command: a return value, a QMP error, silence, or a hang-up. */
export type QmpReply = { return: unknown } | { error: { class: string; desc: string } } | 'silence' | 'hangup';

/**
 * A protocol-faithful QMP server on a unix socket (QEMU docs/interop/qmp-spec.rst):
 * greets, refuses commands before `qmp_capabilities` the way QEMU does, answers with
 * the command's id, CRLF-terminated, and serves one client at a time like a QEMU monitor
 * (a second client gets no greeting until the first leaves).
 */
export class QmpDouble {
  readonly commands: QmpCommand[] = [];
  readonly connections: number[] = [];
  /** Run state reported by query-status; stop/cont change it. */
  status = 'running';
  handlers = new Map<string, (command: QmpCommand) => QmpReply | Promise<QmpReply>>();
  private current: Socket | undefined;
  private readonly waiting: Socket[] = [];

  private constructor(private readonly server: Server, readonly path: string) {}

  static async start(t: Teardown): Promise<QmpDouble> {
    const dir = await mkdtemp(join(tmpdir(), 'dz-qmp-'));
    const path = join(dir, 'qmp.sock');
    const server = createServer();
    const double = new QmpDouble(server, path);
    server.on('connection', (socket) => double.onConnection(socket));
    await new Promise<void>((resolve) => server.listen(path, resolve));
    t.teardown(async () => {
      await double.stop();
      await rm(dir, { recursive: true, force: true });
    });
    return double;
  }

  event(name: string, data: Record<string, unknown> = {}): void {
    const now = Date.now();
    this.current?.write(`${JSON.stringify({ event: name, data, timestamp: { seconds: Math.floor(now / 1000), microseconds: (now % 1000) * 1000 } })}\r\n`);
  }

  /** Drops the current client, as a QEMU that exits does. */
  hangUp(): void {
    this.current?.destroy();
  }

  async stop(): Promise<void> {
    for (const s of [this.current, ...this.waiting]) s?.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(socket: Socket): void {
    socket.on('error', () => undefined);
    if (this.current) {
      this.waiting.push(socket);
      socket.once('close', () => {
        const at = this.waiting.indexOf(socket);
        if (at >= 0) this.waiting.splice(at, 1);
      });
      return;
    }
    this.serve(socket);
  }

  private serve(socket: Socket): void {
    this.current = socket;
    this.connections.push(Date.now());
    let negotiated = false;
    let buffer = '';
    const send = (message: unknown) => socket.write(`${JSON.stringify(message)}\r\n`);
    socket.on('close', () => {
      if (this.current !== socket) return;
      this.current = undefined;
      const next = this.waiting.shift();
      if (next) this.serve(next);
    });
    socket.setEncoding('utf8').on('data', async (chunk: string) => {
      buffer += chunk;
      for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        const command = JSON.parse(line) as QmpCommand;
        this.commands.push(command);
        const withId = (reply: object) => (command.id === undefined ? reply : { ...reply, id: command.id });
        if (command.execute === 'qmp_capabilities') {
          if (negotiated) send(withId({ error: { class: 'CommandNotFound', desc: "Capabilities negotiation is already complete, command 'qmp_capabilities' ignored" } }));
          else send(withId({ return: {} }));
          negotiated = true;
          continue;
        }
        if (!negotiated) {
          send(withId({ error: { class: 'CommandNotFound', desc: `Expecting capabilities negotiation with 'qmp_capabilities' before command '${command.execute}'` } }));
          continue;
        }
        const reply = await this.reply(command);
        if (reply === 'silence') continue;
        if (reply === 'hangup') {
          socket.destroy();
          return;
        }
        send(withId(reply));
      }
    });
    send({ QMP: { version: { qemu: { micro: 0, minor: 2, major: 7 }, package: 'doze-double' }, capabilities: ['oob'] } });
  }

  private async reply(command: QmpCommand): Promise<QmpReply> {
    const handler = this.handlers.get(command.execute);
    if (handler) return handler(command);
    switch (command.execute) {
      case 'stop':
        if (this.status === 'running') {
          this.status = 'paused';
          this.event('STOP');
        }
        return { return: {} };
      case 'cont':
        if (this.status !== 'running') {
          this.status = 'running';
          this.event('RESUME');
        }
        return { return: {} };
      case 'query-status':
        return { return: { status: this.status, singlestep: false, running: this.status === 'running' } };
      default:
        return { error: { class: 'CommandNotFound', desc: `The command ${command.execute} has not been found` } };
    }
  }
}
