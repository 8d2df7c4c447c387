import { missing, testIf } from './needs.js';

export const isRoot = process.getuid?.() === 0;

/** Kernel tests need root (netns, tc, bpf, cgroups, iptables). */
export const noRoot = missing('root', () => (isRoot ? undefined : 'network namespaces, tc, bpf and cgroups need root'));

/** `test`, or skips with the reason when not root. */
export const rootTest = testIf(noRoot);
