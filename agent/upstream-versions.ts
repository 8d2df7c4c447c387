import type { DozeConfig } from './config/schema.js';
import { ConsulAgentClient } from './discovery/consul-agent.js';
import { NomadClient } from './nomad/nomad-client.js';
import { ConfigError, messageOf } from './shared/errors.js';
import type { Logger } from './shared/log.js';

/*
 * The Nomad and Consul the agent talks to, read once at start (GET
 * /v1/agent/self of each). Nomad 1.7 moved task cgroups to the layout doze
 * finds them in (cgroup2 `nomad.slice/share.slice/<alloc>.<task>.scope`, v1
 * `<controller>/nomad/share/<alloc>.<task>`; client/lib/cgroupslib), so an
 * older Nomad is refused at start with the minimum named. Consul has no
 * minimum: the agent endpoints doze uses (agent/self, checks, services,
 * check/pass, service/register) are older than any supported release. An
 * upstream that does not answer within the deadline is not a reason to stop:
 * discovery keeps trying, and the status shows the version as unknown.
 */

export const NOMAD_MINIMUM_VERSION = '1.7.0';
const ASK_MS = 2000;

export interface UpstreamVersion {
  /** As the agent reports it ("1.9.3"); null when it did not answer. */
  version: string | null;
  minimum: string | null;
  /** Why the version is unknown. */
  error?: string;
}

export interface UpstreamVersions {
  nomad?: UpstreamVersion;
  consul?: UpstreamVersion;
}

/** Compares the numeric major.minor.patch of two versions ("1.10.0-beta.1" is 1.10.0): <0, 0, >0. */
export function compareVersions(a: string, b: string): number {
  const parts = (v: string) => v.replace(/^v/, '').split(/[-+]/)[0]!.split('.').map((n) => Number.parseInt(n, 10) || 0);
  const [x, y] = [parts(a), parts(b)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Asks each configured upstream its version, each within ASK_MS. */
export async function readUpstreamVersions(config: Pick<DozeConfig, 'nomad' | 'consul'>, log: Logger): Promise<UpstreamVersions> {
  const versions: UpstreamVersions = {};
  const ask = async (what: string, read: () => Promise<string | undefined>, minimum: string | null): Promise<UpstreamVersion> => {
    try {
      const version = (await read()) ?? null;
      return version === null ? { version, minimum, error: `${what} did not say its version` } : { version, minimum };
    } catch (error) {
      log.warn({ err: messageOf(error) }, `could not read ${what}'s version at start`);
      return { version: null, minimum, error: messageOf(error) };
    }
  };
  const work: Promise<unknown>[] = [];
  if (config.nomad) {
    const nomad = config.nomad;
    const client = new NomadClient({ address: nomad.address, token: nomad.token, region: nomad.region, tls: nomad.tls, timeoutMs: ASK_MS });
    work.push(ask('Nomad', () => client.agentVersion(), NOMAD_MINIMUM_VERSION).then((v) => (versions.nomad = v)));
  }
  if (config.consul) {
    const client = new ConsulAgentClient(config.consul, ASK_MS);
    work.push(ask('Consul', () => client.self(), null).then((v) => (versions.consul = v)).finally(() => client.destroy()));
  }
  await Promise.all(work);
  return versions;
}

/** A Nomad older than the minimum is the operator's to fix: a config error (exit 2) naming both. */
export function checkUpstreamVersions(versions: UpstreamVersions, config: Pick<DozeConfig, 'nomad'>): void {
  const nomad = versions.nomad;
  if (nomad?.version && compareVersions(nomad.version, NOMAD_MINIMUM_VERSION) < 0) {
    throw new ConfigError(
      `nomad.address: the Nomad agent at ${config.nomad?.address} is ${nomad.version}; doze needs Nomad ${NOMAD_MINIMUM_VERSION} or newer (older releases lay out task cgroups differently, where doze would not find them): upgrade the Nomad client`,
    );
  }
}
