import type { Agent } from '../../agent/agent.js';
import { isAttached } from '../../agent/net/tc.js';
import { nextState, startAgent } from '../helpers/agent.js';
import { get } from '../helpers/http.js';
import { GUEST_PORT, guestTest } from '../helpers/qemu-guest.js';
import { startOwnedGuest } from '../helpers/qemu-owner.js';
import { uniqueSuffix } from '../helpers/names.js';
import { until } from '../helpers/until.js';

/*
 * Live: `doze vm run --register` hands its VM to a real agent (no instance in
 * the agent's config), the VM sleeps as a snapshot and a request wakes it, and
 * the owner's stop unregisters it (the agent wakes it, then removes its
 * programs) before the VM is stopped. The test guest under TCG on a tap.
 */

const TEST_TIMEOUT_MS = 120_000;

guestTest.serial('doze vm run --register: registered once it runs, sleeps and wakes, unregistered (woken, released) when it stops', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const TOKEN = 'vm-register-token-long-enough';
  // Registrations are off unless enabled, and may only name sockets below the allowed roots: the owner's state dir here.
  const stateDir = `/var/tmp/dz-vm-${uniqueSuffix()}`;
  const agent: Agent = await startAgent(t, { token: TOKEN, registrations: { enabled: true, pathRoots: [stateDir] } });
  const guest = await startOwnedGuest(t, {
    stateDir,
    fillMiB: 16,
    // The tap comes from the QEMU command line; the guest is the other host of its /30.
    ownerArgs: ['--register', `http://${agent.address}`, '--token', TOKEN, '--id', 'vm', '--guest-port', String(GUEST_PORT),
      '--instance-json', JSON.stringify({ idleTimeout: '1500ms', pauseTimeout: '10s', wakeTimeout: '10s' })],
  });
  const instance = await until('the registration', () => agent.detector.get('vm'), { timeoutMs: 10_000, everyMs: 20, detail: () => guest.ownerOutput().slice(-3000) });
  t.is(instance.source, 'api');
  t.like(instance.config, { address: guest.address, interface: guest.tap, runtime: { kind: 'qemu', mode: 'snapshot', control: guest.control } });
  t.true(await isAttached(guest.tap), 'the agent attached its programs to the tap');
  const view = JSON.parse((await get(`http://${agent.address}/api/instances/vm`)).body) as { source: string };
  t.is(view.source, 'api');

  const before = await guest.count();
  await nextState(agent, 'vm', 'sleeping', 15_000);
  t.deepEqual(await guest.qemuPids(), [], 'asleep as a snapshot: no QEMU');
  const running = nextState(agent, 'vm', 'running', 10_000);
  const after = await guest.count(8000);
  await running;
  t.is(after, before + 1, 'woken by a request, memory intact');

  await nextState(agent, 'vm', 'sleeping', 15_000);
  // Nomad's stop: the owner unregisters first (the agent wakes the VM and lets it go), then stops it.
  const transitions: string[] = [];
  agent.detector.on('transition', (e) => e.instance.id === 'vm' && transitions.push(`${e.from}->${e.to}`));
  const started = performance.now();
  guest.owner.child.kill('SIGTERM');
  const exit = await guest.owner.exited;
  const ms = performance.now() - started;
  t.log(`doze vm exited ${exit.code} after ${ms.toFixed(0)} ms; agent transitions ${transitions.join(', ')}`);
  t.is(exit.code, 0, guest.ownerOutput().slice(-2000));
  t.deepEqual(transitions, ['sleeping->waking', 'waking->running'], 'woken before it was released');
  t.is(agent.detector.get('vm'), undefined, 'unregistered');
  t.false(await isAttached(guest.tap), 'its programs are gone from the tap');
  t.deepEqual(await guest.qemuPids(), []);
  t.regex(guest.ownerOutput(), /registered the VM with the agent/);
  t.regex(guest.ownerOutput(), /unregistered the VM from the agent/);
});
