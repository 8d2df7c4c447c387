import test from 'ava';
import { parseSwaps } from '../../agent/cgroups/node-swap.js';
import { compressedShare, parseMmStat, swapMemoryOf, zramDeviceOf } from '../../agent/cgroups/swap-share.js';

const MiB = 2 ** 20;
// /proc/swaps with a zram device and a swap file (sizes in KiB), and the zram device's mm_stat.
const swaps = parseSwaps(
  'Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/zram1                              partition\t1048572\t\t204800\t\t100\n/swapfile                               file\t\t1048572\t\t102400\t\t-2\n',
);
// orig_data_size compr_data_size mem_used_total mem_limit mem_used_max same_pages pages_compacted huge_pages huge_pages_since
const mmStat = `${190 * MiB} ${78 * MiB} ${80 * MiB} 0 ${82 * MiB} 2560 0 0 0`;

test('mm_stat gives zram its memory; only zram devices are read, a swap file costs no RAM', (t) => {
  t.is(parseMmStat(mmStat).memUsedBytes, 80 * MiB);
  t.is(zramDeviceOf('/dev/zram1'), 'zram1');
  t.is(zramDeviceOf('/swapfile'), undefined);
  const read: string[] = [];
  const node = swapMemoryOf(swaps, (device) => (read.push(device), mmStat));
  t.deepEqual(read, ['zram1']);
  t.deepEqual(node, { swappedBytes: 300 * MiB, zramMemoryBytes: 80 * MiB });
});

test("an instance is charged zram's memory in proportion to its swapped bytes; the shares never add up to more than zram holds", (t) => {
  const node = swapMemoryOf(swaps, () => mmStat);
  const shares = [150, 100, 50].map((swapped) => compressedShare(swapped * MiB, node));
  t.is(shares[0], 40 * MiB);
  t.true(shares.reduce((a, b) => a + b, 0) <= node.zramMemoryBytes);
  t.is(compressedShare(0, node), 0);
  t.is(compressedShare(10 * MiB, { swappedBytes: 0, zramMemoryBytes: 0 }), 0, 'no swap');
  t.is(compressedShare(10 * MiB, { swappedBytes: 300 * MiB, zramMemoryBytes: 0 }), 0, 'swap on disk only');
  // Incompressible data: zram stores pages as is plus metadata; a share never exceeds what was swapped.
  t.is(compressedShare(10 * MiB, { swappedBytes: 10 * MiB, zramMemoryBytes: 11 * MiB }), 10 * MiB);
});
