import type { ExecutionContext } from 'ava';
import { missing, testIf } from './needs.js';

export const isRoot = process.getuid?.() === 0;

/** Kernel tests need root (netns, tc, bpf, cgroups, iptables). */
export const noRoot = missing('root', () => (isRoot ? undefined : 'network namespaces, tc, bpf and cgroups need root'));

/** `test`, or skips with the reason when not root. */
export const rootTest = testIf(noRoot);

/**
 * @deprecated Gate the test when its file loads, with rootTest. Kept so tests written against
 * it still compile; without root it fails the test with that advice (it used to pass silently).
 */
export function requireRoot(t: ExecutionContext): boolean {
  if (noRoot) t.fail(`needs ${noRoot.need} (${noRoot.reason}): register this test with rootTest (test/helpers/root.ts) so it is counted as skipped`);
  return !noRoot;
}
