/**
 * A VM as Nomad's qemu driver runs it (issue 11): QEMU is the task, its network is user-mode
 * with a hostfwd from a host port, and only `pause` applies. A namespace plays the node (as in
 * test/runtimes/qemu-hostfwd.test.ts): QEMU and the agent run inside it, the agent counts the host
 * port's traffic on the namespace's interfaces, and requests come from the root namespace.
 * Per cycle: time to sleep, doze's wake overhead (event → `cont` returned), the first request to
 * the paused VM against the same request awake, and the guest RAM left resident.
 */
import { logShows } from '../test/helpers/cli.js';
import { createBpffs } from '../test/helpers/bpffs.js';
import { get } from '../test/helpers/http.js';
import { createNetns } from '../test/helpers/netns.js';
import { startNodeAgent } from '../test/helpers/node-netns.js';
import { startGuest } from '../test/helpers/qemu-guest.js';
import { Cleanups } from '../test/helpers/teardown.js';
import { percentile, summary, verdict } from './stats.js';
import { synRetransmits } from './tcp-counters.js';

const MiB = 1024 * 1024;
const HOST_PORT = 28080;

export async function benchVmHostfwd(cycles = 10): Promise<string[]> {
  const lines: string[] = [];
  for (const reclaim of [false, true]) {
    const cleanups = new Cleanups();
    try {
      const ns = await createNetns(cleanups);
      const guest = await startGuest(cleanups, { memMiB: 256, fillMiB: 100, memoryCgroup: true, userNet: { netns: ns.name, hostAddress: ns.instanceIp, hostPort: HOST_PORT } });
      const agent = await startNodeAgent(cleanups, ns.name, ns.instanceIp, {
        bpffs: await createBpffs(cleanups),
        logLevel: 'info',
        hostPorts: { interfaces: ['lo', ns.instanceIf] },
        instances: [{ id: 'vm', address: guest.address, idleTimeout: '200ms', pauseTimeout: '10s', runtime: { kind: 'qemu', mode: 'pause', qmp: guest.qmp, reclaim, memoryCgroup: guest.memoryCgroup } }],
      });
      const sleepMs: number[] = [];
      const overheadMs: number[] = [];
      const asleepMs: number[] = [];
      const awakeMs: number[] = [];
      const ramAwake: number[] = [];
      const ramAsleep: number[] = [];
      const retransBefore = await synRetransmits();
      for (let i = 0; i < cycles; i++) {
        ramAwake.push(await guest.ramResidentBytes());
        const pausing = logShows(agent.child, /"to":"pausing"/, 15_000).then(() => performance.now());
        const slept = logShows(agent.child, /"to":"sleeping"/, 15_000).then(() => performance.now());
        sleepMs.push((await slept) - (await pausing));
        ramAsleep.push(await guest.ramResidentBytes());
        const cold = await get(guest.url, 5000);
        if (cold.status !== 200) throw new Error(`cycle ${i}: status ${cold.status}`);
        asleepMs.push(cold.ms);
        awakeMs.push((await get(guest.url, 5000)).ms);
        overheadMs.push((await agent.instance('vm')).lastWakeMs ?? Number.NaN);
      }
      const retransmits = (await synRetransmits()) - retransBefore;
      const mib = (values: number[]) => (percentile(values, 50) / MiB).toFixed(0);
      const target = reclaim ? 200 : 60;
      lines.push(
        `-- pause${reclaim ? ' + reclaim' : ', memory kept'}, QEMU as the qemu driver runs it (user-mode hostfwd on a host port; counted by port on the node's interfaces); booted in ${guest.bootMs.toFixed(0)} ms`,
        summary('time to sleep (pausing → sleeping, agent log)', sleepMs),
        summary("doze's wake overhead (event → cont returned)", overheadMs),
        summary('wake: first request, VM paused', asleepMs),
        summary('same request, VM awake', awakeMs),
        `RAM file resident awake → asleep (p50)           ${mib(ramAwake)} → ${mib(ramAsleep)} MiB`,
        `SYN retransmissions: ${retransmits} (QEMU's own listener takes the handshake while the VM is stopped)`,
        verdict(percentile(overheadMs, 50) <= 10, "target doze's wake overhead ≤ 10 ms (pause)"),
        verdict(percentile(asleepMs, 50) <= target, `target wake ≤ ${target} ms (p50)`),
      );
      agent.child.kill('SIGTERM');
      await agent.exited;
    } finally {
      await cleanups.run();
    }
  }
  return lines;
}
