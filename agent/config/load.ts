import { readFile } from 'node:fs/promises';
import { ConfigError } from '../shared/errors.js';
import { describeIssue, fieldPath } from '../shared/zod-issues.js';
import { configSchema, type DozeConfig } from './schema.js';

/** Settings that flags and DOZE_* variables may override, in that order of precedence. */
export interface ConfigOverrides {
  listen?: string;
  token?: string;
  logLevel?: string;
  stubListen?: string;
  /** A second agent on one node needs its own bpffs mount and chain prefix (agent/sources/bpffs-lock.ts). */
  bpffs?: string;
  chainPrefix?: string;
  /** Where these values come from, so an error blames the flag or variable rather than the file. */
  origin?: 'flags' | 'env';
}

/** The flag and variable that set each overridable field (the first path segment(s) of its issues). */
const OVERRIDE_NAMES: Record<Exclude<keyof ConfigOverrides, 'origin'>, { path: string; flags?: string; env: string }> = {
  listen: { path: 'listen', flags: '--listen', env: 'DOZE_LISTEN' },
  token: { path: 'token', flags: '--token', env: 'DOZE_TOKEN' },
  logLevel: { path: 'logLevel', flags: '--log-level', env: 'DOZE_LOG_LEVEL' },
  stubListen: { path: 'stub.listen', env: 'DOZE_STUB_LISTEN' },
  bpffs: { path: 'bpffs', flags: '--bpffs', env: 'DOZE_BPFFS' },
  chainPrefix: { path: 'netfilter.chainPrefix', flags: '--chain-prefix', env: 'DOZE_CHAIN_PREFIX' },
};

export function overridesFromEnv(env: NodeJS.ProcessEnv): ConfigOverrides {
  return {
    listen: env.DOZE_LISTEN,
    token: env.DOZE_TOKEN,
    logLevel: env.DOZE_LOG_LEVEL,
    stubListen: env.DOZE_STUB_LISTEN,
    bpffs: env.DOZE_BPFFS,
    chainPrefix: env.DOZE_CHAIN_PREFIX,
    origin: 'env',
  };
}

/** Which flag or variable set the field at `path` last, if one did. */
function overrideNaming(path: string, overrides: ConfigOverrides[]): string | undefined {
  let name: string | undefined;
  for (const o of overrides) {
    for (const [field, names] of Object.entries(OVERRIDE_NAMES)) {
      if (names.path !== path || o[field as keyof typeof OVERRIDE_NAMES] === undefined) continue;
      name = o.origin === 'flags' ? names.flags : o.origin === 'env' ? names.env : undefined;
    }
  }
  return name;
}

function applyOverrides(raw: Record<string, unknown>, overrides: ConfigOverrides[]): Record<string, unknown> {
  const merged = { ...raw };
  for (const o of overrides) {
    if (o.listen !== undefined) merged.listen = o.listen;
    if (o.token !== undefined) merged.token = o.token;
    if (o.logLevel !== undefined) merged.logLevel = o.logLevel;
    if (o.stubListen !== undefined) merged.stub = { ...(merged.stub as object | undefined), listen: o.stubListen };
    if (o.bpffs !== undefined) merged.bpffs = o.bpffs;
    if (o.chainPrefix !== undefined) merged.netfilter = { ...(merged.netfilter as object | undefined), chainPrefix: o.chainPrefix };
  }
  return merged;
}

/** Validates a parsed config object; throws ConfigError naming every bad field and value. */
export function parseConfig(raw: unknown, overrides: ConfigOverrides[] = [], source = 'config'): DozeConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(`${source}: expected a JSON object at the top level`);
  }
  const input = applyOverrides(raw as Record<string, unknown>, overrides);
  const result = configSchema.safeParse(input);
  if (!result.success) {
    // A bad value from a flag or DOZE_* variable is blamed on it, not on the file.
    const fromOverride = result.error.issues.map((issue) => overrideNaming(fieldPath(issue.path), overrides));
    const lines = result.error.issues.map((issue, index) => {
      const field = fromOverride[index];
      if (field === undefined) return `  ${describeIssue(issue, input, { schema: configSchema })}`;
      // zod's enum message starts "Invalid option:", which reads twice after "invalid option --flag".
      return `  ${describeIssue({ ...issue, message: issue.message.replace(/^Invalid option: /, '') }, input, { field })}`;
    });
    const blamed = fromOverride.filter((name) => name !== undefined).length;
    const header = blamed === lines.length ? 'invalid option' : blamed > 0 ? `${source} and options are invalid` : `${source} is invalid`;
    throw new ConfigError(`${header}${lines.length === 1 && header === 'invalid option' ? ` ${lines[0]!.trim()}` : `:\n${lines.join('\n')}`}`);
  }
  const config = result.data;
  const problems: string[] = [];
  const seenIds = new Set<string>();
  const seenAddresses = new Map<string, string>();
  config.instances.forEach((instance, index) => {
    if (seenIds.has(instance.id)) problems.push(`  instances[${index}].id: duplicate id ${JSON.stringify(instance.id)}`);
    seenIds.add(instance.id);
    [instance.address, ...instance.addresses].forEach((address, at) => {
      const host = address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, '');
      const field = at === 0 ? 'address' : `addresses[${at - 1}]`;
      const other = seenAddresses.get(host);
      if (other) problems.push(`  instances[${index}].${field}: ${host} is already used by instance "${other}" (instances are keyed by address)`);
      seenAddresses.set(host, instance.id);
    });
    if (instance.maxAwake !== undefined && instance.maxAwake < instance.idleTimeout) {
      problems.push(`  instances[${index}].maxAwake: must be at least idleTimeout (${instance.idleTimeout} ms) (got ${instance.maxAwake} ms)`);
    }
  });
  if ((config.observers.mark & config.healthChecks.mark) !== 0) {
    problems.push(`  observers.mark: shares bits with healthChecks.mark (0x${config.healthChecks.mark.toString(16)}): give observers their own bit, e.g. "0x4"`);
  }
  if (problems.length > 0) throw new ConfigError(`${source} is invalid:\n${problems.join('\n')}`);
  return config;
}

/**
 * The Nomad and Consul tokens from NOMAD_TOKEN and CONSUL_HTTP_TOKEN, as Nomad's and Consul's own
 * clients read them (a Nomad task's workload identity arrives as NOMAD_TOKEN): a token in the
 * config file wins. Only where the file configures Nomad or Consul at all.
 */
export function withEnvTokens(config: DozeConfig, env: NodeJS.ProcessEnv): DozeConfig {
  const nomadToken = env.NOMAD_TOKEN || undefined;
  const consulToken = env.CONSUL_HTTP_TOKEN || undefined;
  return {
    ...config,
    nomad: config.nomad && { ...config.nomad, token: config.nomad.token ?? nomadToken },
    consul: config.consul && { ...config.consul, token: config.consul.token ?? consulToken },
  };
}

export async function loadConfigFile(path: string, overrides: ConfigOverrides[] = []): Promise<DozeConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config file ${path}: ${readFailure(error)}`, { cause: error });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`config file ${path} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  return parseConfig(raw, overrides, `config file ${path}`);
}

/** "no such file (ENOENT)": what a failed read means, with the errno code to search for. */
function readFailure(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  const meaning: Record<string, string> = {
    ENOENT: 'no such file',
    EACCES: 'permission denied',
    EISDIR: 'it is a directory, not a file',
    ENOTDIR: 'a part of the path is not a directory',
  };
  return code ? `${meaning[code] ?? (error as Error).message} (${code})` : String(error);
}
