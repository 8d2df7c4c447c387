// Types for probes.mjs (kept as plain JavaScript so the worker runs without tsx).
export type CheckStatus = 'passing' | 'warning' | 'critical';

export interface HttpProbe {
  kind: 'http';
  url: string;
  method?: string;
  /** Consul's Header: name → values. */
  header?: Record<string, string[]>;
  body?: string;
  disableRedirects?: boolean;
  timeoutMs: number;
  outputMaxSize: number;
  /** Source address to bind (the checker identity by address). */
  localAddress?: string;
  /** For https URLs. */
  tls?: ProbeTls;
}

export interface ProbeTls {
  skipVerify: boolean;
  serverName?: string;
  /** The CA to verify against; node's default roots without one. */
  caPem?: string;
}

export interface TcpProbe {
  kind: 'tcp';
  /** host:port */
  address: string;
  timeoutMs: number;
  localAddress?: string;
}

export interface GrpcProbe {
  kind: 'grpc';
  /** host:port or host:port/service, as Consul's GRPC field. */
  target: string;
  timeoutMs: number;
  localAddress?: string;
  /** GRPCUseTLS. */
  tls?: ProbeTls;
}

export type ProbeRequest = HttpProbe | TcpProbe | GrpcProbe;

export interface ProbeResult {
  status: CheckStatus;
  output: string;
}

export const USER_AGENT: string;
export const ACCEPT: string;
export const DEFAULT_TIMEOUT_MS: number;
export const DEFAULT_OUTPUT_MAX: number;
export function probe(request: ProbeRequest): Promise<ProbeResult>;
export function splitHostPort(address: string): { host: string; port: number };
