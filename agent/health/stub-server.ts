/**
 * The health stub: answers the health checks of SLEEPING instances on their
 * behalf, so Consul keeps them passing and Nomad does not restart them.
 *
 * Addressing: one TCP listener per managed instance (`open(id)` → ephemeral
 * port on `host`, 127.0.0.1 by default). The netfilter redirect sends an
 * instance's marked check connections to its port, so the port alone says
 * which instance a check is for: no Host header or SNI guessing, and it works
 * for TCP checks, which carry no bytes at all.
 *
 * Honesty: `status(id)` is asked at request time and only `sleeping` earns a
 * positive answer. Per connection the first bytes are sniffed:
 *  - HTTP/2 client preface ("PRI * HTTP/2.0") → gRPC over h2c:
 *    grpc.health.v1.Health/Check answers SERVING (sleeping) or NOT_SERVING
 *    (failed); anything not managed gets grpc-status UNAVAILABLE.
 *  - anything else → HTTP/1.1: 200 with a body naming the instance while it
 *    sleeps, 503 naming the failure once failed, 503 otherwise.
 *  - no bytes, then close (Consul's TCP check closes at once), or no bytes
 *    for `tcpSniffMs` (Nomad's TCP check dials and never closes nor writes:
 *    client/serviceregistration/checks/client.go checkTCP) → a TCP check;
 *    the kernel's accept was the answer ("passes when the connect
 *    succeeds"). It is counted then, once; the socket is closed at the idle
 *    timeout.
 * TLS: a connection whose first byte is a TLS handshake record (0x16) is
 * terminated here, then sniffed again as above: HTTPS checks (Nomad's
 * `protocol = "https"`), gRPC with `grpc_use_tls` (ALPN h2), Consul's
 * H2PING (TLS by default) and TCP-with-TLS checks (a handshake, then
 * close). The certificate is the operator's for the instance (`tls(id)`),
 * else a self-signed one made at first need, which only checks that skip
 * verification accept (agent/nomad/check-needs.ts decides which those are).
 * HTTP/2 PINGs (H2PING checks, over TLS or h2c) are acknowledged by the h2
 * session and counted while the instance sleeps.
 * Connections: Consul's HTTP checks ask for `Connection: close` and get it; a
 * client that keeps connections alive (Nomad-provider checks pool them) may
 * keep its stub connection while the instance sleeps, and `closeConnections`
 * cuts every idle stub connection when the instance wakes (one with a check
 * under way is answered first, then closed), so the pool reconnects and meets
 * the redirect decision anew: no stub connection outlives the sleep it was
 * made for. h2 sessions get a GOAWAY after each call.
 *
 * Failure (`markFailed(id)`): a TCP check cannot be refused per connection:
 * the kernel has accepted before any code runs. So the instance's listener
 * is closed: new connections are refused, which Consul counts as critical
 * for TCP checks AND for HTTP and gRPC checks (a failed connect is a failed
 * request). Connections already open in that moment still get the honest
 * answer: 503 / NOT_SERVING. Should `status` report failed before markFailed
 * is called, the first connection that sees it closes the listener itself,
 * and `open` refuses to listen for a failed instance. An awake instance's
 * listener (`other`) gets no checks, as no redirect points at it; an HTTP
 * check accepted while it slept and answered after it woke gets 200 (it is up);
 * one accepted after the wake (redirected just before it) gets
 * 503 / UNAVAILABLE (a bare TCP connect has succeeded by then: not counted).
 *
 * Counting: `onAnswered(id, kind)` fires once per check the stub vouched for
 * (200, SERVING, or a TCP accept while sleeping): the source of
 * `checksAnswered` and `doze_health_checks_answered_total`. Refusals and 503s
 * are not counted: they are not answers on the instance's behalf.
 */
import net from 'node:net';
import http from 'node:http';
import http2 from 'node:http2';
import type tls from 'node:tls';
import { DozeError } from '../shared/errors.js';
import { selfSignedPair, type KeyPair } from './self-signed.js';

export type StubStatus = 'sleeping' | 'failed' | 'other';
export type CheckKind = 'http' | 'tcp' | 'grpc' | 'h2ping';

