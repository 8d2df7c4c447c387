import test from 'ava';
import { moduleGraph } from '../helpers/module-graph.js';

/*
 * The job helper (`doze job …`) runs on an operator's machine, not beside an
 * agent: it must not load the agent's machinery (the detector, discovery, the
 * traffic sources, the runtimes) to validate and render a job. What it needs
 * of the agent is Nomad's API and annotation rules (agent/nomad/), the config
 * schema's defaults, and two pieces of the VM command line that `doze vm run`
 * shares with it: which tap a QEMU command line names (vm-registration.ts
 * tapOf) and the RAM backend's id (vm-command-line.ts).
 */

const ROOT = new URL('../..', import.meta.url).pathname;
const RUNTIMES_IT_NEEDS = new Set(['agent/runtimes/qemu/vm-command-line.ts', 'agent/runtimes/qemu/vm-registration.ts']);
const NEVER = ['agent/detector/', 'agent/discovery/', 'agent/sources/', 'agent/status/', 'agent/hold/', 'agent/netfilter/'];

test('the job helper loads no detector, discovery, traffic source or runtime implementation', (t) => {
  const graph = moduleGraph('plugin/job-command.ts', ROOT);
  // The walk saw the graph, not an empty one: these are what the helper is for.
  for (const needed of ['plugin/check-job.ts', 'agent/nomad/nomad-client.ts', 'agent/nomad/qemu-task-paths.ts']) t.true(graph.includes(needed), `${needed} in ${graph.join(', ')}`);
  t.deepEqual(graph.filter((file) => NEVER.some((room) => file.startsWith(room))), []);
  t.deepEqual(graph.filter((file) => file.startsWith('agent/runtimes/') && !RUNTIMES_IT_NEEDS.has(file)), []);
});
