/**
 * Wake benchmark (issues 2 and 29): over N sleep/wake cycles of a freezer instance, with the
 * thaw at the event (the wake-event reader thaws it, docs/wake-path.md) and with the agent's own
 * thaw (config `earlyThaw: false`), in the same run:
 * The two paths take turns in blocks of cycles, so a change in the machine's load falls on both.
 *  - wake reaction: first packet seen by the tc program → resumed (the agent's own clock pair),
 *  - first-request latency to the sleeping instance vs. the same request to the awake one, timed by
 *    curl in its own process (time to first byte): a client in the agent's own event loop would
 *    wait on the agent's wake bookkeeping, which no real client does,
 *  - SYN retransmissions during the run (a freezer wake must need none).
 */
import { nextState, startAgent } from '../test/helpers/agent.js';
import { createInstance } from '../test/helpers/instance.js';
import { Cleanups } from '../test/helpers/teardown.js';
import { curlFirstByte } from './curl.js';
import { percentile, summary, verdict } from './stats.js';
import { synRetransmits } from './tcp-counters.js';

interface WakeRun {
  reaction: number[];
  asleep: number[];
  awake: number[];
  /** The tc program's own pair: the packet that woke it → its first payload byte to the client. */
  firstByte: number[];
  retransmits: number;
}

async function runCycles(run: WakeRun, cycles: number, earlyThaw: boolean): Promise<void> {
  const cleanups = new Cleanups();
  try {
    const inst = await createInstance(cleanups, 'bench');
    const agent = await startAgent(cleanups, { earlyThaw, instances: [inst.config({ idleTimeout: '50ms' })] });
    const retransBefore = await synRetransmits();
    for (let i = 0; i < cycles; i++) {
      await nextState(agent, 'bench', 'sleeping', 5000);
      const running = nextState(agent, 'bench', 'running', 5000);
      const cold = await curlFirstByte(`${inst.app.url}/`);
      await running;
      if (cold.status !== 200) throw new Error(`cycle ${i}: status ${cold.status}`);
      run.asleep.push(cold.ms);
      run.reaction.push(agent.detector.get('bench')!.lastWakeMs!);
      const warm = await curlFirstByte(`${inst.app.url}/`);
      run.awake.push(warm.ms);
      const firstByte = agent.detector.get('bench')!.lastFirstResponseMs;
      if (firstByte !== undefined) run.firstByte.push(firstByte);
    }
    run.retransmits += (await synRetransmits()) - retransBefore;
  } finally {
    await cleanups.run();
  }
}

function rows(label: string, run: WakeRun): string[] {
  const extraP50 = percentile(run.asleep, 50) - percentile(run.awake, 50);
  const extraP99 = percentile(run.asleep, 99) - percentile(run.awake, 99);
  return [
    summary(`${label}: wake reaction (packet → resumed)`, run.reaction),
    summary(`${label}: packet → first response byte`, run.firstByte),
    summary(`${label}: first request, asleep`, run.asleep),
    summary(`${label}: same request, awake`, run.awake),
    `${label}: first request asleep − awake: p50 +${extraP50.toFixed(2)} ms, p99 +${extraP99.toFixed(2)} ms; SYN retransmissions ${run.retransmits}`,
  ];
}

/** Blocks of cycles, the two paths taking turns: both see the machine's load as it changes. */
const BLOCK = 25;

export async function benchWake(cycles = 200): Promise<string[]> {
  const fresh = (): WakeRun => ({ reaction: [], asleep: [], awake: [], firstByte: [], retransmits: 0 });
  const agentThaw = fresh();
  const early = fresh();
  for (let done = 0; done < cycles; done += BLOCK) {
    const n = Math.min(BLOCK, cycles - done);
    await runCycles(agentThaw, n, false);
    await runCycles(early, n, true);
  }
  const extraP50 = percentile(early.asleep, 50) - percentile(early.awake, 50);
  return [
    `wake (freezer, ${cycles} sleep/wake cycles each path, in turns of ${BLOCK}, idle timeout 50 ms)`,
    ...rows('agent thaws', agentThaw),
    ...rows('thaw at event', early),
    `thaw at event / agent thaws, reaction p50 ×${(percentile(early.reaction, 50) / percentile(agentThaw.reaction, 50)).toFixed(2)}, p99 ×${(percentile(early.reaction, 99) / percentile(agentThaw.reaction, 99)).toFixed(2)}`,
    verdict(percentile(early.reaction, 50) <= 0.3 && percentile(early.reaction, 99) <= 1, 'target (thaw at event) reaction p50 ≤ 0.3 ms, p99 ≤ 1 ms'),
    verdict(extraP50 <= 0.5 && early.retransmits === 0, 'target (thaw at event) first request within 0.5 ms of awake at p50, no SYN retransmission'),
  ];
}
