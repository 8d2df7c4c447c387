// One probe of an HTTP, TCP or gRPC check, done the way Consul's agent does
// it (hashicorp/consul agent/checks/check.go and grpc.go). Plain JavaScript
// so probe-worker.mjs can run it under another uid without tsx; types are in
// probes.d.mts. Outputs mimic Consul's (Go error texts) closely, not exactly.
import net from 'node:net';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import tls from 'node:tls';
import zlib from 'node:zlib';

export const USER_AGENT = 'Consul Health Check';
export const ACCEPT = 'text/plain, text/*, */*';
export const DEFAULT_TIMEOUT_MS = 10_000; // Consul: 10 s when the check sets none
export const DEFAULT_OUTPUT_MAX = 4096; // Consul: DefaultBufSize
const MAX_REDIRECTS = 10; // Go's http.Client default policy

/** @param {import('./probes.d.mts').ProbeRequest} request */
export async function probe(request) {
  switch (request.kind) {
    case 'http': return probeHttp(request);
    case 'tcp': return probeTcp(request);
    case 'grpc': return probeGrpc(request);
    default: return { status: 'critical', output: `unknown probe kind ${String(request.kind)}` };
  }
}

/** "host:port" or "[v6]:port" → { host, port }. */
export function splitHostPort(address) {
  const match = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:]*):(\d+)$/.exec(address);
  if (!match) throw new Error(`address ${address}: missing port in address`);
  return { host: match[1] || '127.0.0.1', port: Number(match[2]) };
}

/** Go's net error texts: "dial tcp ADDR: connect: connection refused". */
function dialError(address, error) {
  const reasons = {
    ECONNREFUSED: 'connect: connection refused',
    EHOSTUNREACH: 'connect: no route to host',
    ENETUNREACH: 'connect: network is unreachable',
    ECONNRESET: 'read: connection reset by peer',
    ETIMEDOUT: 'i/o timeout',
    EADDRNOTAVAIL: 'bind: cannot assign requested address',
  };
  return `dial tcp ${address}: ${reasons[error?.code] ?? error?.message ?? String(error)}`;
}

/** Go's url.Error op: "Get", "Post", "Head"… */
function urlOp(method) {
  return method.charAt(0).toUpperCase() + method.slice(1).toLowerCase();
}

/**
 * Keep-alives off (every probe and every redirect hop is a new TCP connection,
 * Go sends "Connection: close"), Consul's User-Agent and Accept unless the
 * check sets them, Go's transparent gzip, redirects followed (up to 10) unless
 * disabled. 2xx passing, 429 warning, anything else or an error critical.
 * Output keeps the LAST outputMaxSize bytes of the body: Consul copies it into
 * a circular buffer (armon/circbuf), which retains the tail.
 */
async function probeHttp(request) {
  const method = (request.method || 'GET').toUpperCase();
  const timeoutMs = request.timeoutMs > 0 ? request.timeoutMs : DEFAULT_TIMEOUT_MS;
  const outputMax = request.outputMaxSize > 0 ? request.outputMaxSize : DEFAULT_OUTPUT_MAX;
  const headers = {};
  for (const [name, values] of Object.entries(request.header ?? {})) headers[name.toLowerCase()] = values;
  if (!headers['user-agent']) headers['user-agent'] = USER_AGENT;
  if (!headers.accept) headers.accept = ACCEPT;
  headers.connection = 'close';
  const gzip = !headers['accept-encoding'] && !headers.range && method !== 'HEAD';
  if (gzip) headers['accept-encoding'] = 'gzip';

  const deadline = Date.now() + timeoutMs;
  let url = request.url;
  let hopMethod = method;
  let body = request.body ?? '';
  const failed = (reason) => ({ status: 'critical', output: `${urlOp(method)} "${request.url}": ${reason}` });
  for (let hop = 0; ; hop++) {
    let response;
    try {
      response = await httpOnce(new URL(url), hopMethod, headers, body, deadline, outputMax, gzip, request.localAddress, request.tls);
    } catch (error) {
      return failed(error.message);
    }
    const location = response.headers.location;
    const redirect = [301, 302, 303, 307, 308].includes(response.statusCode) && location && !request.disableRedirects;
    if (redirect) {
      if (hop + 1 >= MAX_REDIRECTS) return failed(`stopped after ${MAX_REDIRECTS} redirects`);
      const next = new URL(location, url);
      if (next.host !== new URL(url).host) for (const h of ['authorization', 'cookie', 'www-authenticate']) delete headers[h];
      if (response.statusCode <= 303 && hopMethod !== 'HEAD') {
        hopMethod = 'GET';
        body = '';
      }
      url = next.href;
      continue;
    }
    const result = `HTTP ${method} ${request.url}: ${response.statusCode} ${response.statusMessage} Output: ${response.output}`;
    const code = response.statusCode;
    return { status: code >= 200 && code <= 299 ? 'passing' : code === 429 ? 'warning' : 'critical', output: result };
  }
}

