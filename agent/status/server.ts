import { timingSafeEqual } from 'node:crypto';
import type { Server } from 'node:http';
import express, { type NextFunction, type Request, type Response } from 'express';
import { describeIssues } from '../shared/zod-issues.js';
import { messageOf } from '../shared/errors.js';
import type { AwakeReason } from '../detector/why-awake.js';
import { instanceSchema } from '../config/schema.js';
import type { Detector } from '../detector/detector.js';
import type { InstanceRegistry } from '../instances/registry.js';
import type { Logger } from '../shared/log.js';
import type { DiscoveryReport } from '../discovery/discovery-report.js';
import { statusReport } from './status-report.js';
import type { UpstreamVersions } from '../upstream-versions.js';
import { viewOf } from './instance-view.js';
import type { Metrics } from './metrics.js';
import { latencyDistribution } from './latency.js';
import { renderStatusPage } from './page.js';
import { TIMELINE_WINDOW_MS, TransitionLog } from './transition-log.js';
import { WakeLog } from './wake-log.js';

export interface StatusServerOptions {
  detector: Detector;
  metrics: Metrics;
  token: string | undefined;
  log: Logger;
  /** Nomad/Consul connections and allocations for `GET /api/status` (agent/discovery/discovery-report.ts). */
  discovery?: () => DiscoveryReport | undefined;
  /** The Nomad and Consul versions read at start (agent/upstream-versions.ts). */
  versions?: () => UpstreamVersions;
  /** The node interfaces host-port traffic is counted on now (EbpfSource.watchedHostInterfaces). */
  hostInterfaces?: () => string[];
  /** Instances registered at run time (PUT/DELETE /api/instances/{id}); without it (registrations.enabled off) those routes answer 404. */
  registry?: InstanceRegistry;
  /** Config `coldStartThreshold` (ms): instances whose first-response p99 over the day is above it are marked. */
  coldStartThresholdMs?: number;
}

const REGISTRATIONS_OFF = 'this agent takes no registrations: set "registrations": { "enabled": true } in its config (docs/security.md)';

function tokenMatches(header: string | undefined, token: string): boolean {
  const given = Buffer.from(header?.startsWith('Bearer ') ? header.slice(7) : '');
  const wanted = Buffer.from(token);
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}

