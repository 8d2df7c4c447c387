import type { ErrorCode } from './error-codes.js';

/**
 * Every error doze raises on purpose carries a stable code (declared in error-codes.ts) and the
 * original cause. No own property is ever undefined (a cause or status not given is left out):
 * serialisers choke on one (ava's TAP reporter crashed the whole run on a failing test's error).
 */
export class DozeError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DozeError';
    this.code = code;
  }
}

export class ConfigError extends DozeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_CONFIG', message, options);
    this.name = 'ConfigError';
  }
}

export class RuntimeError extends DozeError {
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'RuntimeError';
  }
}

/** An API doze calls (Nomad, Consul, a VMM) failed; `status` is its HTTP status when it answered at all. */
export class UpstreamError extends DozeError {
  declare readonly status?: number;
  constructor(code: ErrorCode, message: string, options: { cause?: unknown; status?: number } = {}) {
    super(code, message, { cause: options.cause });
    this.name = 'UpstreamError';
    if (options.status !== undefined) (this as { status?: number }).status = options.status;
  }
}

/**
 * The base of one upstream's error class (NomadError, ConsulError, VmmError): its codes typed,
 * its name set, so `instanceof` and `error.code` checks stay precise per upstream.
 */
export function upstreamErrorClass<Code extends ErrorCode>(name: string) {
  return class extends UpstreamError {
    declare readonly code: Code;
    constructor(code: Code, message: string, options: { cause?: unknown; status?: number } = {}) {
      super(code, message, options);
      this.name = name;
    }
  };
}

export class DeadlineError extends DozeError {
  constructor(what: string, ms: number) {
    super('E_DEADLINE', `${what} did not finish within ${ms} ms`);
    this.name = 'DeadlineError';
  }
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
