import { isIP } from 'node:net';
import { ConfigError } from '../shared/errors.js';
import type { DozeConfig } from './schema.js';

/*
 * Who can reach the agent's listeners (docs/security.md). The status API's
 * actions freeze and wake workloads, and registrations name what to freeze:
 * bound anywhere but loopback, they need a token, or anyone who reaches the
 * node could freeze its tenants. The stub's fallback listener stays on
 * loopback: it only ever serves connections the agent's own DNAT sends it.
 */

/** True for 127.0.0.0/8, ::1 and `localhost`: addresses only this host's own processes reach. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '');
  if (bare === 'localhost') return true;
  if (isIP(bare) === 4) return bare.startsWith('127.');
  if (isIP(bare) === 6) return bare === '::1';
  return false;
}

function hostOf(hostPort: string): string {
  return hostPort.slice(0, hostPort.lastIndexOf(':'));
}

/** Throws a ConfigError (exit 2) naming the field and how to fix it when a listener is exposed without protection. */
export function checkExposure(config: Pick<DozeConfig, 'listen' | 'token' | 'stub'>): void {
  const listenHost = hostOf(config.listen);
  if (!isLoopbackHost(listenHost) && config.token === undefined) {
    throw new ConfigError(
      `listen: ${config.listen} is reachable from other hosts, and the status API's actions (sleep, wake, registrations) would be open to them: ` +
        'set a token ("token" in the config file, DOZE_TOKEN or --token; e.g. DOZE_TOKEN=$(openssl rand -hex 32)), or listen on 127.0.0.1',
    );
  }
  const stubHost = hostOf(config.stub.listen);
  if (!isLoopbackHost(stubHost)) {
    throw new ConfigError(`stub.listen: ${config.stub.listen} is not a loopback address: the stub only serves checks the agent redirects to it; use 127.0.0.1 (the default)`);
  }
}
