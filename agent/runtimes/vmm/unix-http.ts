import http from 'node:http';
import { z } from 'zod';
import { DeadlineError, upstreamErrorClass } from '../../shared/errors.js';
import { summarizeIssues } from '../../shared/zod-issues.js';
import type { UpstreamErrorCode } from '../../shared/error-codes.js';

/*
 * One JSON request over a VMM's unix API socket (Cloud Hypervisor, Firecracker),
 * with a deadline. A connection per call: both VMMs serve their API from a
 * single thread, and a call is rare (a sleep, a wake), so pooling buys nothing
 * and a stale pooled connection to a restarted VMM would cost a failed call.
 */

export interface UnixHttpResponse {
  status: number;
  /** The body as text ('' for 204). */
  text: string;
}

/** E_VMM_UNREACHABLE, E_VMM_HTTP, E_VMM_RESPONSE, E_VMM_STATE: their meanings are in shared/error-codes.ts. */
export type VmmErrorCode = UpstreamErrorCode<'E_VMM_'>;

export class VmmError extends upstreamErrorClass<VmmErrorCode>('VmmError') {}

export async function unixRequest(socketPath: string, method: string, path: string, body: unknown, deadlineMs: number): Promise<UnixHttpResponse> {
  const what = `${method} ${path} on ${socketPath}`;
  if (deadlineMs <= 0) throw new DeadlineError(what, deadlineMs);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise<UnixHttpResponse>((resolve, reject) => {
    const headers: Record<string, string | number> = { Accept: 'application/json' };
    if (payload !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(payload);
    }
    const req = http.request({ socketPath, method, path, headers, agent: false });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new DeadlineError(what, deadlineMs));
    }, deadlineMs);
    timer.unref();
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', (error) => {
        clearTimeout(timer);
        reject(new VmmError('E_VMM_UNREACHABLE', `${what}: the answer was cut off: ${error.message}`, { cause: error }));
      });
    });
    req.on('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new VmmError('E_VMM_UNREACHABLE', `${what}: ${error.code ?? error.message}`, { cause: error }));
    });
    req.end(payload);
  });
}

/** Parses and validates a 2xx JSON answer. */
export function jsonBody<T>(response: UnixHttpResponse, what: string, schema: z.ZodType<T>): T {
  let raw: unknown;
  try {
    raw = JSON.parse(response.text);
  } catch (error) {
    throw new VmmError('E_VMM_RESPONSE', `${what} answered with a body that is not JSON: ${JSON.stringify(response.text.slice(0, 120))}`, { cause: error, status: response.status });
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    throw new VmmError('E_VMM_RESPONSE', `${what} answered with an unexpected body: ${summarizeIssues(parsed.error)}`, { cause: parsed.error, status: response.status });
  }
  return parsed.data;
}

export function fileUrl(dir: string): string {
  // Cloud Hypervisor parses the URL and takes its path: absolute paths only, no host part.
  return `file://${dir}`;
}
