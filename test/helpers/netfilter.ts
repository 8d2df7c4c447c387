import { removeChain } from '../../agent/net/iptables.js';
import type { Teardown } from './teardown.js';

/**
 * Removes, at teardown, every chain an agent with this prefix may have made:
 * a test that fails before its agent's clean exit must still leave none behind.
 */
export function sweepChainsAtTeardown(t: Teardown, prefix: string): void {
  t.teardown(async () => {
    await removeChain('mangle', ['OUTPUT'], `${prefix}-MARK-OUT`).catch(() => undefined);
    await removeChain('mangle', ['PREROUTING'], `${prefix}-MARK-IN`).catch(() => undefined);
    await removeChain('nat', ['OUTPUT', 'PREROUTING'], `${prefix}-STUB`).catch(() => undefined);
    await removeChain('nat', ['OUTPUT', 'PREROUTING'], `${prefix}-HOLD`).catch(() => undefined);
  });
}