/** TLS client options as Consul's agent TLS config gives them (ca_file, TLSSkipVerify, TLSServerName). */
function tlsOptions(host, probeTls) {
  const serverName = probeTls?.serverName || (net.isIP(host) ? undefined : host);
  return {
    rejectUnauthorized: !probeTls?.skipVerify,
    ...(probeTls?.caPem ? { ca: probeTls.caPem } : {}),
    ...(serverName ? { servername: serverName } : {}),
    // An IP in the URL is verified against the certificate's IP SANs, unless a server name is set.
    checkServerIdentity: (hostname, cert) => tls.checkServerIdentity(probeTls?.serverName || hostname, cert),
  };
}

function httpOnce(url, method, headers, body, deadline, outputMax, gzip, localAddress, probeTls) {
  return new Promise((resolve, reject) => {
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return reject(new Error(`unsupported protocol scheme "${url.protocol.replace(':', '')}"`));
    const secure = url.protocol === 'https:';
    const hopHeaders = { ...headers };
    const length = Buffer.byteLength(body);
    if (length > 0 || ['POST', 'PUT', 'PATCH'].includes(method)) hopHeaders['content-length'] = String(length);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const req = (secure ? https : http).request({
      host,
      port: url.port || (secure ? 443 : 80),
      path: `${url.pathname}${url.search}`,
      method,
      headers: hopHeaders,
      agent: false,
      localAddress,
      ...(secure ? tlsOptions(host, probeTls) : {}),
    });
    let headersSeen = false;
    const timer = setTimeout(() => {
      req.destroy(new Error(headersSeen
        ? 'context deadline exceeded (Client.Timeout or context cancellation while reading body)'
        : 'context deadline exceeded (Client.Timeout exceeded while awaiting headers)'));
    }, Math.max(0, deadline - Date.now()));
    req.on('error', (error) => {
      clearTimeout(timer);
      if (!headersSeen) reject(error.code ? new Error(dialError(`${url.hostname}:${url.port || 80}`, error)) : error);
    });
    req.on('response', (res) => {
      headersSeen = true;
      // Like circbuf: remember only the last outputMax bytes, but read everything.
      let tail = Buffer.alloc(0);
      const decoded = gzip && /gzip/i.test(String(res.headers['content-encoding'] ?? '')) ? res.pipe(zlib.createGunzip()) : res;
      const finish = () => {
        clearTimeout(timer);
        resolve({ statusCode: res.statusCode ?? 0, statusMessage: res.statusMessage ?? '', headers: res.headers, output: tail.toString('utf8') });
      };
      decoded.on('data', (chunk) => {
        tail = Buffer.concat([tail, chunk]);
        if (tail.length > outputMax) tail = tail.subarray(tail.length - outputMax);
      });
      // Consul only logs a body read error; the status code still decides.
      decoded.on('error', finish);
      res.on('error', finish);
      decoded.on('end', finish);
      res.on('aborted', finish);
    });
    req.end(body.length > 0 ? body : undefined);
  });
}

/** Connect within the timeout, then close: "TCP connect ADDR: Success". */
function probeTcp(request) {
  const timeoutMs = request.timeoutMs > 0 ? request.timeoutMs : DEFAULT_TIMEOUT_MS;
  return new Promise((resolve) => {
    let target;
    try {
      target = splitHostPort(request.address);
    } catch (error) {
      return resolve({ status: 'critical', output: error.message });
    }
    const socket = net.connect({ host: target.host, port: target.port, localAddress: request.localAddress });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ status: 'critical', output: dialError(request.address, { code: 'ETIMEDOUT' }) });
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ status: 'passing', output: `TCP connect ${request.address}: Success` });
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      resolve({ status: 'critical', output: dialError(request.address, error) });
    });
  });
}

