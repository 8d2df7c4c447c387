import type { ExecutionContext } from 'ava';
import { parseConfig } from '../../agent/config/load.js';
import { Detector, type TransitionEvent } from '../../agent/detector/detector.js';
import { ManagedInstance } from '../../agent/detector/managed-instance.js';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import { createLogger } from '../../agent/shared/log.js';
import { BpfInstanceState, type WakeEvent } from '../../agent/sources/bpf-records.js';
import { monotonicNs } from '../../agent/shared/clock.js';
import { EbpfSource } from '../../agent/sources/ebpf-source.js';
import { createBpffs } from '../helpers/bpffs.js';
import { craftSegment, packetRunner } from '../helpers/crafted-packet.js';
import { createNetns } from '../helpers/netns.js';
import { rootTest } from '../helpers/root.js';
import { steppedSource } from '../helpers/stepped-source.js';

/*
 * The hand-off interleavings of docs/state-handoff.md with the real tc program and maps: the
 * program runs once, in the kernel (BPF_PROG_TEST_RUN), on a crafted data segment for the
 * instance, between two of the agent's steps. The runtime is the fake one (its sleep and wake are
 * where the test steps in); the instance's interface is a real veth with the programs attached.
 */

/** A fake runtime the test can step into: `during.sleep` runs inside the pause, `during.wake` inside the resume. */
class SteppedRuntime extends FakeRuntime {
  during: { sleep?: () => Promise<void>; wake?: () => Promise<void> } = {};
  override async sleep(deadlineMs?: number): Promise<void> {
    const step = this.during.sleep;
    this.during.sleep = undefined;
    await step?.();
    return super.sleep(deadlineMs);
  }
  override async wake(deadlineMs?: number): Promise<void> {
    const step = this.during.wake;
    this.during.wake = undefined;
    await step?.();
    return super.wake(deadlineMs);
  }
}

async function world(t: ExecutionContext, options: { dropWakeEvents?: number } = {}) {
  const bpffs = await createBpffs(t);
  const ns = await createNetns(t);
  const log = createLogger(process.env.DOZE_TEST_LOG ? 'debug' : 'silent');
  const source = new EbpfSource({ bpffs, checkMark: 1, log });
  await source.start();
  const steps = steppedSource(source);
  const detector = new Detector(steps.source, log, options);
  const transitions: TransitionEvent[] = [];
  detector.on('transition', (e) => transitions.push(e));
  const events: WakeEvent[] = [];
  source.onWake((e) => events.push(e));
  const runtime = new SteppedRuntime();
  const config = parseConfig({
    instances: [{ id: 'web', address: `${ns.instanceIp}:8080`, interface: ns.hostIf, idleTimeout: '200ms', idlePolicy: 'traffic', runtime: { kind: 'fake' } }],
  }).instances[0]!;
  const instance = new ManagedInstance(config, runtime, monotonicNs());
  t.teardown(async () => {
    await detector.stop({ wakeAll: false });
    await detector.remove('web', { wake: false }).catch(() => undefined);
    await source.close({ removePins: true });
  });
  await detector.add(instance);
  const packet = await packetRunner(t, ns.hostIf, craftSegment(ns.hostIp, ns.instanceIp, 40_000, 8080));
  const next = (to: string, timeoutMs = 3000) =>
    new Promise<TransitionEvent>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`web did not become ${to} within ${timeoutMs} ms (now ${instance.state})`)), timeoutMs);
      const listener = (e: TransitionEvent) => {
        if (e.to !== to) return;
        clearTimeout(timer);
        detector.off('transition', listener);
        resolve(e);
      };
      detector.on('transition', listener);
    });
  const reasons = (to: string) => transitions.filter((e) => e.to === to).map((e) => e.reason);
  const eventsSince = (ns0: bigint) => events.filter((e) => e.answersWakeNs === undefined && e.tsNs >= ns0).length;
  return { source, steps, detector, instance, runtime, packet, next, reasons, eventsSince };
}

rootTest.serial('real program, I1: a packet between the decision and the swap to PAUSING aborts the sleep; the program raised no event', async (t) => {
  const w = await world(t);
  const startNs = monotonicNs();
  w.steps.before('swapState', () => w.packet());
  w.detector.start();
  const back = await w.next('running');
  t.is(back.reason, 'traffic arrived while deciding');
  t.is(w.runtime.sleeps, 0, 'never frozen');
  t.is(w.eventsSince(startNs), 0, 'the program saw AWAKE');
  t.is(await w.source.state(w.instance.key), BpfInstanceState.awake);
});

