import type { Readable } from 'node:stream';
import { messageOf } from '../shared/errors.js';
import { summarizeIssues } from '../shared/zod-issues.js';
import { nextBackoff, delay, type BackoffOptions } from './backoff.js';
import { JsonValueSplitter } from './json-value-splitter.js';
import { NomadError, type NomadClient } from '../nomad/nomad-client.js';
import { allocationSchema, eventFrameSchema, eventSchema, type NomadAllocation } from '../nomad/nomad-schemas.js';

/*
 * Nomad's event stream for the Allocation topic, kept open across drops.
 *
 * Facts this relies on (Nomad source: command/agent/event_endpoint.go,
 * nomad/stream/event_buffer.go, nomad/state/events.go):
 * - `index=N` starts at the buffered frame with Index >= N (inclusive), or at
 *   the oldest buffered frame when N is older; so a reconnect asks for
 *   lastIndex + 1, and frames at or below lastIndex are skipped in case the
 *   server replays its newest frame.
 * - `{}` is a heartbeat, sent first on every accepted subscription and then
 *   every 30 s (nomad/stream/ndjson.go NewJsonStream); frames carry `Index`
 *   and `Events`, each written with a trailing newline.
 * - Since Nomad 1.11.2 the HTTP handler writes `200 OK` before the RPC checks
 *   the token (command/agent/event_endpoint.go hijacks the connection and
 *   writes the status first; nomad/event_endpoint.go then answers 403 into a
 *   connection that can no longer carry it). A refused subscription is a
 *   200 whose body ends before its first heartbeat. So a stream that ends
 *   without a single value, `refusedAfter` times in a row, is thrown as
 *   E_NOMAD_STREAM_REFUSED, as a 4xx is: the caller falls back.
 * - Nomad's broker keeps ~100 events (nomad/config.go EventBufferSize), a
 *   resume from an evicted index silently starts at the oldest one kept
 *   (nomad/stream/event_buffer.go), and a leader change or snapshot restore
 *   starts a new broker: events can be lost across any reconnect. Every
 *   accepted connection (the first too) therefore yields a `reconnected`
 *   frame first (with `markConnections`), so the caller can re-list and
 *   reconcile.
 * - Allocation payloads come without their `Job` (stripped to keep events
 *   small): fetch the allocation or job when the job is needed.
 * - Allocation events carry FilterKeys [JobID, DeploymentID], not the node:
 *   filter by `NodeID` on this side.
 */

export interface AllocationEvent {
  index: number;
  /** AllocationUpdated, AllocationUpdateDesiredStatus, PlanResult, … */
  type: string;
  allocation: NomadAllocation;
}

export interface AllocationFrame {
  index: number;
  events: AllocationEvent[];
  /** A marker (no events): the stream was (re-)established and events before it may be lost. */
  reconnected?: boolean;
}

export interface AllocationEventOptions extends BackoffOptions {
  /** First index wanted, e.g. the X-Nomad-Index of an initial list plus one. 0 replays Nomad's buffer. */
  index?: number;
  /** "*" for every namespace the token can read; defaults to the client's namespace. */
  namespace?: string;
  signal?: AbortSignal;
  /** No byte (frame or heartbeat) for this long means the connection is dead: reconnect. */
  heartbeatTimeoutMs?: number;
  /** Connection failures and malformed frames: reported, then survived. */
  onError?: (error: NomadError) => void;
  /** Each accepted (re)connection (its first heartbeat arrived), with the index it resumes from. */
  onConnect?: (fromIndex: number) => void;
  /** Yield a `reconnected` marker frame at the start of every accepted connection. */
  markConnections?: boolean;
  /** A stream that ends this many times in a row before its first heartbeat is refused (default 3). */
  refusedAfter?: number;
}

/**
 * Yields allocation frames in index order until `signal` aborts. Drops,
 * timeouts and 5xx answers reconnect with backoff from the last index seen.
 * A 4xx answer (bad token, stream not available) is not retried: it is
 * thrown, so the caller can fall back to blocking queries.
 */