export interface StubServerOptions {
  /** Decides every answer at request time. */
  status: (instanceId: string) => StubStatus;
  /** Why an instance failed, for the 503 body (e.g. the detector's failure text). */
  failureReason?: (instanceId: string) => string | undefined;
  /** One call per check answered on a sleeping instance's behalf. */
  onAnswered?: (instanceId: string, kind: CheckKind) => void;
  /** Address the per-instance listeners bind to. */
  host?: string;
  /** A connection that sends nothing is closed after this long (Consul's check timeout is 10 s). */
  idleTimeoutMs?: number;
  /**
   * A connection that sends nothing for this long is a TCP check (HTTP and
   * gRPC checkers write their request right after connecting). Default 250 ms.
   */
  tcpSniffMs?: number;
  /** The operator's certificate for an instance's TLS checks; undefined: the stub's self-signed one. */
  tls?: (instanceId: string) => Promise<KeyPair | undefined> | KeyPair | undefined;
}

interface Listener {
  id: string;
  host: string;
  server: net.Server;
  port: number;
  /** More addresses it answers on (an IPv6 one beside the IPv4 one: openAlso), host -> server. */
  also: Map<string, net.Server>;
  sockets: Set<net.Socket>;
  http1: http.Server;
  h2: http2.Http2Server;
  /** Set by markFailed: overrides `status` for connections still open. */
  failure?: string;
  /** TLS checks' server, made at the first TLS connection (with the instance's certificate). */
  secure?: Promise<http2.Http2SecureServer>;
}

/** TLS record type of a ClientHello (RFC 8446 5.1). */
const TLS_HANDSHAKE = 0x16;
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check';
/** grpc.health.v1.HealthCheckResponse.ServingStatus */
const SERVING = 1;
const NOT_SERVING = 2;
/** gRPC status codes (grpc/doc/statuscodes.md). */
const GRPC_OK = 0;
const GRPC_UNIMPLEMENTED = 12;
const GRPC_UNAVAILABLE = 14;

/** Per connection: what it was accepted as, and whether it sits between requests. */
interface SocketState {
  acceptedWhile: StubStatus;
  /** Answered, kept alive, nothing asked since: closeConnections may cut it. */
  idle: boolean;
  /** closeConnections came while a request was under way: close once it is answered. */
  closing: boolean;
}

export class StubServer {
  private readonly listeners = new Map<string, Listener>();
  private readonly socketStates = new WeakMap<net.Socket, SocketState>();
  private readonly answered = new Map<string, number>();
  private readonly opening = new Map<string, Promise<number>>();
  readonly host: string;
  private readonly idleTimeoutMs: number;
  private readonly tcpSniffMs: number;
  private selfSigned: Promise<KeyPair> | undefined;

  constructor(private readonly options: StubServerOptions) {
    this.host = options.host ?? '127.0.0.1';
    this.idleTimeoutMs = options.idleTimeoutMs ?? 10_000;
    this.tcpSniffMs = options.tcpSniffMs ?? 250;
  }

  /**
   * Starts (or returns) the instance's listener; resolves with its port.
   * Refuses while `status` says failed (a listener would accept TCP checks);
   * after a recovery it replaces the listener markFailed closed.
   */
  async open(instanceId: string, host = this.host): Promise<number> {
    if (this.options.status(instanceId) === 'failed') {
      throw new DozeError('E_STUB_FAILED', `health stub will not listen for ${instanceId}: it is failed`);
    }
    // Concurrent opens share one listener.
    const pending = this.opening.get(instanceId);
    if (pending) return pending;
    const opened = this.listen(instanceId, host).finally(() => this.opening.delete(instanceId));
    this.opening.set(instanceId, opened);
    return opened;
  }

  private async listen(instanceId: string, host: string): Promise<number> {
    const existing = this.listeners.get(instanceId);
    if (existing && existing.failure === undefined && existing.host === host) return existing.port;
    if (existing) await this.close(instanceId);

    const entry = this.createListener(instanceId, host);
    await new Promise<void>((resolve, reject) => {
      entry.server.once('error', (error) =>
        reject(new DozeError('E_STUB_LISTEN', `health stub for ${instanceId} cannot listen on ${host}: ${error.message}`, { cause: error })));
      entry.server.listen({ host, port: 0 }, () => resolve());
    });
    const address = entry.server.address();
    if (address === null || typeof address === 'string') {
      entry.server.close();
      throw new DozeError('E_STUB_LISTEN', `health stub for ${instanceId} has no TCP address`);
    }
    entry.port = address.port;
    this.listeners.set(instanceId, entry);
    return entry.port;
  }

