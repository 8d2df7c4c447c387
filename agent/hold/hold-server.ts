/**
 * Hold mode: takes the first connections to a sleeping instance (the hold
 * redirect DNATs them here), keeps them while the instance wakes, and relays
 * each to the instance once it serves, so no client waits for a SYN
 * retransmit (1 s on Linux). Bounded three ways: the redirect's connlimit
 * (maxHeld per instance; the excess takes the retry path), a deadline per
 * held connection, and a failed wake, which resets every held connection at
 * once instead of leaving it hanging.
 */
import net from 'node:net';
import { DozeError } from '../shared/errors.js';

export type HoldState = 'waiting' | 'serving' | 'failed';

export interface HoldServerOptions {
  /** Where the instance stands: hold while waiting, relay once serving, reset once failed. */
  state: (instanceId: string) => HoldState;
  /** The first held connection starts the wake (its SYN never reached the tc program). */
  onHeld: (instanceId: string) => void;
  /** Where to relay to once the instance serves. */
  upstream: (instanceId: string) => { host: string; port: number } | undefined;
  /** Deadline of a held connection, per instance. */
  holdTimeoutMs: (instanceId: string) => number;
  /** How many are held now, after every change (status page, metrics). */
  onHeldChange?: (instanceId: string, held: number) => void;
  /**
   * The instance's first answer on a relayed connection after a hold: from the first held
   * connection's accept to the first byte the instance sent back (process.hrtime clock, ns). In hold
   * mode no packet reaches the sleeper, so the tc program cannot time this wake's first response.
   */
  onFirstResponse?: (instanceId: string, heldAtNs: bigint, answeredAtNs: bigint) => void;
}

interface Listener {
  server: net.Server;
  host: string;
  port: number;
  /** More addresses it holds on (an IPv6 one beside the IPv4 one: openAlso), host -> server. */
  also: Map<string, net.Server>;
  held: Set<net.Socket>;
  peak: number;
  /** Set by release(): connections that were already on their way when the redirect came down are relayed at once. */
  released: boolean;
  /** When the first connection of this sleep was held, until the instance's first answer is timed. */
  firstHeldAtNs: bigint | undefined;
}

export class HoldServer {
  private readonly listeners = new Map<string, Listener>();

  constructor(private readonly options: HoldServerOptions) {}

  async open(instanceId: string, host: string): Promise<number> {
    const existing = this.listeners.get(instanceId);
    if (existing && existing.host === host) return existing.port;
    if (existing) await this.close(instanceId);
    const entry: Listener = { server: net.createServer((socket) => this.accept(instanceId, entry, socket)), host, port: 0, also: new Map(), held: new Set(), peak: 0, released: false, firstHeldAtNs: undefined };
    await new Promise<void>((resolve, reject) => {
      entry.server.once('error', (error) => reject(new DozeError('E_HOLD_LISTEN', `hold listener for ${instanceId} cannot listen on ${host}: ${error.message}`, { cause: error })));
      entry.server.listen({ host, port: 0, backlog: 1024 }, () => resolve());
    });
    entry.port = (entry.server.address() as net.AddressInfo).port;
    this.listeners.set(instanceId, entry);
    return entry.port;
  }

