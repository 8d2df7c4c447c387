import { timingSafeEqual } from 'node:crypto';
import type { Server } from 'node:http';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Detector } from '../detector/detector.js';
import type { Logger } from '../log.js';
import { statusReport, type DiscoveryReport } from './connections.js';
import { viewOf } from './instance-view.js';
import type { Metrics } from './metrics.js';
import { renderStatusPage } from './page.js';
import { TransitionLog } from './transition-log.js';

export interface StatusServerOptions {
  detector: Detector;
  metrics: Metrics;
  token: string | undefined;
  log: Logger;
  /** Refreshes idle times from the counters before answering (one map read). */
  refresh: () => Promise<void>;
  /** Nomad/Consul connections and allocations for `GET /api/status` (agent/status/connections.ts). */
  discovery?: () => DiscoveryReport | undefined;
}

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

  app.get('/', async (_req, res) => {
    await options.refresh().catch(() => undefined);
    res.type('html').send(
      renderStatusPage({
        instances: detector.instances().map((i) => viewOf(detector, i)),
        status: statusReport(detector, options.discovery?.()),
        transitions: transitions.after(0),
      }),
    );
  });

  app.get('/api/transitions', (req, res) => {
    const after = Number(req.query.after ?? 0);
    res.json(transitions.after(Number.isFinite(after) ? after : 0));
  });

  app.get('/api/instances', async (_req, res) => {
    await options.refresh().catch(() => undefined);
    res.json(detector.instances().map((i) => viewOf(detector, i)));
  });

  app.get('/api/status', (_req, res) => {
    res.json(statusReport(detector, options.discovery?.()));
  });

  app.get('/api/instances/:id', async (req, res) => {
    const instance = detector.get(req.params.id);
    if (!instance) {
      res.status(404).json({ error: `no instance ${JSON.stringify(req.params.id)}` });
      return;
    }
    await options.refresh().catch(() => undefined);
    res.json(viewOf(detector, instance));
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
      res.status(slept ? 200 : 409).json(slept ? viewOf(detector, instance) : { error: `instance is ${instance.state}, not running`, instance: viewOf(detector, instance) });
    } else if (action === 'wake') {
      await detector.wake(instance, 'requested by operator');
      res.status(instance.state === 'failed' ? 502 : 200).json(viewOf(detector, instance));
    } else {
      res.status(404).json({ error: `unknown action ${JSON.stringify(action)} (sleep, wake)` });
    }
  });

  app.get('/metrics', async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
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
