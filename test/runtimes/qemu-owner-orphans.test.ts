import type { ExecutionContext } from 'ava';
import { OwnerClient } from '../../agent/runtimes/qemu/owner-protocol.js';
import { guestTest } from '../helpers/qemu-guest.js';
import { startOwnedGuest, type OwnedGuest, type OwnerProcess } from '../helpers/qemu-owner.js';
import { until } from '../helpers/until.js';

const TEST_TIMEOUT_MS = 120_000;

async function killOwner(owner: OwnerProcess): Promise<void> {
  owner.child.kill('SIGKILL');
  await owner.exited;
}

/** A new owner on the same state directory comes up (asleep or booted) and the guest answers. */
async function restartsCleanly(t: ExecutionContext, guest: OwnedGuest): Promise<void> {
  const next = guest.startOwner();
  const client = await until('the new owner\'s control socket', () => OwnerClient.connect(guest.control, 500).catch(() => undefined), 15_000);
  t.teardown(() => client.close());
  const status = await until('the new owner settles', async () => {
    const s = await client.request('status', 3000).catch(() => undefined);
    return s && (s.state === 'sleeping' || s.state === 'running') ? s : undefined;
  }, 60_000);
  if (status.state === 'sleeping') await client.request('wake', 30_000);
  const count = await until('the guest answers', () => guest.count(1000).catch(() => undefined), 60_000);
  t.true(count >= 0);
  t.is(next.child.exitCode, null, `the new owner runs:\n${next.output().slice(-1500)}`);
  t.is((await guest.qemuPids()).length, 1, 'exactly one QEMU: the new owner\'s');
}

guestTest.serial('doze vm SIGKILLed during a sleep: its QEMU dies with it, and a new owner on the same state directory starts cleanly', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const guest = await startOwnedGuest(t, { fillMiB: 16 });
  const client = await OwnerClient.connect(guest.control, 3000);
  t.teardown(() => client.close());
  const sleep = client.request('sleep', 30_000).catch(() => undefined);
  await until('the sleep starts', async () => ((await client.request('status', 1000).catch(() => undefined))?.state === 'saving' ? true : undefined), 10_000).catch(() => undefined);
  await killOwner(guest.owner);
  await sleep;
  const pids = await until('no QEMU left', async () => ((await guest.qemuPids()).length === 0 ? [] : undefined), 3000);
  t.deepEqual(pids, []);
  await restartsCleanly(t, guest);
});

guestTest.serial('doze vm SIGKILLed during a wake: the restoring QEMU dies with it, and a new owner on the same state directory starts cleanly', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const guest = await startOwnedGuest(t, { fillMiB: 16 });
  const client = await OwnerClient.connect(guest.control, 3000);
  t.teardown(() => client.close());
  await client.request('sleep', 30_000);
  t.deepEqual(await guest.qemuPids(), [], 'asleep as a snapshot: no QEMU');
  const wake = client.request('wake', 30_000).catch(() => undefined);
  // The receiving QEMU (-incoming defer) is up: the moment the orphan used to be left behind.
  const restoring = await until('the restoring QEMU appears', async () => ((await guest.qemuPids()).length > 0 ? guest.qemuPids() : undefined), 10_000);
  await killOwner(guest.owner);
  await wake;
  await until('the restoring QEMU is gone', async () => ((await guest.qemuPids()).length === 0 ? true : undefined), 3000);
  t.log(`restoring QEMU ${restoring.join(',')} died with its owner`);
  await restartsCleanly(t, guest);
});
