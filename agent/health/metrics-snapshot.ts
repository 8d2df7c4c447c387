import http from 'node:http';
import { messageOf } from '../shared/errors.js';

/** What an app's metrics path answered just before it slept: served to observers while it sleeps. */
export type MetricsSnapshot =
  | { kind: 'body'; body: Buffer; contentType: string; atMs: number }
  | { kind: 'failed'; reason: string; atMs: number };

/**
 * Local ports the agent fetches from: the observers' mark chain marks them (owner: the agent's
 * uid), so the fetch, a few packets into a pausing instance, neither counts nor wakes it. Below
 * the kernel's ephemeral range (32768-60999 by default), so no other connection is given one;
 * several, so a port whose last connection lingers (TIME_WAIT) is skipped for the next.
 */
export const FETCH_PORTS = { first: 1000, last: 1015 } as const;

const MAX_BODY = 8 * 1024 * 1024;

let nextPort: number = FETCH_PORTS.first;

/** GET `path` from `host:port` (the instance's own address) within `timeoutMs`, from one of FETCH_PORTS. */
export async function fetchMetrics(host: string, port: number, path: string, timeoutMs: number): Promise<MetricsSnapshot> {
  let lastError = '';
  for (let attempt = 0; attempt <= FETCH_PORTS.last - FETCH_PORTS.first; attempt++) {
    const localPort = nextPort;
    nextPort = nextPort === FETCH_PORTS.last ? FETCH_PORTS.first : nextPort + 1;
    try {
      return await fetchFrom(host, port, path, timeoutMs, localPort);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      lastError = messageOf(error);
      if (code !== 'EADDRINUSE' && code !== 'EADDRNOTAVAIL') break;
    }
  }
  return { kind: 'failed', reason: `GET ${path} failed: ${lastError}`, atMs: Date.now() };
}

function fetchFrom(host: string, port: number, path: string, timeoutMs: number, localPort: number): Promise<MetricsSnapshot> {
  return new Promise((resolve, reject) => {
    // Connection: close lets the app close first, so the lingering TIME_WAIT is on its side.
    const req = http.get({ host, port, path, localPort, agent: false, timeout: timeoutMs, headers: { connection: 'close', accept: 'text/plain;version=0.0.4;q=1,*/*;q=0.1' } }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BODY) req.destroy(new Error(`the body is over ${MAX_BODY} bytes`));
        else chunks.push(chunk);
      });
      res.on('end', () => {
        if (res.statusCode !== 200) resolve({ kind: 'failed', reason: `GET ${path} answered ${res.statusCode}`, atMs: Date.now() });
        else resolve({ kind: 'body', body: Buffer.concat(chunks), contentType: res.headers['content-type'] ?? 'text/plain; version=0.0.4; charset=utf-8', atMs: Date.now() });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}