rootTest.serial('real program, I2: a packet after PAUSING and before the second counter read: one event, and the sleep aborts', async (t) => {
  const w = await world(t);
  const startNs = monotonicNs();
  let seen: BpfInstanceState | undefined;
  w.steps.before('counter', async () => {
    await w.packet();
    seen = await w.source.state(w.instance.key);
  });
  w.detector.start();
  const back = await w.next('running');
  t.is(seen, BpfInstanceState.signalled, 'the program swapped PAUSING to SIGNALLED in the slot the agent reads');
  t.is(back.reason, 'traffic arrived while deciding');
  t.is(w.runtime.sleeps, 0);
  t.is(await w.source.state(w.instance.key), BpfInstanceState.awake);
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.is(w.eventsSince(startNs), 1, 'one wake event for the sleep');
});

rootTest.serial('real program, I4: a packet during the pause, its event lost: the swap to SLEEPING finds SIGNALLED, leaves it, and the instance wakes', async (t) => {
  const w = await world(t, { dropWakeEvents: 1 });
  let beforeSwap: BpfInstanceState | undefined;
  w.runtime.during.sleep = async () => {
    await w.packet();
    // The next swap is the agent's PAUSING -> SLEEPING: look at the slot right before it.
    w.steps.before('swapState', async () => void (beforeSwap = await w.source.state(w.instance.key)));
  };
  const asleep = w.next('sleeping');
  const running = w.next('running');
  w.detector.start();
  await asleep;
  await running;
  t.is(beforeSwap, BpfInstanceState.signalled);
  t.is(w.runtime.sleeps, 1);
  t.is(w.runtime.wakes, 1);
  t.deepEqual(w.reasons('waking'), ['traffic arrived while pausing'], 'woken by the hand-off, not by the (dropped) event or the watchdog');
  t.is(w.detector.wakeEvents.missed, 0);
});

rootTest.serial('real program, I6: a packet to a sleeper: its event (from BPF_PROG_TEST_RUN) wakes it', async (t) => {
  const w = await world(t);
  w.detector.start();
  await w.next('sleeping');
  t.is(await w.source.state(w.instance.key), BpfInstanceState.sleeping);
  const waking = w.next('waking');
  const running = w.next('running');
  await w.packet();
  t.is((await waking).reason, 'traffic');
  await running;
  t.is(await w.source.state(w.instance.key), BpfInstanceState.awake);
});

rootTest.serial('real program, I7: a packet while the runtime resumes: the slot goes SIGNALLED, the agent\'s AWAKE follows, one wake, the next sleep is normal', async (t) => {
  const w = await world(t);
  w.detector.start();
  await w.next('sleeping');
  let during: BpfInstanceState | undefined;
  w.runtime.during.wake = async () => {
    await w.packet();
    during = await w.source.state(w.instance.key);
  };
  const running = w.next('running');
  const asleepAgain = w.next('sleeping', 5000);
  void w.detector.wake(w.instance, 'operator');
  await running;
  t.is(during, BpfInstanceState.signalled);
  t.is(await w.source.state(w.instance.key), BpfInstanceState.awake);
  t.is(w.runtime.wakes, 1);
  const again = await asleepAgain; // 200 ms idle after the wake
  t.regex(again.reason, /^no traffic/);
});

rootTest.serial('real program: the agent\'s compare-and-swap and the program\'s act on one slot; a SIGNALLED is never swapped over', async (t) => {
  const w = await world(t);
  const key = w.instance.key;
  t.is(await w.source.swapState(key, BpfInstanceState.awake, BpfInstanceState.pausing), BpfInstanceState.awake);
  await w.packet();
  t.is(await w.source.state(key), BpfInstanceState.signalled);
  t.is(await w.source.swapState(key, BpfInstanceState.pausing, BpfInstanceState.sleeping), BpfInstanceState.signalled, 'the swap found SIGNALLED');
  t.is(await w.source.state(key), BpfInstanceState.signalled, 'and left it');
  await w.packet();
  t.is(await w.source.state(key), BpfInstanceState.signalled, 'one signal per sleep: a second packet changes nothing');
  await w.source.setState(key, BpfInstanceState.awake);
  t.is(await w.source.swapState(key, BpfInstanceState.awake, BpfInstanceState.sleeping), BpfInstanceState.awake);
  await w.packet();
  t.is(await w.source.state(key), BpfInstanceState.signalled);
});
