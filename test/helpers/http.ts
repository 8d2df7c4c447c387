import http from 'node:http';
import net from 'node:net';

export interface HttpResult {
  status: number;
  body: string;
  ms: number;
}

/** One GET on a fresh connection (no keep-alive pool), with a hard deadline; optionally from a given local address. */
export function get(url: string, timeoutMs = 5000, agent: http.Agent | false = false, localAddress?: string): Promise<HttpResult> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, timeout: timeoutMs, ...(localAddress ? { localAddress } : {}) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - started }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** A loopback port nothing listens on (bound, then closed): connecting to it is refused. */
export function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
