import type { ExecutionContext, TestFn } from 'ava';
import { createRequire } from 'node:module';

/*
 * ava is loaded when a test is registered, not when this module is: the benchmarks (bench/) use
 * helpers that import it, and ava refuses to load outside a test worker. Both entry points load
 * the same lib/worker/main.cjs, so this is the test files' own `test`.
 */
const require = createRequire(import.meta.url);
const ava = (): TestFn => (require('ava') as { default?: TestFn } & TestFn).default ?? require('ava');

/*
 * Tests that need something this machine may lack are gated when the file
 * loads (after Nomad's client/testutil RequireRoot and cilium/ebpf's named
 * feature skips): they register as ava skips, so a run says how many did
 * nothing. The reason is in the skipped test's title, in a shape
 * scripts/run-tests.mjs reads (`(skipped, needs <need>: <reason>)`): with
 * DOZE_TEST_ALLOWED_SKIPS set, as .ci/run sets it, a skip whose need is not
 * in that list fails the run.
 */

/** What a test may need: stable names, listed by CI when it cannot provide one. */
export type Need = 'root' | 'guest' | 'qemu' | 'build' | 'chromium' | 'openssl' | 'consul-nomad' | 'cni' | 'docker';

export interface Missing {
  need: Need;
  reason: string;
}

type Body = (t: ExecutionContext) => Promise<void> | void;
type Register = (title: string, body: Body) => void;

/** ava's `test` and `test.serial`, or their skips when something is missing. */
export interface GatedTest extends Register {
  serial: Register;
}

/**
 * `need` is missing when `check` gives a reason, or when DOZE_TEST_PRETEND_MISSING
 * (comma-separated needs) names it: how the runner's own test makes a skip as root.
 */
export function missing(need: Need, check: () => string | undefined): Missing | undefined {
  const pretended = (process.env.DOZE_TEST_PRETEND_MISSING ?? '').split(',').map((s) => s.trim());
  if (pretended.includes(need)) return { need, reason: 'pretended missing by DOZE_TEST_PRETEND_MISSING' };
  const reason = check();
  return reason === undefined ? undefined : { need, reason };
}

/** The first of several gates that is missing. */
export function firstMissing(...gates: Array<Missing | undefined>): Missing | undefined {
  return gates.find((gate) => gate !== undefined);
}

/** The skipped title: the test's own title, then the need and why. */
export function skippedTitle(title: string, gap: Missing): string {
  return `${title} (skipped, needs ${gap.need}: ${gap.reason})`;
}

/** `test` when nothing is missing; otherwise a `test` whose tests register as skipped with the reason. */
export function testIf(gap: Missing | undefined): GatedTest {
  if (!gap) {
    const run: GatedTest = Object.assign((title: string, body: Body) => void ava()(title, body), {
      serial: (title: string, body: Body) => void ava().serial(title, body),
    });
    return run;
  }
  return Object.assign((title: string, body: Body) => void ava().skip(skippedTitle(title, gap), body), {
    serial: (title: string, body: Body) => void ava().serial.skip(skippedTitle(title, gap), body),
  });
}
