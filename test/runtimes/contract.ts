import type { ExecutionContext } from 'ava';
import type { DozeError } from '../../agent/shared/errors.js';
import type { Runtime } from '../../agent/runtimes/runtime.js';
import { testIf, type Missing } from '../helpers/needs.js';
import { until } from '../helpers/until.js';

/*
 * The runtime contract (after Nomad's DriverHarness): the same ava tests for
 * any Runtime. A test file calls runtimeContract() with a factory that builds
 * one runtime over its own workload (a double or a real one) per test; a
 * runtime that cannot run here passes what is missing (`unavailable`), and its
 * tests register as skipped with that reason.
 */

/** How a test makes the workload's control plane late, and knows when the late request has landed. */
export interface SlowControl {
  /** Makes the workload's control plane answer this many ms late (0: on time again). */
  slowDown(ms: number): void;
  /** Whether the workload has acted on every request it received (a late one after a missed deadline included). */
  answeredAll(): boolean | Promise<boolean>;
}

export interface ContractSubject {
  runtime: Runtime;
  /** Present unless the contract was told the workload cannot be slowed (`slowable: false`). */
  slow?: SlowControl;
  /** A new runtime object over the same workload, as a restarted agent builds once the old one is gone (unless `adopts: false`). */
  another?(): Runtime;
  /** State-changing requests the workload has received so far, when the subject can count them. */
  mutations?(): number;
}

export interface ContractOptions {
  /** A deadline every normal call fits in comfortably. */
  deadlineMs?: number;
  /** A deadline short enough to miss when the workload answers `slowMs` late. */
  shortDeadlineMs?: number;
  slowMs?: number;
  /** What this machine lacks to run the subject (decided when the file loads), if anything. */
  unavailable?: Missing;
  /** false: nothing outside the workload's own control plane can slow it (the deadline case does not apply). */
  slowable?: boolean;
  /** false: the runtime keeps its workload's state in the object itself, so there is nothing to adopt. */
  adopts?: boolean;
  /** One test at a time (each boots a VM: concurrent boots on two cores would miss their bounds). */
  serial?: boolean;
  /** Per-test ava timeout, for subjects that boot something. */
  timeoutMs?: number;
}

type Factory = (t: ExecutionContext) => Promise<ContractSubject>;

export function runtimeContract(name: string, factory: Factory, options: ContractOptions = {}): void {
  const deadline = options.deadlineMs ?? 5000;
  const short = options.shortDeadlineMs ?? 50;
  const slow = options.slowMs ?? 300;
  const gated = testIf(options.unavailable);
  const test = options.serial ? gated.serial : gated;

  const withSubject = (title: string, body: (t: ExecutionContext, subject: ContractSubject) => Promise<void>) =>
    test(`${name} contract: ${title}`, async (t) => {
      if (options.timeoutMs) t.timeout(options.timeoutMs);
      const subject = await factory(t);
      t.teardown(() => subject.runtime.close?.());
      const probe = await subject.runtime.probe();
      t.true(probe.ok, probe.reason);
      await body(t, subject);
    });

  withSubject('probe succeeds and inspect reports a running workload', async (t, { runtime }) => {
    t.is(await runtime.inspect(), 'running');
  });

  withSubject('sleep then wake, and inspect reflects each', async (t, { runtime }) => {
    await runtime.sleep(deadline);
    t.is(await runtime.inspect(), 'asleep');
    await runtime.wake(deadline);
    t.is(await runtime.inspect(), 'running');
    await runtime.sleep(deadline);
    t.is(await runtime.inspect(), 'asleep', 'a second cycle works too');
    await runtime.wake(deadline);
    t.is(await runtime.inspect(), 'running');
  });

  withSubject('a second sleep of a sleeping workload succeeds and changes nothing', async (t, subject) => {
    const { runtime } = subject;
    await runtime.sleep(deadline);
    const before = subject.mutations?.();
    await t.notThrowsAsync(runtime.sleep(deadline));
    if (before !== undefined) t.is(subject.mutations!(), before, 'the second sleep sent no state change');
    t.is(await runtime.inspect(), 'asleep');
  });

  withSubject('wake of a running workload is a no-op', async (t, subject) => {
    const { runtime } = subject;
    const before = subject.mutations?.();
    await t.notThrowsAsync(runtime.wake(deadline));
    if (before !== undefined) t.is(subject.mutations!(), before, 'wake sent no state change');
    t.is(await runtime.inspect(), 'running');
  });

  if (options.slowable ?? true) withSubject('a call past its deadline rejects with E_DEADLINE, and the runtime works afterwards', async (t, subject) => {
    const { runtime } = subject;
    if (!subject.slow) return t.fail('the subject has no slow control: pass slowable: false if the workload cannot be slowed');
    const control = subject.slow;
    control.slowDown(slow);
    const started = performance.now();
    const error = await t.throwsAsync<DozeError>(runtime.sleep(short));
    t.is(error?.code, 'E_DEADLINE', error?.message);
    t.true(performance.now() - started < slow, 'the call gave up at its deadline, not when the workload answered');
    control.slowDown(0);
    // Whatever the late request did lands; the runtime acts on the real state from here.
    await until('the late request to land', () => control.answeredAll(), Math.max(slow * 10, deadline));
    await runtime.sleep(deadline);
    t.is(await runtime.inspect(), 'asleep');
    await runtime.wake(deadline);
    t.is(await runtime.inspect(), 'running');
  });

  if (options.slowable ?? true) withSubject('a wake right after a timed-out sleep leaves the workload awake, and the runtime usable', async (t, subject) => {
    const { runtime } = subject;
    if (!subject.slow) return t.fail('the subject has no slow control: pass slowable: false if the workload cannot be slowed');
    const control = subject.slow;
    control.slowDown(slow);
    const error = await t.throwsAsync<DozeError>(runtime.sleep(short));
    t.is(error?.code, 'E_DEADLINE', error?.message);
    control.slowDown(0);
    // What the detector does when a pause outlives its deadline: wake at once, the abandoned sleep maybe still under way.
    await runtime.wake(deadline);
    await until('the late request to land', () => control.answeredAll(), Math.max(slow * 10, deadline));
    t.is(await runtime.inspect(), 'running', 'the abandoned sleep did not put it to sleep behind the wake');
    await runtime.sleep(deadline);
    t.is(await runtime.inspect(), 'asleep');
    await runtime.wake(deadline);
    t.is(await runtime.inspect(), 'running');
  });

  if (options.adopts ?? true) withSubject('adoption: a new runtime object for the same workload finds it asleep and wakes it', async (t, subject) => {
    const { runtime } = subject;
    if (!subject.another) return t.fail('the subject cannot build another runtime: pass adopts: false if the runtime keeps its state in itself');
    await runtime.sleep(deadline);
    // The agent that put it to sleep is gone (QEMU's monitor, for one, takes a single client).
    await runtime.close?.();
    const fresh = subject.another();
    t.teardown(() => fresh.close?.());
    const probe = await fresh.probe();
    t.true(probe.ok, probe.reason);
    t.is(await fresh.inspect(), 'asleep', 'the new runtime sees the workload asleep');
    await fresh.wake(deadline);
    t.is(await fresh.inspect(), 'running');
  });
}
