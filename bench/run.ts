/** `make bench`: every benchmark in turn; prints ratios and percentiles from one run. */
import { benchAttach } from './attach.js';
import { benchDensity } from './density.js';
import { benchDocker } from './docker.js';
import { benchIdleCpu } from './idle-cpu.js';
import { benchReclaim } from './reclaim.js';
import { benchScale } from './scale.js';
import { benchSoak } from './soak.js';
import { benchStub } from './stub.js';
import { benchTcCost } from './tc-cost.js';
import { benchVm, benchVmSnapshot } from './vm.js';
import { benchVmHostfwd } from './vm-hostfwd.js';
import { benchWake } from './wake.js';

const benches: Array<[string, () => Promise<string[]>]> = [
  ['wake', () => benchWake(Number(process.env.DOZE_BENCH_CYCLES ?? 200))],
  ['tc-cost', benchTcCost],
  // DOZE_BENCH_ATTACH (1000) interfaces attached by fd, DOZE_BENCH_ATTACH_OLD (1000) the old way (tc … obj).
  ['attach', () => benchAttach(Number(process.env.DOZE_BENCH_ATTACH ?? 1000), Number(process.env.DOZE_BENCH_ATTACH_OLD ?? 1000))],
  ['stub', benchStub],
  ['idle-cpu', benchIdleCpu],
  ['scale', benchScale],
  ['vm', () => benchVm(Number(process.env.DOZE_BENCH_VM_CYCLES ?? 10))],
  ['vm-snapshot', () => benchVmSnapshot(Number(process.env.DOZE_BENCH_VM_CYCLES ?? 10))],
  ['vm-hostfwd', () => benchVmHostfwd(Number(process.env.DOZE_BENCH_VM_CYCLES ?? 10))],
  ['reclaim', () => benchReclaim(Number(process.env.DOZE_BENCH_RECLAIM_CYCLES ?? 20))],
  ['docker', () => benchDocker(Number(process.env.DOZE_BENCH_DOCKER_CYCLES ?? 50))],
  ['density', () => benchDensity(Number(process.env.DOZE_BENCH_DENSITY_APPS ?? 8))],
  // DOZE_SOAK_INSTANCES (50), DOZE_SOAK_SECONDS (180, at most 600), DOZE_SOAK_IDLE_MS (250).
  ['soak', () => benchSoak()],
];

if (process.getuid?.() !== 0) {
  process.stderr.write('make bench needs root (namespaces, tc, eBPF, cgroups)\n');
  process.exit(2);
}
const only = process.argv[2];
for (const [name, bench] of benches) {
  if (only && name !== only) continue;
  const lines = await bench();
  process.stdout.write(`\n== ${name}\n${lines.join('\n')}\n`);
}
process.exit(0);
