import test from 'ava';
import { rm } from 'node:fs/promises';
import { planTap } from '../../agent/runtimes/qemu/vm-tap.js';
import { runCli } from '../helpers/cli.js';
import { uniqueSuffix } from '../helpers/names.js';
import { guestTest } from '../helpers/qemu-guest.js';
import { rootTest } from '../helpers/root.js';
import { startOwnedGuest } from '../helpers/qemu-owner.js';
import { sh, shQuiet } from '../helpers/sh.js';

const qemu = (netdev: string, device: string) => ['qemu-system-x86_64', '-m', '256M', '-netdev', netdev, '-device', device];

test('--tap-address reads the tap and the guest NIC\'s MAC from the QEMU command line', (t) => {
  t.deepEqual(planTap(qemu('tap,id=n0,ifname=dzweb0,script=no,downscript=no', 'virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56'), '10.213.7.1/30'), {
    name: 'dzweb0', address: '10.213.7.1/30', guestIp: '10.213.7.2', mac: '52:54:00:12:34:56',
  });
  t.is(planTap(['q', '-nic', 'tap,ifname=dzweb1,mac=52:54:00:00:00:01'], '10.213.7.5/30').mac, '52:54:00:00:00:01');
});

test('--tap-address names what is missing: a tap, a MAC, a point-to-point address', (t) => {
  t.throws(() => planTap(['q', '-netdev', 'user,id=n0'], '10.213.7.1/30'), { message: /needs the VM on a tap/ });
  t.throws(() => planTap(qemu('tap,id=n0,ifname=dzweb0', 'virtio-net-pci,netdev=n0'), '10.213.7.1/30'), { message: /add mac=52:54:00:xx:xx:xx to the -device with netdev=n0/ });
  t.throws(() => planTap(qemu('tap,id=n0,ifname=dzweb0', 'virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56'), '10.213.7.1/24'), { message: /host end of a \/30 or \/31/ });
  t.throws(() => planTap(qemu('tap,id=n0,ifname=a-very-long-tap-name', 'virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56'), '10.213.7.1/30'), { message: /at most 15/ });
});

test('doze vm run refuses a bad --tap-address before it starts anything (exit 2)', async (t) => {
  const result = await runCli(['vm', 'run', '--state-dir', '/var/tmp/dz-never', '--tap-address', '10.213.7.1/24', '--',
    ...qemu('tap,id=n0,ifname=dzweb0', 'virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56')]);
  t.is(result.code, 2);
  t.regex(result.stderr, /--tap-address "10\.213\.7\.1\/24"/);
});

guestTest.serial('doze vm run --tap-address makes the tap the VM needs (address, neighbour entry) and removes it when it stops', async (t) => {
  t.timeout(120_000);
  const guest = await startOwnedGuest(t, { ownerCreatesTap: true });
  t.teardown(() => shQuiet('ip', ['link', 'del', guest.tap]));
  t.true((await guest.count()) >= 1, 'the guest answers on the tap the owner made');
  t.regex(await sh('ip', ['-4', 'addr', 'show', 'dev', guest.tap]), /inet 10\.213\.\d+\.\d+\/30/);
  t.regex(await sh('ip', ['neigh', 'show', 'dev', guest.tap]), new RegExp(`${guest.guestIp.replaceAll('.', '\\.')} lladdr ${guest.mac} PERMANENT`));
  guest.owner.child.kill('SIGTERM');
  t.is((await guest.owner.exited).code, 0);
  t.is((await sh('ip', ['link', 'show']).then((links) => links.includes(`${guest.tap}:`))), false, 'the tap is gone with the owner that made it');
});

rootTest.serial('a tap that exists without the --tap-address is refused (exit 2) and left as it was', async (t) => {
  const tap = `dz${uniqueSuffix()}t`;
  t.teardown(() => shQuiet('ip', ['link', 'del', tap]));
  await sh('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap']);
  await sh('ip', ['addr', 'add', '10.213.250.1/30', 'dev', tap]);
  const stateDir = `/var/tmp/dz-vm-${uniqueSuffix()}`;
  t.teardown(() => rm(stateDir, { recursive: true, force: true }));
  const result = await runCli(['vm', 'run', '--state-dir', stateDir, '--tap-address', '10.213.250.5/30', '--',
    ...qemu(`tap,id=n0,ifname=${tap},script=no,downscript=no`, 'virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56')]);
  t.is(result.code, 2, result.stderr);
  t.regex(result.stderr, new RegExp(`tap ${tap} already exists without 10\\.213\\.250\\.5/30`));
  t.regex(await sh('ip', ['-4', 'addr', 'show', 'dev', tap]), /inet 10\.213\.250\.1\/30/);
  t.notRegex(await sh('ip', ['-4', 'addr', 'show', 'dev', tap]), /10\.213\.250\.5/, 'no second address was added');
});
