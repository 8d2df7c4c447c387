import type { ExecutionContext } from 'ava';
import { QemuSnapshotRuntime } from '../../agent/runtimes/qemu/qemu-snapshot.js';
import type { Runtime } from '../../agent/runtimes/runtime.js';
import { nextState, startAgent } from '../helpers/agent.js';
import { get } from '../helpers/http.js';
import { guestTest } from '../helpers/qemu-guest.js';
import { startOwnedGuest, type OwnedGuest } from '../helpers/qemu-owner.js';

// A live guest under TCG behind a `doze vm run` owner, without --prespawn: while it sleeps no
// QEMU reads its tap, so a first SYN let through would be dropped and retransmitted after 1 s.
const TEST_TIMEOUT_MS = 120_000;

/** An agent managing the guest as a snapshot VM with no wake mode set: the default is what is tested. */
async function startSnapshotAgent(t: ExecutionContext, guest: OwnedGuest) {
  const agent = await startAgent(t, {
    instances: [{
      id: 'vm', address: guest.address, interface: guest.tap, idleTimeout: '1500ms', pauseTimeout: '10s', wakeTimeout: '10s',
      runtime: { kind: 'qemu', mode: 'snapshot', control: guest.control },
    }],
  });
  const instance = agent.detector.get('vm')!;
  t.teardown(() => instance.runtime.close?.());
  return { agent, instance };
}

guestTest.serial('a snapshot VM with no wake mode set holds its first connection: answered well under 1 s, no SYN retransmission', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const guest = await startOwnedGuest(t, { fillMiB: 16 });
  const before = await guest.count();
  const { agent, instance } = await startSnapshotAgent(t, guest);
  t.true((instance.runtime as Runtime as QemuSnapshotRuntime).capabilities.dropsFirstSyn, 'the owner has no pre-spawned QEMU: the runtime declares it drops the first SYN');
  t.is(instance.wake, 'hold', 'so it wakes by hold');
  t.true(instance.wakeByDefault);
  await nextState(agent, 'vm', 'sleeping', 30_000);
  t.deepEqual(await guest.qemuPids(), [], 'QEMU is gone while asleep');
  const running = nextState(agent, 'vm', 'running', 10_000);
  const answer = await get(guest.url, 8000);
  await running;
  t.is(answer.status, 200);
  t.is(Number(/^count (\d+)/.exec(answer.body)?.[1]), before + 1, 'the guest kept its memory');
  // A dropped SYN costs the client's retransmission timer: at least 1 s (RFC 6298 initial RTO).
  t.true(answer.ms < 1000, `first request answered in ${answer.ms.toFixed(0)} ms, no retransmission`);
  t.log(`first request to the snapshot-asleep VM (wake hold by default): ${answer.ms.toFixed(0)} ms; doze's wake ${instance.lastWakeMs?.toFixed(0)} ms`);
});

guestTest.serial('with --prespawn the receiver holds the tap: the snapshot VM keeps retry by default', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const guest = await startOwnedGuest(t, { fillMiB: 16, ownerArgs: ['--prespawn'] });
  const { instance } = await startSnapshotAgent(t, guest);
  t.false((instance.runtime as Runtime as QemuSnapshotRuntime).capabilities.dropsFirstSyn);
  t.is(instance.wake, 'retry');
});
