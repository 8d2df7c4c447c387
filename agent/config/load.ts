import { readFile } from 'node:fs/promises';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
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
}

export function overridesFromEnv(env: NodeJS.ProcessEnv): ConfigOverrides {
  return {
    listen: env.DOZE_LISTEN,
    token: env.DOZE_TOKEN,
    logLevel: env.DOZE_LOG_LEVEL,
    stubListen: env.DOZE_STUB_LISTEN,
    bpffs: env.DOZE_BPFFS,
    chainPrefix: env.DOZE_CHAIN_PREFIX,
  };
}

function valueAt(input: unknown, path: PropertyKey[]): unknown {
  let current = input;
  for (const key of path) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

function formatPath(path: PropertyKey[]): string {
  return path.reduce<string>((text, key) => (typeof key === 'number' ? `${text}[${key}]` : text ? `${text}.${String(key)}` : String(key)), '');
}

/** One line per problem: the field, the bad value, and what was expected. */
export function describeIssues(issues: z.core.$ZodIssue[], input: unknown): string {
  return issues
    .map((issue) => {
      const where = formatPath(issue.path) || '(top level)';
      const bad = valueAt(input, issue.path);
      const shown = bad === undefined ? '' : ` (got ${JSON.stringify(bad)?.slice(0, 80)})`;
      return `  ${where}: ${issue.message}${shown}`;
    })
    .join('\n');
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
    throw new ConfigError(`${source} is invalid:\n${describeIssues(result.error.issues, input)}`);
  }
  const config = result.data;
  const problems: string[] = [];
  const seenIds = new Set<string>();
  const seenAddresses = new Map<string, string>();
  config.instances.forEach((instance, index) => {
    if (seenIds.has(instance.id)) problems.push(`  instances[${index}].id: duplicate id ${JSON.stringify(instance.id)}`);
    seenIds.add(instance.id);
    const host = instance.address.split(':')[0]!;
    const other = seenAddresses.get(host);
    if (other) problems.push(`  instances[${index}].address: ${host} is already used by instance "${other}" (instances are keyed by IPv4 address)`);
    seenAddresses.set(host, instance.id);
    if (instance.maxAwake !== undefined && instance.maxAwake < instance.idleTimeout) {
      problems.push(`  instances[${index}].maxAwake: must be at least idleTimeout (${instance.idleTimeout} ms) (got ${instance.maxAwake} ms)`);
    }
  });
  if (problems.length > 0) throw new ConfigError(`${source} is invalid:\n${problems.join('\n')}`);
  return config;
}

export async function loadConfigFile(path: string, overrides: ConfigOverrides[] = []): Promise<DozeConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config file ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`config file ${path} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  return parseConfig(raw, overrides, `config file ${path}`);
}
