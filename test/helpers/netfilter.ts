import { removeChain } from '../../agent/net/iptables.js';
import type { Teardown } from './teardown.js';

/**
 * Removes, at teardown, every chain an agent with this prefix may have made:
 * a test that fails before its agent's clean exit must still leave none behind.
 */
export function sweepChainsAtTeardown(t: Teardown, prefix: string): void {
  t.teardown(async () => {
    for (const family of [4, 6] as const) {
      await removeChain('mangle', ['OUTPUT'], `${prefix}-MARK-OUT`, family).catch(() => undefined);
      await removeChain('mangle', ['PREROUTING'], `${prefix}-MARK-IN`, family).catch(() => undefined);
      await removeChain('nat', ['OUTPUT', 'PREROUTING'], `${prefix}-STUB`, family).catch(() => undefined);
      await removeChain('nat', ['OUTPUT', 'PREROUTING'], `${prefix}-HOLD`, family).catch(() => undefined);
      await removeChain('mangle', ['OUTPUT'], `${prefix}-OBS-MARK-OUT`, family).catch(() => undefined);
      await removeChain('mangle', ['PREROUTING'], `${prefix}-OBS-MARK-IN`, family).catch(() => undefined);
      await removeChain('nat', ['OUTPUT', 'PREROUTING'], `${prefix}-OBS`, family).catch(() => undefined);
      await removeChain('filter', ['FORWARD', 'OUTPUT'], `${prefix}-OBS-CUT`, family).catch(() => undefined);
    }
  });
}
