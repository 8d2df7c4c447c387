/**
 * Wake benchmark (issue 2): over N sleep/wake cycles of a freezer instance,
 *  - wake reaction: first packet seen by the tc program → resume done (the agent's own clock pair),
 *  - first-request latency to the sleeping instance vs. the same request to the awake one,
 *  - SYN retransmissions during the run (a freezer wake must need none).
 */
import { nextState, startAgent } from '../test/helpers/agent.js';
import { get } from '../test/helpers/http.js';
import { createInstance } from '../test/helpers/instance.js';
import { Cleanups } from '../test/helpers/teardown.js';
import { percentile, summary, verdict } from './stats.js';
import { synRetransmits } from './tcp-counters.js';

export async function benchWake(cycles = 200): Promise<string[]> {
  const cleanups = new Cleanups();
  try {
    const inst = await createInstance(cleanups, 'bench');
    const agent = await startAgent(cleanups, { instances: [inst.config({ idleTimeout: '50ms' })] });
    const reaction: number[] = [];
    const asleep: number[] = [];
    const awake: number[] = [];
    const retransBefore = await synRetransmits();
    for (let i = 0; i < cycles; i++) {
      await nextState(agent, 'bench', 'sleeping', 5000);
      const running = nextState(agent, 'bench', 'running', 5000);
      const cold = await get(`${inst.app.url}/`, 5000);
      await running;
      if (cold.status !== 200) throw new Error(`cycle ${i}: status ${cold.status}`);
      asleep.push(cold.ms);
      reaction.push(agent.detector.get('bench')!.lastWakeMs!);
      const warm = await get(`${inst.app.url}/`, 5000);
      awake.push(warm.ms);
    }
    const retransmits = (await synRetransmits()) - retransBefore;
    const extraP50 = percentile(asleep, 50) - percentile(awake, 50);
    const extraP99 = percentile(asleep, 99) - percentile(awake, 99);
    return [
      `wake (freezer, ${cycles} sleep/wake cycles, idle timeout 50 ms)`,
      summary('wake reaction (tc sees packet → resumed)', reaction),
      summary('first request, instance asleep', asleep),
      summary('same request, instance awake', awake),
      `first request asleep / awake: p50 ×${(percentile(asleep, 50) / percentile(awake, 50)).toFixed(2)}, +${extraP50.toFixed(2)} ms; p99 +${extraP99.toFixed(2)} ms`,
      `SYN retransmissions during the run: ${retransmits}`,
      verdict(percentile(reaction, 50) <= 2 && percentile(reaction, 99) <= 10, 'target reaction p50 ≤ 2 ms, p99 ≤ 10 ms'),
      verdict(extraP50 <= 20 && retransmits === 0, 'target first request within 20 ms of awake, no SYN retransmission'),
    ];
  } finally {
    await cleanups.run();
  }
}
