import { tweakRuntime } from '../helpers/runtime-wrappers.js';
import { mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Agent } from '../../agent/agent.js';
import type { Runtime } from '../../agent/runtimes/runtime.js';
import { QemuPauseRuntime } from '../../agent/runtimes/qemu/qemu-pause.js';
import { QmpClient } from '../../agent/runtimes/qemu/qmp-client.js';
import { inState, nextState, startAgent } from '../helpers/agent.js';
import { createBpffs } from '../helpers/bpffs.js';
import { agentCrashedAsleep, logShows, spawnCli, stopAgent } from '../helpers/cli.js';
import { uniqueSuffix } from '../helpers/names.js';
import { sweepChainsAtTeardown } from '../helpers/netfilter.js';
import { get } from '../helpers/http.js';
import { guestTest, noGuest, startGuest, type TestGuest } from '../helpers/qemu-guest.js';
import { runtimeContract } from './contract.js';
import { describeFailure } from '../../agent/detector/reasons.js';

// Live guests under TCG (docs/design.md: KVM here is kvm-pvm). Booting takes 3-10 s on
// two cores, so every test has its own VM and a generous, bounded timeout.
const TEST_TIMEOUT_MS = 120_000;
const MiB = 1024 * 1024;

/** The agent's own runtime for the instance, so the test asks QEMU through the agent's one QMP connection. */
function runtimeOf(agent: Agent, id: string): QemuPauseRuntime {
  let runtime: Runtime = agent.detector.get(id)!.runtime;
  while (!(runtime instanceof QemuPauseRuntime)) runtime = (runtime as Runtime & { inner: Runtime }).inner;
  return runtime;
}

function instanceFor(guest: TestGuest, runtime: Record<string, unknown>, overrides: Record<string, unknown> = {}) {
  return {
    id: 'vm',
    address: guest.address,
    interface: guest.tap,
    idleTimeout: '400ms',
    runtime: { kind: 'qemu', qmp: guest.qmp, ...runtime },
    ...overrides,
  };
}

async function startManaged(t: Parameters<typeof startAgent>[0], guest: TestGuest, runtime: Record<string, unknown>, overrides: Record<string, unknown> = {}, wrap?: (r: Runtime) => Runtime) {
  const agent = await startAgent(t, { instances: [instanceFor(guest, runtime, overrides)] }, wrap ? { wrapRuntime: wrap } : {});
  t.teardown(() => runtimeOf(agent, 'vm').close());
  return agent;
}

guestTest.serial('an idle VM is paused through QMP; a request wakes it and its in-memory counter continues', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const guest = await startGuest(t);
  t.log(`guest booted to HTTP in ${guest.bootMs.toFixed(0)} ms`);
  let last = await guest.count();
  const agent = await startManaged(t, guest, { reclaim: false });
  const runtime = runtimeOf(agent, 'vm');
  for (let cycle = 0; cycle < 3; cycle++) {
    const sleptAfter = await inState(agent, 'vm', 'sleeping', 10_000);
    t.is(await runtime.inspect(), 'asleep', 'QEMU reports the VM stopped');
    t.is((await runtime.qmp.execute<{ status: string }>('query-status', undefined, 1000)).status, 'paused');
    const running = nextState(agent, 'vm', 'running', 5000);
    const answer = await get(guest.url, 5000);
    await running;
    t.is(answer.status, 200);
    const count = Number(/^count (\d+)/.exec(answer.body)?.[1]);
    t.is(count, last + 1, 'the counter kept in guest memory continues');
    last = count;
    const instance = agent.detector.get('vm')!;
    t.log(`cycle ${cycle}: slept ${sleptAfter.toFixed(0)} ms after the last request, wake ${instance.lastWakeMs?.toFixed(1)} ms, first request ${answer.ms.toFixed(1)} ms`);
    t.is(await runtime.inspect(), 'running');
  }
  t.is(agent.detector.get('vm')!.wakes, 3);
});