  /**
   * One more address for the instance's open listener (a dual-stack instance's checks arrive over
   * both families, and a DNAT keeps its family): same answers, same counts. Resolves with its port.
   */
  async openAlso(instanceId: string, host: string): Promise<number> {
    const entry = this.listeners.get(instanceId);
    if (!entry || entry.failure !== undefined) throw new DozeError('E_STUB_LISTEN', `health stub for ${instanceId} is not open`);
    const existing = entry.also.get(host);
    if (existing?.listening) return (existing.address() as net.AddressInfo).port;
    const server = net.createServer((socket) => this.accept(entry, socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) =>
        reject(new DozeError('E_STUB_LISTEN', `health stub for ${instanceId} cannot listen on ${host}: ${error.message}`, { cause: error })));
      server.listen({ host, port: 0 }, () => resolve());
    });
    entry.also.set(host, server);
    return (server.address() as net.AddressInfo).port;
  }

  /** The instance's stub port while its listener is open. */
  port(instanceId: string): number | undefined {
    const entry = this.listeners.get(instanceId);
    return entry && entry.failure === undefined ? entry.port : undefined;
  }

  /**
   * The instance's wake failed: stop accepting at once (new connections are
   * refused: critical for every check type) while connections already open
   * get 503 / NOT_SERVING naming `reason`.
   */
  markFailed(instanceId: string, reason?: string): void {
    const entry = this.listeners.get(instanceId);
    if (!entry) return;
    entry.failure = reason ?? this.options.failureReason?.(instanceId) ?? 'its wake failed';
    // Closing the handle is synchronous: the very next connect is refused.
    if (entry.server.listening) entry.server.close();
    for (const server of entry.also.values()) if (server.listening) server.close();
  }

  /** Removes the instance's listener and drops its open connections. */
  async close(instanceId: string): Promise<void> {
    const entry = this.listeners.get(instanceId);
    if (!entry) return;
    this.listeners.delete(instanceId);
    const closing = (server: net.Server) => new Promise<void>((resolve) => {
      if (!server.listening) return resolve();
      server.close(() => resolve());
    });
    const closed = Promise.all([entry.server, ...entry.also.values()].map(closing));
    for (const socket of entry.sockets) socket.destroy();
    entry.sockets.clear();
    // A server closed by markFailed has nothing left to wait for once its sockets are gone.
    await closed;
  }

  /** Connections open on the instance's listener now. */
  openConnections(instanceId: string): number {
    return this.listeners.get(instanceId)?.sockets.size ?? 0;
  }

  /** Checks answered on the instance's behalf so far. */
  answeredCount(instanceId: string): number {
    return this.answered.get(instanceId) ?? 0;
  }

  instanceIds(): string[] {
    return [...this.listeners.keys()];
  }

  async stop(): Promise<void> {
    await Promise.all([...this.listeners.keys()].map((id) => this.close(id)));
  }

  private createListener(id: string, host: string): Listener {
    const entry: Listener = {
      id,
      host,
      server: net.createServer(),
      port: 0,
      also: new Map(),
      sockets: new Set(),
      http1: http.createServer((req, res) => this.answerHttp(entry, req, res)),
      h2: http2.createServer(),
    };
    // Clients that never finish a request must not pin sockets.
    entry.http1.requestTimeout = this.idleTimeoutMs;
    entry.http1.headersTimeout = this.idleTimeoutMs;
    entry.h2.setTimeout(this.idleTimeoutMs);
    entry.h2.on('stream', (stream, headers) => this.answerGrpc(entry, stream, headers));
    // H2PING checks: the session acknowledges the PING itself; one answer per ping while asleep.
    entry.h2.on('session', (session) => session.on('ping', () => {
      if (this.statusOf(entry) === 'sleeping') this.count(entry, 'h2ping');
    }));
    entry.h2.on('sessionError', () => undefined);
    entry.server.on('connection', (socket) => this.accept(entry, socket));
    return entry;
  }

  private statusOf(entry: Listener): StubStatus {
    return entry.failure !== undefined ? 'failed' : this.options.status(entry.id);
  }

  private count(entry: Listener, kind: CheckKind): void {
    this.answered.set(entry.id, (this.answered.get(entry.id) ?? 0) + 1);
    this.options.onAnswered?.(entry.id, kind);
  }

  /** Sniffs the first bytes to tell TCP, TLS, HTTP/1.1 and HTTP/2 (gRPC, H2PING) checks apart. */
  private accept(entry: Listener, socket: net.Socket): void {
    entry.sockets.add(socket);
    socket.once('close', () => entry.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    // The kernel already accepted: what it answered is decided by the status now.
    const acceptedWhile = this.statusOf(entry);
    const state: SocketState = { acceptedWhile, idle: false, closing: false };
    this.socketStates.set(socket, state);
    // Failed without markFailed: stop accepting now, so the next TCP check is refused.
    if (acceptedWhile === 'failed' && entry.failure === undefined) this.markFailed(entry.id);
    let head = Buffer.alloc(0);

    const idle = setTimeout(() => socket.destroy(), this.idleTimeoutMs);
    idle.unref();
    // A bare connect is a TCP check, counted once: when it closes silently, or stays silent.
    let tcpCounted = false;
    const countTcp = () => {
      if (tcpCounted || head.length > 0 || acceptedWhile !== 'sleeping') return;
      tcpCounted = true;
      this.count(entry, 'tcp');
    };
    const silent = setTimeout(countTcp, this.tcpSniffMs);
    silent.unref();
    const stopSniffing = () => {
      clearTimeout(idle);
      clearTimeout(silent);
      socket.off('data', onData);
      socket.off('end', onEnd);
    };
    const onEnd = () => {
      stopSniffing();
      countTcp();
      socket.destroy();
    };
    const onData = (chunk: Buffer) => {
      state.idle = false;
      if (!tcpCounted) clearTimeout(silent);
      if (head.length === 0 && chunk[0] === TLS_HANDSHAKE) {
        stopSniffing();
        socket.pause();
        socket.unshift(chunk);
        void this.terminateTls(entry, socket);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const n = Math.min(head.length, PREFACE.length);
      const prefaceSoFar = head.subarray(0, n).equals(PREFACE.subarray(0, n));
      if (prefaceSoFar && head.length < PREFACE.length) return; // could still be h2: read on
      if (!prefaceSoFar) {
        const answered = this.answerPlainGet(entry, socket, head);
        if (answered === 'closed') {
          stopSniffing();
          return;
        }
        if (answered === 'kept') {
          head = Buffer.alloc(0); // the next request on this keep-alive connection
          state.idle = true;
          idle.refresh();
          return;
        }
      }
      stopSniffing();
      socket.pause();
      socket.unshift(head);
      if (prefaceSoFar) {
        // The h2 session reads what is buffered on the socket itself; resuming here would drop the preface.
        entry.h2.emit('connection', socket);
      } else {
        entry.http1.emit('connection', socket);
        socket.resume();
      }
    };
    socket.on('data', onData);
    socket.on('end', onEnd);
  }

  /**
   * Hands a TLS connection (its ClientHello unshifted) to the instance's
   * secure server: node's h2 server with HTTP/1.1 allowed, so ALPN picks h2
   * (gRPC, H2PING) or HTTP/1.1 (HTTPS checks). A TLS connection that makes
   * no request and sends no PING (a TCP check with TLS) counts as tcp.
   */
  private async terminateTls(entry: Listener, socket: net.Socket): Promise<void> {
    try {
      entry.secure ??= this.secureServer(entry);
      const server = await entry.secure;
      if (socket.destroyed) return;
      server.emit('connection', socket);
    } catch {
      socket.destroy();
    }
  }

  private async secureServer(entry: Listener): Promise<http2.Http2SecureServer> {
    const pair = (await this.options.tls?.(entry.id)) ?? (await (this.selfSigned ??= selfSignedPair()));
    const server = http2.createSecureServer({ key: pair.key, cert: pair.cert, ALPNProtocols: ['h2', 'http/1.1'] });
    server.setTimeout(this.idleTimeoutMs);
    server.on('stream', (stream, headers) => this.answerGrpc(entry, stream, headers));
    server.on('session', (session) => session.on('ping', () => {
      if (this.statusOf(entry) === 'sleeping') this.count(entry, 'h2ping');
    }));
    // HTTP/1.1 or no ALPN (HTTPS and TCP-with-TLS checks): the plaintext is sniffed like a plain connection.
    server.on('unknownProtocol', (secure: tls.TLSSocket) => this.accept(entry, secure));
    server.on('secureConnection', (secure: tls.TLSSocket) => {
      entry.sockets.add(secure);
      secure.once('close', () => entry.sockets.delete(secure));
    });
    server.on('tlsClientError', () => undefined);
    server.on('sessionError', () => undefined);
    return server;
  }

  /**
   * Fast path for what Consul and Nomad send: a complete bodiless GET/HEAD in
   * one segment, answered with prebuilt bytes instead of node:http's parser.
   * Consul sends `Connection: close` (a new connection per check) and gets it;
   * a pooling client (Nomad-provider checks) may keep the connection while the
   * instance sleeps: `closeConnections` cuts them all when it wakes, so the
   * pool reconnects to the instance itself. Anything else goes to node:http.
   */
  private answerPlainGet(entry: Listener, socket: net.Socket, head: Buffer): 'closed' | 'kept' | false {
    const end = head.indexOf('\r\n\r\n');
    if (end < 0 || end + 4 !== head.length) return false;
    const text = head.toString('latin1', 0, end);
    const match = /^(GET|HEAD) [^ ]+ HTTP\/1\.([01])\r\n/.exec(text);
    if (!match || /\r\n(content-length|transfer-encoding|expect):/i.test(text)) return false;
    const state = this.socketStates.get(socket);
    const [code, body] = this.httpAnswer(entry, state?.acceptedWhile);
    const keep = code === 200 && match[2] === '1' && !/\r\nconnection:[^\r]*close/i.test(text) && !state?.closing;
    const reason = code === 200 ? 'OK' : 'Service Unavailable';
    const response =
      `HTTP/1.1 ${code} ${reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `cache-control: no-store\r\nconnection: ${keep ? 'keep-alive' : 'close'}\r\n\r\n${match[1] === 'HEAD' ? '' : body}`;
    if (keep) socket.write(response);
    else socket.end(response);
    if (code === 200) this.count(entry, 'http');
    return keep ? 'kept' : 'closed';
  }

  /**
   * The instance is awake again: no stub connection may outlive its sleep (kept-alive ones
   * included). A connection between requests is cut now; one whose check is under way is
   * answered first, then closed: cutting it reset a Consul check that had reached the stub
   * just before the wake (found by bench/soak.ts: 3 of 1,210 checks critical).
   */
  closeConnections(instanceId: string): void {
    const entry = this.listeners.get(instanceId);
    if (!entry) return;
    for (const socket of entry.sockets) {
      const state = this.socketStates.get(socket);
      if (!state || state.idle) socket.destroy();
      else state.closing = true;
    }
  }

  /**
   * `acceptedWhile`: a check that reached the stub while the instance slept and is answered
   * after it woke gets 200 too: the instance it vouched for is up, and running now.
   */
  private httpAnswer(entry: Listener, acceptedWhile?: StubStatus): [number, string] {
    const status = this.statusOf(entry);
    if (status === 'other' && acceptedWhile === 'sleeping') return [200, `doze: ${entry.id} has just woken; answering the check that reached it asleep\n`];
    return status === 'sleeping' ? [200, `doze: ${entry.id} is asleep; answering its health check\n`]
      : status === 'failed' ? [503, `doze: ${entry.id} failed: ${entry.failure ?? this.options.failureReason?.(entry.id) ?? 'its wake failed'}\n`]
      : [503, `doze: ${entry.id} is not managed by the stub\n`];
  }

  private answerHttp(entry: Listener, req: http.IncomingMessage, res: http.ServerResponse): void {
    const [code, body] = this.httpAnswer(entry, this.socketStates.get(req.socket)?.acceptedWhile);
    res.writeHead(code, {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      connection: 'close',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
    if (code === 200) this.count(entry, 'http');
  }

  private answerGrpc(entry: Listener, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', () => undefined);
    // One call per connection, like the stub's HTTP/1.1 answers.
    stream.once('close', () => {
      if (!stream.session?.closed) stream.session?.close();
    });
    if (headers[':method'] !== 'POST' || headers[':path'] !== HEALTH_CHECK_PATH) {
      return grpcTrailersOnly(stream, GRPC_UNIMPLEMENTED, `doze stub serves only ${HEALTH_CHECK_PATH}`);
    }
    // Drain the request (HealthCheckRequest{service}); the answer is instance-wide whatever the service name.
    stream.resume();
    stream.once('end', () => {
      if (stream.destroyed) return;
      const status = this.statusOf(entry);
      if (status === 'other') {
        return grpcTrailersOnly(stream, GRPC_UNAVAILABLE, `doze: ${entry.id} is not managed by the stub`);
      }
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': String(GRPC_OK) }));
      stream.end(grpcFrame(healthCheckResponse(status === 'sleeping' ? SERVING : NOT_SERVING)));
      if (status === 'sleeping') this.count(entry, 'grpc');
    });
  }
}

/** HealthCheckResponse { status = 1 (enum, varint) }: tag 0x08, then the value. */
function healthCheckResponse(status: number): Buffer {
  return Buffer.from([0x08, status]);
}

/** gRPC length-prefixed message: compressed flag (0), 4-byte big-endian length, payload. */
function grpcFrame(message: Buffer): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt8(0, 0);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  return frame;
}

/** An error answer with no message: status and grpc-status in one HEADERS frame. */
function grpcTrailersOnly(stream: http2.ServerHttp2Stream, code: number, message: string): void {
  if (stream.headersSent || stream.destroyed) return;
  stream.respond(
    { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(code), 'grpc-message': encodeURIComponent(message) },
    { endStream: true },
  );
}
