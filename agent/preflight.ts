import { readNodeSwap } from './cgroups/node-swap.js';
import { DozeError } from './errors.js';
import type { Logger } from './log.js';
import { run, PACKAGE_OF } from './sources/exec.js';

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

/** Says once, at start, that the node has no swap: freezer reclaim then frees nothing (GET /api/status says it too). */
export function reportSwap(log: Logger, reclaimConfigured: boolean): void {
  const swap = readNodeSwap();
  if (swap.available) log.info({ swapBytes: swap.totalBytes, devices: swap.devices.map((d) => d.name) }, 'swap for freezer reclaim');
  else if (reclaimConfigured) log.warn({ reason: swap.reason }, 'no swap on this node: instances with reclaim sleep with their memory kept');
  else log.info({ reason: swap.reason }, 'no swap on this node: freezer reclaim would be off');
}