guestTest.serial('with reclaim, at least 80 % of the resident guest RAM leaves memory while asleep, and comes back on wake', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const guest = await startGuest(t, { memoryCgroup: true, fillMiB: 64 });
  const before = await guest.count();
  const agent = await startManaged(t, guest, { reclaim: true, memoryCgroup: guest.memoryCgroup });
  // Measured just before the sleep: nothing touches the guest between here and the pause.
  const residentAwake = await guest.ramResidentBytes();
  const cgroupAwake = await guest.cgroupBytes();
  t.true(residentAwake > 64 * MiB, `the RAM file has ${residentAwake / MiB} MiB resident after a 64 MiB fill`);
  await inState(agent, 'vm', 'sleeping', 10_000);
  const residentAsleep = await guest.ramResidentBytes();
  const cgroupAsleep = await guest.cgroupBytes();
  const freed = (residentAwake - residentAsleep) / residentAwake;
  const reclaimed = runtimeOf(agent, 'vm').lastReclaim!;
  t.log(`RAM file resident ${(residentAwake / MiB).toFixed(0)} -> ${(residentAsleep / MiB).toFixed(0)} MiB (${(freed * 100).toFixed(1)} % freed); memory cgroup ${(cgroupAwake / MiB).toFixed(0)} -> ${(cgroupAsleep / MiB).toFixed(0)} MiB; write-back + page-out took ${reclaimed.ms.toFixed(0)} ms`);
  t.true(freed >= 0.8, `only ${(freed * 100).toFixed(1)} % of the resident guest RAM left memory`);
  t.true(cgroupAsleep < cgroupAwake - 64 * MiB, 'the VM’s memory cgroup shrank by at least the filled RAM');
  t.is(await runtimeOf(agent, 'vm').inspect(), 'asleep');
  const running = nextState(agent, 'vm', 'running', 5000);
  const answer = await get(guest.url, 5000);
  await running;
  t.is(answer.status, 200);
  t.is(Number(/^count (\d+)/.exec(answer.body)?.[1]), before + 1, 'guest memory came back intact from the RAM file');
  t.log(`wake ${agent.detector.get('vm')!.lastWakeMs?.toFixed(1)} ms, first request ${answer.ms.toFixed(1)} ms, RAM file resident after wake ${((await guest.ramResidentBytes()) / MiB).toFixed(0)} MiB`);
});

guestTest.serial('a request that arrives while the VM is pausing is answered, and nothing is left paused', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const guest = await startGuest(t, { memoryCgroup: true, fillMiB: 32 });
  const before = await guest.count();
  // Stop (and reclaim) at once, but report 400 ms later: the request hits a stopped VM mid-transition.
  let paused!: () => void;
  const pauseTookEffect = new Promise<void>((resolve) => (paused = resolve));
  const slowSleep = tweakRuntime({ sleepLingerMs: 400, onAsleep: () => paused() });
  const agent = await startManaged(t, guest, { reclaim: true, memoryCgroup: guest.memoryCgroup }, {}, slowSleep);
  await nextState(agent, 'vm', 'pausing', 10_000);
  await pauseTookEffect;
  t.is(await runtimeOf(agent, 'vm').inspect(), 'asleep', 'the VM is stopped…');
  t.is(agent.detector.get('vm')!.state, 'pausing', '…while the agent is still pausing');
  const running = nextState(agent, 'vm', 'running', 5000);
  const answer = await get(guest.url, 5000);
  await running;
  t.is(answer.status, 200);
  t.is(Number(/^count (\d+)/.exec(answer.body)?.[1]), before + 1);
  t.log(`answered in ${answer.ms.toFixed(0)} ms`);
  t.is(agent.detector.get('vm')!.state, 'running');
  t.is(await runtimeOf(agent, 'vm').inspect(), 'running', 'nothing is left paused');
});

guestTest.serial('a VM whose QMP socket is gone cannot be woken: the instance becomes failed', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const guest = await startGuest(t);
  const agent = await startManaged(t, guest, { reclaim: false }, { wakeTimeout: '2s' });
  await inState(agent, 'vm', 'sleeping', 10_000);
  await guest.kill();
  await unlink(guest.qmp).catch(() => undefined);
  const failed = nextState(agent, 'vm', 'failed', 5000);
  // Nothing answers this request: it only raises the wake event.
  await get(guest.url, 1000).catch(() => undefined);
  await failed;
  const instance = agent.detector.get('vm')!;
  t.is(instance.state, 'failed');
  t.regex(instance.failure ? describeFailure(instance.failure) : '', /QMP/, `failure says why: ${instance.failure?.detail}`);
  t.is(await runtimeOf(agent, 'vm').inspect(), 'gone');
});

