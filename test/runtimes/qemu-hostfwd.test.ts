import { createBpffs } from '../helpers/bpffs.js';
import { CHECKER_UID } from '../helpers/checker.js';
import { logShows } from '../helpers/cli.js';
import { get } from '../helpers/http.js';
import { createNetns } from '../helpers/netns.js';
import { getInNetns, startNodeAgent } from '../helpers/node-netns.js';
import { guestTest, startGuest } from '../helpers/qemu-guest.js';

/*
 * The shape of a task under Nomad's own qemu driver: QEMU is the task, its network is user-mode
 * with a hostfwd from a host port (no tap, no interface of the VM's own), and only `pause` is
 * possible (the process must stay). The test namespace plays the node; the agent inside it counts
 * the host port's traffic on the namespace's lo and veth and pauses QEMU through QMP.
 */

const HOST_PORT = 28080;

guestTest.serial('qemu driver shape (user-mode hostfwd): paused with its RAM pushed out, woken by a request to the host port, checks answered meanwhile', async (t) => {
  const ns = await createNetns(t);
  const guest = await startGuest(t, { memoryCgroup: true, fillMiB: 64, userNet: { netns: ns.name, hostAddress: ns.instanceIp, hostPort: HOST_PORT } });
  const before = await guest.count();
  const resident = await guest.ramResidentBytes();

  const agent = await startNodeAgent(t, ns.name, ns.instanceIp, {
    bpffs: await createBpffs(t),
    healthChecks: { fromUid: CHECKER_UID },
    hostPorts: { interfaces: ['lo', ns.instanceIf] },
    instances: [{
      id: 'vm',
      address: guest.address,
      idleTimeout: '500ms',
      runtime: { kind: 'qemu', mode: 'pause', qmp: guest.qmp, reclaim: true, memoryCgroup: guest.memoryCgroup },
    }],
  });
  await logShows(agent.child, /"to":"sleeping"/, 20_000).catch((error) => {
    throw new Error(`${(error as Error).message}\nstderr: ${agent.stderr()}`);
  });
  const asleep = await guest.ramResidentBytes();
  t.log(`guest RAM resident: ${(resident / 2 ** 20).toFixed(1)} MiB awake, ${(asleep / 2 ** 20).toFixed(1)} MiB asleep`);
  t.true(asleep <= resident * 0.2, 'at least 80 % of the resident guest RAM left memory');
  t.is((await agent.instance('vm')).interface, null);

  // A local checker (Consul on the node) gets the stub's answer; the VM stays paused.
  const check = await getInNetns(ns.name, guest.url, CHECKER_UID);
  t.is(check.status, 200);
  t.regex(check.body, /vm is asleep/);
  t.like(await agent.instance('vm'), { state: 'sleeping', wakes: 0 });

  // A request to the host port: QEMU's own listener took the handshake, the wake lets it through.
  const first = await get(guest.url, 5000);
  t.is(first.status, 200);
  // (Probes that timed out while the guest booted may still reach it later through slirp: > not ===.)
  const after = Number(/^count (\d+)/.exec(first.body)?.[1]);
  t.true(after > before && after < before + 20, `the counter continues (${before} → ${after}): guest memory intact`);
  t.log(`first request to the paused VM: ${first.ms.toFixed(1)} ms`);
  t.true(first.ms < 1000, 'no SYN retransmission (1 s) was needed');
  const awake = await agent.instance('vm');
  t.is(awake.wakes, 1);
  t.log(`wake (event → cont returned): ${awake.lastWakeMs} ms`);

  agent.child.kill('SIGTERM');
  t.is(await agent.exited, 0);
  t.true((await guest.count()) > after, 'left running after a clean exit');
});
