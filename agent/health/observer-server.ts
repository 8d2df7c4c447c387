import http from 'node:http';
import type net from 'node:net';
import { DozeError } from '../shared/errors.js';
import type { MetricsSnapshot } from './metrics-snapshot.js';

/*
 * While an instance sleeps, its observers' connections (Prometheus, uptime probes: config
 * observers.fromSources) are redirected here, as checks are to the stub: every HTTP request gets
 * the app's own metrics as it served them just before it slept, with their content type, so a
 * scrape reads `up` 1 and the counters as they were (the truth for an idle app). Without a body
 * (the fetch failed) a 503 says why, at once: an observer never hangs on a sleeper.
 */

interface Listener {
  servers: Map<string, http.Server>;
  sockets: Set<net.Socket>;
  snapshot: MetricsSnapshot | undefined;
}

export class ObserverServer {
  private readonly listeners = new Map<string, Listener>();
  private readonly served = new Map<string, number>();

  constructor(private readonly onServed?: (instanceId: string) => void) {}

  /** The body observers of `instanceId` get from now on. */
  setSnapshot(instanceId: string, snapshot: MetricsSnapshot): void {
    this.entry(instanceId).snapshot = snapshot;
  }

  snapshot(instanceId: string): MetricsSnapshot | undefined {
    return this.listeners.get(instanceId)?.snapshot;
  }

  /** Listens for the instance on `host` (one listener per address family it is reached on); resolves with the port. */
  async open(instanceId: string, host: string): Promise<number> {
    const entry = this.entry(instanceId);
    const existing = entry.servers.get(host);
    if (existing?.listening) return (existing.address() as net.AddressInfo).port;
    const server = http.createServer((req, res) => this.answer(instanceId, entry, req, res));
    server.keepAliveTimeout = 5000;
    server.on('connection', (socket) => {
      entry.sockets.add(socket);
      socket.once('close', () => entry.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) => reject(new DozeError('E_OBSERVER_LISTEN', `observer listener for ${instanceId} cannot listen on ${host}: ${error.message}`, { cause: error })));
      server.listen({ host, port: 0 }, () => resolve());
    });
    entry.servers.set(host, server);
    return (server.address() as net.AddressInfo).port;
  }

  /**
   * The instance is awake: connections still open here (a scraper's keep-alive) are cut, so its
   * next scrape reaches the app, not the picture of it asleep. The listeners stay for the next sleep.
   */
  closeConnections(instanceId: string): void {
    const entry = this.listeners.get(instanceId);
    if (!entry) return;
    for (const socket of entry.sockets) socket.destroy();
    entry.sockets.clear();
  }

  servedCount(instanceId: string): number {
    return this.served.get(instanceId) ?? 0;
  }

  async close(instanceId: string): Promise<void> {
    const entry = this.listeners.get(instanceId);
    if (!entry) return;
    this.listeners.delete(instanceId);
    this.served.delete(instanceId);
    for (const socket of entry.sockets) socket.destroy();
    await Promise.all([...entry.servers.values()].map((server) => new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()))));
  }

  async stop(): Promise<void> {
    await Promise.all([...this.listeners.keys()].map((id) => this.close(id)));
  }

  private entry(instanceId: string): Listener {
    let entry = this.listeners.get(instanceId);
    if (!entry) {
      entry = { servers: new Map(), sockets: new Set(), snapshot: undefined };
      this.listeners.set(instanceId, entry);
    }
    return entry;
  }

  private answer(instanceId: string, entry: Listener, req: http.IncomingMessage, res: http.ServerResponse): void {
    req.resume();
    const snapshot = entry.snapshot;
    this.served.set(instanceId, (this.served.get(instanceId) ?? 0) + 1);
    this.onServed?.(instanceId);
    if (snapshot?.kind === 'body') {
      res.writeHead(200, { 'content-type': snapshot.contentType, 'content-length': snapshot.body.length, 'x-doze-asleep': instanceId });
      res.end(req.method === 'HEAD' ? undefined : snapshot.body);
      return;
    }
    const why = snapshot ? snapshot.reason : 'no metrics were fetched before it fell asleep';
    const text = `doze: ${instanceId} is asleep and has no cached metrics (${why}); a request that is not from an observer wakes it\n`;
    res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text), 'retry-after': '15' });
    res.end(text);
  }
}