const GRPC_CODES = ['OK', 'Canceled', 'Unknown', 'InvalidArgument', 'DeadlineExceeded', 'NotFound', 'AlreadyExists',
  'PermissionDenied', 'ResourceExhausted', 'FailedPrecondition', 'Aborted', 'OutOfRange', 'Unimplemented', 'Internal',
  'Unavailable', 'DataLoss', 'Unauthenticated'];
const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];

/**
 * grpc.health.v1.Health/Check over h2c on a new connection per probe
 * ("host:port/service" → HealthCheckRequest{service}); passing only on SERVING.
 */
function probeGrpc(request) {
  const timeoutMs = request.timeoutMs > 0 ? request.timeoutMs : DEFAULT_TIMEOUT_MS;
  const slash = request.target.indexOf('/');
  const address = slash < 0 ? request.target : request.target.slice(0, slash);
  const service = slash < 0 ? '' : request.target.slice(slash + 1);
  const rpcError = (code, desc) => ({ status: 'critical', output: `rpc error: code = ${code} desc = ${desc}` });
  return new Promise((resolve) => {
    let target;
    try {
      target = splitHostPort(address);
    } catch (error) {
      return resolve({ status: 'critical', output: error.message });
    }
    let settled = false;
    const done = (result) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      resolve(result);
    };
    const session = request.tls
      ? http2.connect(`https://${address}`, { ...tlsOptions(target.host, request.tls), localAddress: request.localAddress })
      : http2.connect(`http://${address}`, {
          createConnection: () => net.connect({ host: target.host, port: target.port, localAddress: request.localAddress }),
        });
    const timer = setTimeout(() => done(rpcError('DeadlineExceeded', 'context deadline exceeded')), timeoutMs);
    // A failed dial surfaces on the session or (as the cause) on the pending stream.
    const failed = (error) => {
      const cause = error.cause ?? error;
      done(cause.syscall === 'connect'
        ? rpcError('Unavailable', `connection error: desc = "transport: Error while dialing: ${dialError(address, cause)}"`)
        : rpcError('Unavailable', error.message));
    };
    session.on('error', failed);
    const name = Buffer.from(service, 'utf8');
    const message = name.length > 0 ? Buffer.concat([Buffer.from([0x0a]), varint(name.length), name]) : Buffer.alloc(0);
    const frame = Buffer.alloc(5 + message.length);
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, 5);
    const stream = session.request({
      ':method': 'POST', ':path': '/grpc.health.v1.Health/Check',
      'content-type': 'application/grpc', te: 'trailers', 'user-agent': 'grpc-go/1.57.0 (doze consul double)',
    });
    const chunks = [];
    let grpcStatus;
    let grpcMessage = '';
    const take = (headers) => {
      if (headers['grpc-status'] !== undefined) grpcStatus = Number(headers['grpc-status']);
      if (headers['grpc-message'] !== undefined) grpcMessage = decodeURIComponent(String(headers['grpc-message']));
    };
    stream.on('response', take);
    stream.on('trailers', take);
    stream.on('data', (chunk) => chunks.push(chunk));
    stream.on('error', failed);
    stream.on('close', () => {
      if (grpcStatus === undefined) return done(rpcError('Internal', 'server closed the stream without sending trailers'));
      if (grpcStatus !== 0) return done(rpcError(GRPC_CODES[grpcStatus] ?? `Code(${grpcStatus})`, grpcMessage));
      const status = servingStatus(Buffer.concat(chunks));
      if (status === 1) return done({ status: 'passing', output: `gRPC check ${request.target}: success` });
      done({ status: 'critical', output: `gRPC ${request.target} serving status: ${SERVING_STATUS[status] ?? status}` });
    });
    stream.end(frame);
  });
}

function varint(n) {
  const bytes = [];
  do {
    bytes.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>>= 7;
  } while (n > 0);
  return Buffer.from(bytes);
}

/** Field 1 (varint) of the first length-prefixed HealthCheckResponse; proto3 default 0 (UNKNOWN). */
function servingStatus(body) {
  if (body.length < 5) return 0;
  const end = Math.min(body.length, 5 + body.readUInt32BE(1));
  let i = 5;
  while (i < end) {
    const tag = body[i++];
    let value = 0;
    let shift = 0;
    for (;;) {
      const b = body[i++] ?? 0;
      value |= (b & 0x7f) << shift;
      shift += 7;
      if (!(b & 0x80) || i >= end) break;
    }
    if (tag === 0x08) return value;
    if ((tag & 7) === 2) i += value; // skip unknown length-delimited fields
  }
  return 0;
}
