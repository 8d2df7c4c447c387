import { readFile } from 'node:fs/promises';
import { readNodeSwap } from './cgroups/node-swap.js';
import type { DozeConfig } from './config/schema.js';
import { ConfigError, DozeError } from './shared/errors.js';
import type { Logger } from './shared/log.js';
import { run, PACKAGE_OF } from './process/exec.js';

/** Fails fast, naming the Debian package, when a tool the agent drives is missing. */
export async function checkTools(tools: string[] = ['tc', 'ip']): Promise<void> {
  const missing: string[] = [];
  for (const tool of tools) {
    try {
      await run(tool, tool === 'stdbuf' || tool === 'iptables' ? ['--version'] : tool === 'ip' || tool === 'tc' ? ['-V'] : ['version'], { timeoutMs: 5000 });
    } catch (error) {
      if (error instanceof DozeError && error.code === 'E_MISSING_TOOL') missing.push(`${tool} (Debian package ${PACKAGE_OF[tool] ?? tool})`);
      else throw error;
    }
  }
  if (missing.length > 0) throw new DozeError('E_MISSING_TOOL', `missing tools: ${missing.join(', ')}`);
}

/**
 * The interfaces of the agent's own network namespace. /proc/self/net/dev follows the process's
 * namespace; /sys/class/net follows whichever sysfs is mounted (the host's, for an agent entered
 * into a namespace with nsenter), so it would misreport.
 */
async function interfaceNames(): Promise<Set<string>> {
  const text = await readFile('/proc/self/net/dev', 'utf8');
  return new Set(text.split('\n').slice(2).map((line) => line.split(':')[0]!.trim()).filter(Boolean));
}

/**
 * Every interface the config names exists, checked before anything is attached: a missing one is
 * the user's to fix (a typo, or the instance's veth is not up yet), so it is a config error naming
 * the instance and the field, not tc's "Cannot find device" after a half start.
 */
export async function checkInterfaces(config: DozeConfig): Promise<void> {
  const wanted = [...config.instances.map((i) => i.interface), ...(config.hostPorts.interfaces ?? [])];
  if (wanted.every((name) => name === undefined)) return;
  const names = await interfaceNames();
  const problems: string[] = [];
  for (const [index, instance] of config.instances.entries()) {
    if (instance.interface !== undefined && !names.has(instance.interface)) {
      problems.push(`instances[${index}] (${instance.id}).interface: no interface ${JSON.stringify(instance.interface)} on this node (see "ip link"); create it first, or correct the name`);
    }
  }
  for (const [index, name] of (config.hostPorts.interfaces ?? []).entries()) {
    if (!names.has(name)) problems.push(`hostPorts.interfaces[${index}]: no interface ${JSON.stringify(name)} on this node (see "ip link")`);
  }
  if (problems.length > 0) throw new ConfigError(problems.join('\n'));
}

/** Says once, at start, that the node has no swap: freezer reclaim then frees nothing (GET /api/status says it too). */
export function reportSwap(log: Logger, reclaimConfigured: boolean): void {
  const swap = readNodeSwap();
  if (swap.available) log.info({ swapBytes: swap.totalBytes, devices: swap.devices.map((d) => d.name) }, 'swap for freezer reclaim');
  else if (reclaimConfigured) log.warn({ reason: swap.reason }, 'no swap on this node: instances with reclaim sleep with their memory kept');
  else log.info({ reason: swap.reason }, 'no swap on this node: freezer reclaim would be off');
}