export async function* allocationEvents(client: NomadClient, options: AllocationEventOptions = {}): AsyncGenerator<AllocationFrame> {
  const heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? 65_000;
  const report = (error: NomadError) => options.onError?.(error);
  let lastIndex = Math.max((options.index ?? 0) - 1, 0);
  let fromIndex = options.index ?? 0;
  let backoffMs = 0;
  let silentEnds = 0;
  while (!options.signal?.aborted) {
    const connection = new AbortController();
    const abortConnection = () => connection.abort();
    options.signal?.addEventListener('abort', abortConnection, { once: true });
    const queue: AllocationFrame[] = [];
    let wake: (() => void) | undefined;
    let ended = false;
    let failure: NomadError | undefined;
    let watchdog: NodeJS.Timeout | undefined;
    let sawValue = false;
    let answered200 = false;
    const notify = () => {
      wake?.();
      wake = undefined;
    };
    const armWatchdog = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        failure = new NomadError('E_NOMAD_UNREACHABLE', `Nomad event stream sent nothing (not even a heartbeat) for ${heartbeatTimeoutMs} ms: reconnecting from index ${lastIndex + 1}`);
        connection.abort();
      }, heartbeatTimeoutMs);
      watchdog.unref();
    };
    const splitter = new JsonValueSplitter(
      (value) => {
        if (!sawValue) {
          sawValue = true;
          silentEnds = 0;
          backoffMs = 0;
          options.onConnect?.(fromIndex);
          if (options.markConnections) {
            // Even the first connection: events between the caller's list and now may be evicted already.
            queue.push({ index: lastIndex, events: [], reconnected: true });
            notify();
          }
        }
        const frame = toFrame(value, report);
        if (frame && frame.index > lastIndex) {
          lastIndex = frame.index;
          queue.push(frame);
          notify();
        }
      },
      (text, error) => report(new NomadError('E_NOMAD_RESPONSE', `Nomad event stream sent a malformed frame (${error.message}): ${JSON.stringify(text)}`, { cause: error })),
    );

    try {
      armWatchdog();
      const response = await client.http.get<Readable>('/v1/event/stream', {
        params: client.params({ topic: 'Allocation', index: fromIndex, namespace: options.namespace ?? client.namespace }),
        responseType: 'stream',
        // The stream never completes: liveness is the watchdog's job.
        timeout: 0,
        signal: connection.signal,
      });
      if (response.status < 200 || response.status >= 300) {
        const body = await readSome(response.data);
        const error = new NomadError('E_NOMAD_HTTP', `Nomad GET /v1/event/stream failed with HTTP ${response.status}: ${body || '(empty body)'}`, { status: response.status });
        if (response.status >= 400 && response.status < 500 && response.status !== 429) throw error;
        failure = error;
      } else {
        answered200 = true;
        const stream = response.data;
        stream.setEncoding('utf8');
        stream.on('data', (chunk: string) => {
          armWatchdog();
          splitter.push(chunk);
        });
        const finish = () => {
          ended = true;
          notify();
        };
        stream.on('end', finish);
        stream.on('close', finish);
        stream.on('error', (error) => {
          failure ??= new NomadError('E_NOMAD_UNREACHABLE', `Nomad event stream dropped: ${messageOf(error)}`, { cause: error });
          ended = true;
          notify();
        });
        while (true) {
          const frame = queue.shift();
          if (frame) {
            yield frame;
            continue;
          }
          if (ended || options.signal?.aborted) break;
          await new Promise<void>((resolve) => (wake = resolve));
        }
        failure ??= new NomadError('E_NOMAD_UNREACHABLE', `Nomad event stream closed by the server: reconnecting from index ${lastIndex + 1}`);
      }
    } catch (error) {
      if (error instanceof NomadError) throw error;
      if (!options.signal?.aborted) {
        failure ??= new NomadError('E_NOMAD_UNREACHABLE', `Nomad at ${client.address} is unreachable (GET /v1/event/stream): ${messageOf(error)}`, { cause: error });
      }
    } finally {
      clearTimeout(watchdog);
      options.signal?.removeEventListener('abort', abortConnection);
      connection.abort();
      splitter.reset();
    }
    if (options.signal?.aborted) return;
    if (answered200 && !sawValue) {
      silentEnds++;
      const refusedAfter = options.refusedAfter ?? 3;
      if (silentEnds >= refusedAfter) {
        throw new NomadError(
          'E_NOMAD_STREAM_REFUSED',
          `Nomad's event stream answered 200 and closed before its first heartbeat ${silentEnds} times in a row: Nomad ≥ 1.11.2 refuses a subscription that way (it checks the token after the 200), so the token cannot read the Allocation topic in every namespace asked for (namespace=*: read-job in all of them)`,
          { status: 200 },
        );
      }
      failure = new NomadError('E_NOMAD_UNREACHABLE', `Nomad event stream closed before its first heartbeat (${silentEnds} of ${refusedAfter} before doze treats it as refused): reconnecting`);
    }
    if (failure) report(failure);
    fromIndex = lastIndex + 1;
    backoffMs = nextBackoff(backoffMs, options);
    await delay(backoffMs, options.signal);
  }
}

/** A validated frame, or undefined for heartbeats and frames that cannot be used. */
function toFrame(value: unknown, report: (error: NomadError) => void): AllocationFrame | undefined {
  const frame = eventFrameSchema.safeParse(value);
  if (!frame.success) {
    report(new NomadError('E_NOMAD_RESPONSE', `Nomad event stream sent an unexpected frame: ${summarizeIssues(frame.error)}`));
    return undefined;
  }
  const { Index, Events } = frame.data;
  if (Index === undefined && !Events?.length) return undefined; // heartbeat
  if (Index === undefined) {
    report(new NomadError('E_NOMAD_RESPONSE', 'Nomad event stream sent events without an Index'));
    return undefined;
  }
  const events: AllocationEvent[] = [];
  for (const raw of Events ?? []) {
    const event = eventSchema.safeParse(raw);
    if (!event.success) {
      report(new NomadError('E_NOMAD_RESPONSE', `Nomad event stream: an event at index ${Index} is malformed: ${summarizeIssues(event.error)}`));
      continue;
    }
    if (event.data.Topic !== 'Allocation') continue;
    const allocation = allocationSchema.safeParse(event.data.Payload.Allocation);
    if (!allocation.success) {
      report(new NomadError('E_NOMAD_RESPONSE', `Nomad event stream: ${event.data.Type} for allocation ${event.data.Key} at index ${Index} has an unexpected payload: ${summarizeIssues(allocation.error)}`));
      continue;
    }
    events.push({ index: event.data.Index, type: event.data.Type, allocation: allocation.data });
  }
  return { index: Index, events };
}

async function readSome(stream: Readable, limit = 2000): Promise<string> {
  let text = '';
  try {
    for await (const chunk of stream) {
      text += String(chunk);
      if (text.length >= limit) break;
    }
  } catch {
    // A body cut short still says something.
  }
  stream.destroy();
  return text.trim().slice(0, limit);
}