guestTest.serial('probe finds the RAM file through QMP and names what is missing', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const guest = await startGuest(t, { memoryCgroup: true });
  const missing = new QemuPauseRuntime({ qmp: `${guest.dir}/nope.sock`, reclaim: false });
  const gone = await missing.probe();
  t.false(gone.ok);
  t.regex(gone.reason ?? '', /does not answer/);
  const noCgroup = new QemuPauseRuntime({ qmp: guest.qmp, reclaim: true, memoryCgroup: 'doze-test/no-such-cgroup' });
  const wrongCgroup = await noCgroup.probe();
  await noCgroup.close(); // QMP serves one client at a time
  t.regex(wrongCgroup.reason ?? '', /memory cgroup "doze-test\/no-such-cgroup" not found/);
  const ok = new QemuPauseRuntime({ qmp: guest.qmp, reclaim: true, memoryCgroup: guest.memoryCgroup });
  t.teardown(() => ok.close());
  t.deepEqual(await ok.probe(), { ok: true });
  t.is(ok.ramFilePath, guest.ramFile, 'the RAM file is found through QMP (query-memdev, qom-get mem-path)');
  t.true((await ok.memoryBytes())! > 0);
});


async function qemuStatus(qmp: string): Promise<string> {
  const client = await QmpClient.connect(qmp, 3000);
  try {
    return (await client.execute<{ status: string }>('query-status', undefined, 3000)).status;
  } finally {
    client.close();
  }
}

guestTest.serial('agent SIGKILLed while the VM sleeps (RAM reclaimed): a restarted agent adopts it, and the next request wakes it with its memory intact', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const guest = await startGuest(t, { memoryCgroup: true, fillMiB: 32 });
  const before = await guest.count();
  const bpffs = await createBpffs(t);
  const prefix = `DZ${uniqueSuffix().toUpperCase()}`;
  sweepChainsAtTeardown(t, prefix);
  const dir = await mkdtemp(join(tmpdir(), 'dz-agent-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const config = join(dir, 'doze.json');
  await writeFile(config, JSON.stringify({
    listen: '127.0.0.1:0', bpffs, netfilter: { chainPrefix: prefix },
    instances: [instanceFor(guest, { reclaim: true, memoryCgroup: guest.memoryCgroup })],
  }));
  await agentCrashedAsleep(t, config);
  t.is(await qemuStatus(guest.qmp), 'paused', 'a crash leaves the VM stopped');
  t.true((await guest.ramResidentBytes()) < 8 * MiB, 'and its RAM out of memory');

  const second = spawnCli(['agent', '--config', config]);
  t.teardown(() => second.kill('SIGKILL'));
  await logShows(second, /doze agent running/);
  const running = logShows(second, /"to":"running"/);
  const answer = await get(guest.url, 5000);
  await running;
  t.is(answer.status, 200);
  t.is(Number(/^count (\d+)/.exec(answer.body)?.[1]), before + 1, 'the counter continues: guest memory intact');
  t.is(await stopAgent(second), 0, 'the restarted agent stops cleanly');
  t.is(await qemuStatus(guest.qmp), 'running');
});

// The runtime contract over a live VM. QEMU is made late by stopping its process (SIGSTOP: its
// monitor answers nothing until SIGCONT). Its monitor takes one client, so the late request has
// landed once the process runs and the runtime's own next query (answered in order) comes back.
runtimeContract('qemu (pause mode)', async (t) => {
  const guest = await startGuest(t);
  const make = () => new QemuPauseRuntime({ qmp: guest.qmp, reclaim: false });
  const runtime = make();
  const pid = guest.child.pid!;
  t.teardown(() => void process.kill(pid, 'SIGCONT'));
  const stopped = async () => / T /.test(await readFile(`/proc/${pid}/stat`, 'utf8'));
  return {
    runtime,
    another: make,
    slow: {
      slowDown: (ms) => void process.kill(pid, ms > 0 ? 'SIGSTOP' : 'SIGCONT'),
      answeredAll: async () => !(await stopped()) && (await runtime.inspect()) !== 'gone',
    },
  };
}, { unavailable: noGuest, serial: true, timeoutMs: TEST_TIMEOUT_MS, deadlineMs: 20_000, slowMs: 2000 });
