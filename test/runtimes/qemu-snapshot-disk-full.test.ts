import { access, mkdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { Agent } from '../../agent/agent.js';
import { OwnerClient } from '../../agent/runtimes/qemu/owner-protocol.js';
import type { InstanceView } from '../../agent/status/instance-view.js';
import type { TransitionRecord } from '../../agent/status/transition-log.js';
import type { TransitionEvent } from '../../agent/detector/detector.js';
import { nextState, startAgent } from '../helpers/agent.js';
import { get } from '../helpers/http.js';
import { uniqueSuffix } from '../helpers/names.js';
import { guestTest } from '../helpers/qemu-guest.js';
import { startOwnedGuest } from '../helpers/qemu-owner.js';
import { sh, shQuiet } from '../helpers/sh.js';

/*
 * Disk full while a VM goes to sleep as a snapshot. The owner refuses a state
 * directory on tmpfs (guest RAM there would never leave memory), so the tiny
 * filesystem is a loop-mounted ext4 image on disk. Guest RAM is its file in the
 * state directory: its blocks are allocated up front (fallocate), then the rest of
 * the filesystem is filled, so the guest keeps running and only the device-state
 * write (`migrate` to `cat > device.state.part`) hits ENOSPC.
 */

const TEST_TIMEOUT_MS = 150_000;
const MEM_MIB = 96;

async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}

guestTest.serial('a snapshot that cannot be written (disk full): the VM keeps running with its memory, the reason is in the status API, and it sleeps once there is room', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const id = uniqueSuffix();
  const image = `/var/tmp/dz-full-${id}.img`;
  const mnt = `/var/tmp/dz-full-${id}`;
  // Registered before the guest's teardown, so it runs after it (ava runs teardowns last-in first-out).
  t.teardown(async () => {
    await shQuiet('umount', ['-l', mnt]);
    await rm(mnt, { recursive: true, force: true });
    await rm(image, { force: true });
  });
  await sh('truncate', ['-s', `${MEM_MIB + 24}M`, image]);
  await sh('mkfs.ext4', ['-q', '-F', '-O', '^has_journal', '-m', '0', image]);
  await mkdir(mnt, { recursive: true });
  await sh('mount', ['-o', 'loop', image, mnt]);
  const guest = await startOwnedGuest(t, { memMiB: MEM_MIB, stateDir: join(mnt, 'vm') });
  const before = await guest.count();

  // Guest RAM gets all its blocks now (its data untouched); then nothing is left for anything else.
  await sh('fallocate', ['-l', `${MEM_MIB}M`, guest.ramFile]);
  const filler = join(mnt, 'filler');
  await sh('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k'], 30_000).catch((error: Error) => {
    if (!/No space left/.test(error.message)) throw error;
  });
  await sh('sync', []);
  const free = await statfs(mnt);
  t.log(`state directory filesystem: ${((free.bavail * free.bsize) / 1024).toFixed(0)} KiB free`);
  t.true(free.bavail * free.bsize < 256 * 1024, 'less room than the ~600 KiB of device state');

  const agent: Agent = await startAgent(t, {
    instances: [{
      id: 'vm', address: guest.address, interface: guest.tap, idleTimeout: '1500ms', pauseTimeout: '10s', wakeTimeout: '10s',
      runtime: { kind: 'qemu', mode: 'snapshot', control: guest.control },
    }],
  });
  const undone = new Promise<TransitionEvent>((resolve) => {
    agent.detector.on('transition', (e) => {
      if (e.instance.id === 'vm' && e.from === 'pausing' && e.to === 'running') resolve(e);
    });
  });
  const event = await undone;
  t.log(`sleep undone: ${event.reason}`);
  t.regex(event.reason, /pause failed: .*saving device state failed, the VM keeps running/);
  t.regex(event.reason, /No space left on device/, 'the reason names the disk full');

  // The VM runs (the owner sent `cont`), with its memory: the counter continues.
  const owner = await OwnerClient.connect(guest.control, 3000);
  t.teardown(() => owner.close());
  t.is((await owner.request('status', 2000)).state, 'running');
  t.is((await guest.qemuPids()).length, 1, 'the same QEMU keeps running');
  const r = await get(guest.url, 5000);
  t.is(r.status, 200);
  t.is(Number(/^count (\d+)/.exec(r.body)?.[1]), before + 1, 'guest memory intact');
  t.false(await exists(join(guest.stateDir, 'device.state')), 'no snapshot pretends to exist');

  // The status API: running, never slept, and the reason in lastError; the transition carries it too.
  const view = (JSON.parse((await get(`http://${agent.address}/api/instances`)).body) as InstanceView[]).find((i) => i.id === 'vm')!;
  t.is(view.state, 'running');
  t.is(view.sleeps, 0);
  t.is(view.failure, null, 'not a failed instance: it is awake and serving');
  t.regex(view.lastError?.message ?? '', /pause failed: .*No space left on device/);
  const transitions = JSON.parse((await get(`http://${agent.address}/api/transitions`)).body) as TransitionRecord[];
  t.true(transitions.some((x) => x.from === 'pausing' && x.to === 'running' && /No space left on device/.test(x.reason)), 'GET /api/transitions shows why');

  // Room again: the next idle sleep succeeds and the next request restores it.
  await rm(filler, { force: true });
  await nextState(agent, 'vm', 'sleeping', 15_000);
  t.deepEqual(await guest.qemuPids(), []);
  const running = nextState(agent, 'vm', 'running', 10_000);
  const again = await get(guest.url, 8000);
  await running;
  t.is(Number(/^count (\d+)/.exec(again.body)?.[1]), before + 2);
  t.regex((await (await fetch(`http://${agent.address}/api/instances/vm`)).json() as InstanceView).lastError?.message ?? '', /No space left/, 'the last error stays visible after recovery');
});
