/**
 * Docker benchmark (issue 26): a docker task in a bridge-mode group, laid out as Nomad's docker
 * driver lays it out on a real dockerd, discovered from the Nomad double and put to sleep through
 * its container's freezer cgroup. Over N cycles: the first request to the sleeping task against
 * the same request awake. For comparison, the path doze did not take (docs/docker.md): the same
 * container paused and unpaused through the Engine API, first request after `unpause`. Requests are
 * timed by curl in its own process (bench/curl.ts).
 */
import http from 'node:http';
import { NomadDouble } from '../test/doubles/nomad/nomad-double.js';
import { dockerJob } from '../test/doubles/nomad/fixtures.js';
import { nextState, startAgent } from '../test/helpers/agent.js';
import { createDockerAllocation, startDockerTask } from '../test/helpers/docker-alloc.js';
import { startDockerd } from '../test/helpers/dockerd.js';
import { Cleanups } from '../test/helpers/teardown.js';
import { until } from '../test/helpers/until.js';
import { curlFirstByte } from './curl.js';
import { percentile, summary, verdict } from './stats.js';

function post(socket: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method: 'POST', path }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

export async function benchDocker(cycles = 50): Promise<string[]> {
  const cleanups = new Cleanups();
  try {
    const dockerd = await startDockerd(cleanups);
    const alloc = await createDockerAllocation(cleanups, dockerd);
    const url = `http://${alloc.instanceIp}:8080/`;
    const app = await startDockerTask(dockerd, alloc, 'app', dockerd.appCmd(alloc.instanceIp, 8080, 'bench'), { readyUrl: url });
    const nomad = await NomadDouble.start();
    cleanups.teardown(() => nomad.close());
    nomad.registerJob(dockerJob({ groupMeta: { 'doze.enabled': 'true', 'doze.idle_timeout': '50ms' } }));
    const agent = await startAgent(cleanups, { nomad: { address: nomad.url, nodeId: 'node-1' }, docker: { socket: dockerd.socket } }, { nomadInstances: { pendingMinMs: 20, pendingMaxMs: 200 } });
    nomad.addAllocation({ id: alloc.allocId, jobId: 'web', group: 'web', nodeId: 'node-1', bridgeAddress: alloc.instanceIp });
    const id = `web.web.${alloc.allocId.replace(/-/g, '').slice(0, 8)}`;
    await until('the instance', () => agent.detector.get(id), { timeoutMs: 10_000 });
    const asleep: number[] = [];
    const awake: number[] = [];
    const reaction: number[] = [];
    for (let i = 0; i < cycles; i++) {
      await nextState(agent, id, 'sleeping', 5000);
      const running = nextState(agent, id, 'running', 5000);
      const cold = await curlFirstByte(url);
      await running;
      if (cold.status !== 200) throw new Error(`cycle ${i}: status ${cold.status}`);
      asleep.push(cold.ms);
      reaction.push(agent.detector.get(id)!.lastWakeMs!);
      awake.push((await curlFirstByte(url)).ms);
    }
    // The Engine API path, on the same container with the agent gone (it would freeze it again).
    await agent.stop();
    const api: number[] = [];
    for (let i = 0; i < cycles; i++) {
      if ((await post(dockerd.socket, `/containers/${app.id}/pause`)) !== 204) throw new Error('pause failed');
      const started = performance.now();
      if ((await post(dockerd.socket, `/containers/${app.id}/unpause`)) !== 204) throw new Error('unpause failed');
      const unpausedMs = performance.now() - started;
      const r = await curlFirstByte(url);
      if (r.status !== 200) throw new Error(`api cycle ${i}: status ${r.status}`);
      api.push(unpausedMs + r.ms); // curl's own start-up left out, as in the rows above
    }
    const extraP50 = percentile(asleep, 50) - percentile(awake, 50);
    return [
      `docker task (bridge mode, pause container, real dockerd; ${cycles} sleep/wake cycles, idle timeout 50 ms)`,
      summary('wake reaction (tc sees packet → thawed)', reaction),
      summary('first request, task asleep (freezer)', asleep),
      summary('same request, task awake', awake),
      summary('Engine API unpause + first request (not used)', api),
      `first request asleep - awake: p50 +${extraP50.toFixed(2)} ms, p99 +${(percentile(asleep, 99) - percentile(awake, 99)).toFixed(2)} ms`,
      verdict(extraP50 <= 1, 'target first request within 1 ms of awake at p50'),
    ];
  } finally {
    await cleanups.run();
  }
}