export function createStatusApp(options: StatusServerOptions): express.Express {
  const { detector, metrics, token } = options;
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '16kb' }));

  const requireToken = (req: Request, res: Response, next: NextFunction) => {
    if (token && !tokenMatches(req.header('authorization'), token)) {
      res.status(401).set('WWW-Authenticate', 'Bearer').json({ error: 'a valid bearer token is required for actions' });
      return;
    }
    next();
  };

  const transitions = new TransitionLog(detector);
  const wakes = new WakeLog(detector);
  const latency = async () => ({ wake: await latencyDistribution(metrics.wakeSeconds), firstResponse: await latencyDistribution(metrics.firstResponseSeconds) });

  const memory = metrics.memory;
  const savings = metrics.savings;
  const view = (i: Parameters<typeof viewOf>[0], why?: Map<string, AwakeReason[]>) => viewOf(i, memory, { dryRunAll: detector.dryRunAll, why: why?.get(i.id), savings: savings.view(i), coldStartThresholdMs: options.coldStartThresholdMs });
  // Idle times refreshed and why each awake instance is awake: one counters and one connections read per request.
  const whyAwake = () => detector.whyAwake().catch((error) => {
    options.log.warn({ err: messageOf(error) }, 'why-awake: reading connections failed');
    return new Map<string, AwakeReason[]>();
  });
  app.get('/', async (_req, res) => {
    await memory.refresh();
    savings.measure();
    const why = await whyAwake();
    res.type('html').send(
      renderStatusPage({
        instances: detector.instances().map((i) => view(i, why)),
        status: statusReport(detector, options.discovery?.(), memory.node(), options.versions?.(), options.hostInterfaces?.(), savings.node()),
        transitions: transitions.after(0),
        wakes: wakes.list(),
        latency: await latency(),
        nowMs: Date.now(),
        windowMs: TIMELINE_WINDOW_MS,
      }),
    );
  });

  /** The latest wakes, each with its two phases (runtime resumed, first response). */
  app.get('/api/wakes', (_req, res) => {
    res.json(wakes.list());
  });

  /** Both wake-phase histograms, summed over instances (what the status page draws). */
  app.get('/api/wake-latency', async (_req, res) => {
    metrics.sync();
    res.json(await latency());
  });

  app.get('/api/transitions', (req, res) => {
    const after = Number(req.query.after ?? 0);
    res.json(transitions.after(Number.isFinite(after) ? after : 0));
  });

  app.get('/api/instances', async (_req, res) => {
    await memory.refresh();
    savings.measure();
    const why = await whyAwake();
    res.json(detector.instances().map((i) => view(i, why)));
  });

  app.get('/api/status', async (_req, res) => {
    await memory.refresh();
    savings.measure();
    res.json(statusReport(detector, options.discovery?.(), memory.node(), options.versions?.(), options.hostInterfaces?.(), savings.node()));
  });

  app.get('/api/instances/:id', async (req, res) => {
    const instance = detector.get(req.params.id);
    if (!instance) {
      res.status(404).json({ error: `no instance ${JSON.stringify(req.params.id)}` });
      return;
    }
    await memory.refresh();
    savings.measure();
    res.json(view(instance, await whyAwake()));
  });

  app.post('/api/instances/:id/:action', requireToken, async (req, res) => {
    const { id, action } = req.params as { id: string; action: string };
    const instance = detector.get(id);
    if (!instance) {
      res.status(404).json({ error: `no instance ${JSON.stringify(id)}` });
      return;
    }
    if (action === 'sleep') {
      const slept = await detector.sleepNow(id);
      res.status(slept ? 200 : 409).json(slept ? viewOf(instance) : { error: `instance is ${instance.state}, not running`, instance: viewOf(instance) });
    } else if (action === 'wake') {
      await detector.wake(instance, 'requested by operator');
      res.status(instance.state === 'failed' ? 502 : 200).json(viewOf(instance));
    } else {
      res.status(404).json({ error: `unknown action ${JSON.stringify(action)} (sleep, wake)` });
    }
  });

  // --- run-time registration (agent/instances/registry.ts; doze vm run --register) ---
  app.put('/api/instances/:id', requireToken, async (req, res) => {
    if (!options.registry) return void res.status(404).json({ error: REGISTRATIONS_OFF });
    const body: unknown = req.body;
    if (body === null || typeof body !== 'object' || Array.isArray(body)) return void res.status(400).json({ error: 'expected an instance as a JSON object' });
    const id = String(req.params.id);
    const raw = { ...(body as Record<string, unknown>), id: (body as { id?: unknown }).id ?? id };
    const parsed = instanceSchema.safeParse(raw);
    if (!parsed.success) {
      const fields = parsed.error.issues.map((issue) => ({ path: issue.path.join('.'), message: issue.message }));
      return void res.status(400).json({ error: `invalid instance:\n${describeIssues(parsed.error.issues, raw, instanceSchema)}`, fields });
    }
    if (parsed.data.id !== id) {
      return void res.status(400).json({ error: `the body's id ${JSON.stringify(parsed.data.id)} is not the path's ${JSON.stringify(id)}`, fields: [{ path: 'id', message: 'must match the path' }] });
    }
    const result = await options.registry.register(parsed.data);
    if ('error' in result) return void res.status(result.status).json({ error: result.error });
    res.status(result.status).json(viewOf(result.instance));
  });

  app.delete('/api/instances/:id', requireToken, async (req, res) => {
    if (!options.registry) return void res.status(404).json({ error: REGISTRATIONS_OFF });
    const result = await options.registry.unregister(String(req.params.id));
    if ('error' in result) return void res.status(result.status).json({ error: result.error });
    res.json({ ...viewOf(result.instance), removed: true });
  });
  // --- end run-time registration ---

  app.get('/metrics', async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.text());
  });

  app.get('/healthz', (_req, res) => {
    res.json({ ok: true });
  });

  app.use((err: Error & { status?: number; type?: string }, _req: Request, res: Response, _next: NextFunction) => {
    const status = err.status ?? 500;
    if (status >= 500) options.log.error({ err: err.message }, 'status API error');
    res.status(status).json({ error: err.type === 'entity.too.large' ? 'request body too large' : err.message });
  });
  return app;
}

export function listen(app: express.Express, hostPort: string): Promise<Server> {
  const [host, port] = [hostPort.slice(0, hostPort.lastIndexOf(':')), Number(hostPort.slice(hostPort.lastIndexOf(':') + 1))];
  return new Promise((resolve, reject) => {
    const server = app.listen(port, host);
    server.once('listening', () => resolve(server));
    server.once('error', reject);
  });
}