  /**
   * One more address for the instance's open listener (a dual-stack instance's IPv6 clients: a DNAT
   * keeps the family); held and relayed as the others. Resolves with its port.
   */
  async openAlso(instanceId: string, host: string): Promise<number> {
    const entry = this.listeners.get(instanceId);
    if (!entry) throw new DozeError('E_HOLD_LISTEN', `hold listener for ${instanceId} is not open`);
    const existing = entry.also.get(host);
    if (existing?.listening) return (existing.address() as net.AddressInfo).port;
    const server = net.createServer((socket) => this.accept(instanceId, entry, socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) => reject(new DozeError('E_HOLD_LISTEN', `hold listener for ${instanceId} cannot listen on ${host}: ${error.message}`, { cause: error })));
      server.listen({ host, port: 0, backlog: 1024 }, () => resolve());
    });
    entry.also.set(host, server);
    return (server.address() as net.AddressInfo).port;
  }

  /** Held right now, and the most held at once since the listener opened. */
  held(instanceId: string): { now: number; peak: number } {
    const entry = this.listeners.get(instanceId);
    return { now: entry?.held.size ?? 0, peak: entry?.peak ?? 0 };
  }

  /** A new sleep begins: hold again. */
  arm(instanceId: string): void {
    const entry = this.listeners.get(instanceId);
    if (!entry) return;
    entry.released = false;
    entry.firstHeldAtNs = undefined;
  }

  /** The instance serves: relay every held connection to it, and any that still arrives. */
  release(instanceId: string): void {
    const entry = this.listeners.get(instanceId);
    if (!entry) return;
    entry.released = true;
    for (const socket of [...entry.held]) this.relay(instanceId, entry, socket);
  }

  /** The wake failed: reset every held connection now. */
  fail(instanceId: string): void {
    const entry = this.listeners.get(instanceId);
    if (!entry) return;
    for (const socket of [...entry.held]) {
      entry.held.delete(socket);
      socket.resetAndDestroy();
    }
  }

  async close(instanceId: string): Promise<void> {
    const entry = this.listeners.get(instanceId);
    if (!entry) return;
    this.listeners.delete(instanceId);
    this.fail(instanceId);
    await Promise.all([entry.server, ...entry.also.values()].map((server) => new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()))));
  }

  async stop(): Promise<void> {
    await Promise.all([...this.listeners.keys()].map((id) => this.close(id)));
  }

  private accept(instanceId: string, entry: Listener, socket: net.Socket): void {
    socket.on('error', () => socket.destroy());
    const state = this.options.state(instanceId);
    if (state === 'failed') {
      socket.resetAndDestroy();
      return;
    }
    if (state === 'serving' || entry.released) {
      this.relay(instanceId, entry, socket);
      return;
    }
    socket.pause(); // keep the request bytes in the kernel until the instance can take them
    entry.firstHeldAtNs ??= process.hrtime.bigint();
    entry.held.add(socket);
    entry.peak = Math.max(entry.peak, entry.held.size);
    this.options.onHeldChange?.(instanceId, entry.held.size);
    const deadline = setTimeout(() => {
      if (entry.held.delete(socket)) socket.resetAndDestroy();
      this.options.onHeldChange?.(instanceId, entry.held.size);
    }, this.options.holdTimeoutMs(instanceId));
    deadline.unref();
    socket.once('close', () => {
      clearTimeout(deadline);
      entry.held.delete(socket);
      this.options.onHeldChange?.(instanceId, entry.held.size);
    });
    this.options.onHeld(instanceId);
  }

  private relay(instanceId: string, entry: Listener, socket: net.Socket): void {
    entry.held.delete(socket);
    this.options.onHeldChange?.(instanceId, entry.held.size);
    const target = this.options.upstream(instanceId);
    if (!target) {
      socket.resetAndDestroy();
      return;
    }
    const upstream = net.connect(target.port, target.host);
    upstream.on('error', () => {
      if (!socket.destroyed) socket.resetAndDestroy();
    });
    // pipe() carries each side's end to the other; only failures cut the other side short
    // (a destroy on a clean close would drop the answer still being written).
    socket.on('close', () => upstream.destroy());
    upstream.on('close', (hadError) => {
      if (hadError) socket.destroy();
    });
    upstream.once('connect', () => {
      upstream.once('data', () => {
        const heldAtNs = entry.firstHeldAtNs;
        if (heldAtNs === undefined) return;
        entry.firstHeldAtNs = undefined;
        this.options.onFirstResponse?.(instanceId, heldAtNs, process.hrtime.bigint());
      });
      socket.pipe(upstream);
      upstream.pipe(socket);
      socket.resume();
    });
  }
}
