/**
 * `make demo`: the agent on an embedded default. Creates a network namespace
 * joined by a veth pair, runs a small HTTP app inside a freezer cgroup, and
 * starts the agent on it. Ctrl-C wakes the app and removes everything.
 * `--self-test` runs the same setup non-interactively: sleep, wake by a
 * request, check the answer, clean up, exit 0.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Agent } from '../agent/agent.js';
import { parseConfig } from '../agent/config/load.js';
import { messageOf } from '../agent/shared/errors.js';
import { createLogger } from '../agent/shared/log.js';
import { BpffsLock } from '../agent/sources/bpffs-lock.js';
import { run } from '../agent/process/exec.js';
import { readNodeSwap } from '../agent/cgroups/node-swap.js';
import { defaultFreezerHandle } from '../agent/runtimes/create-runtime.js';
import type { ReclaimOutcome } from '../agent/runtimes/freezer-reclaim.js';

const HELP = `Usage: make demo   (or: node dist/demo/demo.js [--self-test] [--listen HOST:PORT])

Runs doze on a local instance: a namespace "dz-demo-…" with an HTTP app at
10.213.254.2:8080 in a freezer cgroup, the agent, and its status page.
  --self-test          run unattended: wait for sleep, wake with a request, exit
  --listen HOST:PORT   status page address (default 127.0.0.1:7070)
  --idle DURATION      idle timeout (default 2s, so you can watch it)
Needs root (namespaces, tc, eBPF, cgroups). Ctrl-C cleans up.`;

const APP = fileURLToPath(new URL(existsSync(fileURLToPath(new URL('./app.mjs', import.meta.url))) ? './app.mjs' : '../../demo/app.mjs', import.meta.url));
const say = (line: string) => process.stdout.write(`${line}\n`);

interface Setup {
  ns: string;
  hostIf: string;
  hostIp: string;
  appIp: string;
  cgroupName: string;
  cgroupDir: string;
  /** The app's memory cgroup (same name under the v1 memory hierarchy), when there is one. */
  memoryDir?: string;
  /** A zram swap the demo added (hot_add id), removed on exit. */
  zram?: string;
  app?: ChildProcess;
}

/** MiB of text-like data the demo app holds, so its memory awake and reclaimed asleep shows. */
const HOLD_MIB = 64;

/** The demo's own zram swap (docs/memory.md), only when the node has no swap and can add a device. */
async function addZram(): Promise<string | undefined> {
  if (readNodeSwap().available || !existsSync('/sys/class/zram-control/hot_add')) return undefined;
  try {
    const id = (await readFile('/sys/class/zram-control/hot_add', 'utf8')).trim();
    await writeFile(`/sys/block/zram${id}/comp_algorithm`, 'lz4').catch(() => undefined);
    await writeFile(`/sys/block/zram${id}/disksize`, '512M');
    await run('mkswap', [`/dev/zram${id}`]);
    await run('swapon', ['-p', '100', `/dev/zram${id}`]);
    return id;
  } catch {
    return undefined;
  }
}

async function removeZram(id: string): Promise<void> {
  await run('swapoff', [`/dev/zram${id}`], { allowFailure: true }).catch(() => undefined);
  await writeFile(`/sys/block/zram${id}/reset`, '1').catch(() => undefined);
  await writeFile('/sys/class/zram-control/hot_remove', id).catch(() => undefined);
}

async function create(selfTest: boolean): Promise<Setup> {
  const id = randomInt(0, 0xffffff).toString(16).padStart(6, '0');
  const third = selfTest ? 200 + randomInt(0, 50) : 254;
  const fourth = selfTest ? randomInt(0, 63) * 4 : 0;
  const s: Setup = {
    ns: `dz-demo-${id}`, hostIf: `dz${id}h`,
    hostIp: `10.213.${third}.${fourth + 1}`, appIp: `10.213.${third}.${fourth + 2}`,
    cgroupName: `doze-demo/dz-${id}`, cgroupDir: `/sys/fs/cgroup/freezer/doze-demo/dz-${id}`,
  };
  try {
    await build(s, id);
  } catch (error) {
    // Half a set-up is worse than none: its namespace and veth would hold the demo's address, and
    // the next demo would fail on it. Remove whatever was made, then report.
    await destroy(s);
    throw error;
  }
  return s;
}

/** The namespace, veth, cgroups, swap and app of the demo, recorded in `s` as each is made. */
async function build(s: Setup, id: string): Promise<void> {
  await run('ip', ['netns', 'add', s.ns]);
  await run('ip', ['link', 'add', s.hostIf, 'type', 'veth', 'peer', 'name', `dz${id}i`, 'netns', s.ns]);
  await run('ip', ['addr', 'add', `${s.hostIp}/30`, 'dev', s.hostIf]);
  await run('ip', ['link', 'set', s.hostIf, 'up']);
  await run('ip', ['-n', s.ns, 'addr', 'add', `${s.appIp}/30`, 'dev', `dz${id}i`]);
  await run('ip', ['-n', s.ns, 'link', 'set', `dz${id}i`, 'up']);
  await run('ip', ['-n', s.ns, 'link', 'set', 'lo', 'up']);
  await mkdir(s.cgroupDir, { recursive: true });
  if (existsSync('/sys/fs/cgroup/memory')) {
    s.memoryDir = `/sys/fs/cgroup/memory/${s.cgroupName}`;
    await mkdir(s.memoryDir, { recursive: true });
  }
  s.zram = await addZram();
  const joinMemory = s.memoryDir ? ` && echo $$ > ${s.memoryDir}/cgroup.procs` : '';
  const script = `echo $$ > ${s.cgroupDir}/cgroup.procs${joinMemory} && exec ip netns exec ${s.ns} ${process.execPath} ${APP} ${s.appIp} 8080 demo`;
  s.app = spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, DOZE_APP_HOLD_MIB: String(HOLD_MIB) } });
  await new Promise<void>((resolve, reject) => {
    s.app!.stdout!.once('data', () => resolve());
    s.app!.once('exit', (code) => reject(new Error(`demo app exited with ${code}`)));
  });
}

async function destroy(s: Setup): Promise<void> {
  await writeFile(join(s.cgroupDir, 'freezer.state'), 'THAWED').catch(() => undefined);
  s.app?.kill('SIGKILL');
  await run('ip', ['link', 'del', s.hostIf], { allowFailure: true }).catch(() => undefined);
  await run('ip', ['netns', 'del', s.ns], { allowFailure: true }).catch(() => undefined);
  for (let i = 0; i < 50; i++) {
    const procs = await readFile(join(s.cgroupDir, 'cgroup.procs'), 'utf8').catch(() => '');
    if (procs.trim() === '') break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await rmdir(s.cgroupDir).catch(() => undefined);
  await rmdir(dirname(s.cgroupDir)).catch(() => undefined); // doze-demo/, unless another demo runs
  if (s.memoryDir) {
    await rmdir(s.memoryDir).catch(() => undefined);
    await rmdir(dirname(s.memoryDir)).catch(() => undefined);
  }
  if (s.zram) await removeZram(s.zram);
  await rm(defaultFreezerHandle(s.cgroupName), { force: true }).catch(() => undefined);
}

function get(url: string): Promise<{ status: number; body: string; ms: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - started }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { 'self-test': { type: 'boolean' }, listen: { type: 'string' }, idle: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    say(HELP);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('doze demo: needs root (network namespaces, tc, eBPF, cgroups). Run it as root (make demo re-runs itself under sudo where sudo exists)\n');
    return 2;
  }
  if (!existsSync('/sys/fs/cgroup/freezer')) {
    process.stderr.write('doze demo: needs the cgroup v1 freezer at /sys/fs/cgroup/freezer\n');
    return 2;
  }
  const selfTest = values['self-test'] ?? false;
  if (!selfTest) {
    // Another demo or agent on this node's bpffs: say so before making a namespace whose
    // address (10.213.254.0/30) would shadow the running demo's.
    try {
      await (await BpffsLock.acquire({ bpffs: '/sys/fs/bpf', listen: values.listen ?? '127.0.0.1:7070', chainPrefix: 'DOZE', log: createLogger('silent') })).release();
    } catch (error) {
      process.stderr.write(`doze demo: ${messageOf(error)}
`);
      return 2;
    }
  }
  const setup = await create(selfTest);
  const configDir = await mkdtemp(join(tmpdir(), 'doze-demo-'));
  const configFile = join(configDir, 'doze.json');
  const rawConfig = {
    listen: values.listen ?? (selfTest ? '127.0.0.1:0' : '127.0.0.1:7070'),
    logLevel: 'warn',
    instances: [{
      id: 'demo', address: `${setup.appIp}:8080`, interface: setup.hostIf,
      idleTimeout: values.idle ?? (selfTest ? '300ms' : '2s'),
      // Its memory goes to swap once it has slept a little (docs/memory.md); without swap it sleeps as a plain freezer instance.
      runtime: { kind: 'freezer', cgroup: setup.cgroupName, reclaim: true, reclaimAfter: selfTest ? '200ms' : '3s' },
    }],
  };
  await writeFile(configFile, JSON.stringify(rawConfig, null, 2));
  let agent: Agent | undefined;
  try {
    agent = await Agent.start(parseConfig(rawConfig), createLogger('warn'));
  } catch (error) {
    process.stderr.write(`doze demo: agent failed to start: ${messageOf(error)}\n`);
    await destroy(setup);
    await rm(configDir, { recursive: true, force: true });
    return 1;
  }
  agent.detector.on('transition', (e) => say(`  ${new Date(e.at).toISOString().slice(11, 23)}  ${e.instance.id}: ${e.from} → ${e.to}  (${e.reason})`));
  agent.detector.on('woke', (i, seconds) => say(`  woke ${i.id} in ${(seconds * 1000).toFixed(2)} ms (wake request → resumed)`));
  let nextReclaim: ((o: ReclaimOutcome) => void) | undefined;
  agent.detector.get('demo')!.runtime.onReclaim?.((o) => {
    const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
    say(o.result === 'done' || o.result === 'partial'
      ? `  reclaimed demo's memory in ${o.ms.toFixed(0)} ms: ${mib(o.beforeBytes)} awake → ${mib(o.afterBytes)} asleep, ${mib(o.swappedBytes)} in swap`
      : `  reclaim ${o.result}${o.reason ? `: ${o.reason}` : ''}`);
    nextReclaim?.(o);
  });

  const cleanup = async () => {
    await agent?.stop().catch((error) => process.stderr.write(`cleanup: ${messageOf(error)}\n`));
    await destroy(setup);
    await rm(configDir, { recursive: true, force: true });
  };

  if (selfTest) {
    say(`self-test: config ${configFile}`);
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('never fell asleep')), 10_000);
        agent!.detector.on('slept', () => {
          clearTimeout(timer);
          resolve();
        });
      });
      const frozen = (await readFile(join(setup.cgroupDir, 'freezer.state'), 'utf8')).trim();
      const answer = await get(`http://${setup.appIp}:8080/`);
      say(`self-test: cgroup was ${frozen}; first request answered ${answer.status} in ${answer.ms.toFixed(1)} ms: ${answer.body.trim()}`);
      if (frozen !== 'FROZEN' || answer.status !== 200) return 1;
      // Once more, past reclaimAfter: the memory goes out, and the first request faults what it reads back.
      const reclaimed = new Promise<ReclaimOutcome>((resolve) => (nextReclaim = resolve));
      await new Promise<void>((resolve) => agent!.detector.once('slept', () => resolve()));
      const outcome = await Promise.race([reclaimed, new Promise<undefined>((resolve) => setTimeout(resolve, 15_000))]);
      const data = await get(`http://${setup.appIp}:8080/data`);
      say(`self-test: after a ${outcome ? `reclaimed (${outcome.result})` : 'plain'} sleep the first request (reads ${HOLD_MIB / 100} MiB of ${HOLD_MIB}) answered ${data.status} in ${data.ms.toFixed(1)} ms`);
      return data.status === 200 ? 0 : 1;
    } finally {
      await cleanup();
    }
  }

  say(`
doze demo is running.
  app        http://${setup.appIp}:8080/   (namespace ${setup.ns}, cgroup freezer:${setup.cgroupName})
  status     http://${agent.address}/        JSON: http://${agent.address}/api/instances   metrics: /metrics
  config     ${configFile}

Try:
  curl http://${setup.appIp}:8080/            # wakes it; the counter in the answer survives every sleep
  cat ${setup.cgroupDir}/freezer.state        # FROZEN while it sleeps
  curl http://${setup.appIp}:8080/data        # reads 1 % of the ${HOLD_MIB} MiB it holds: after a reclaimed sleep, from swap
  ${setup.memoryDir ? `cat ${setup.memoryDir}/memory.usage_in_bytes  # its memory: ~${HOLD_MIB + 20} MiB awake, a few MiB once reclaimed` : '(no v1 memory cgroup here: memory is not measured)'}
  ${setup.zram ? `swap: the demo added /dev/zram${setup.zram} (removed on exit)` : readNodeSwap().available ? 'swap: the node\'s own' : 'swap: none, so no reclaim (docs/memory.md)'}
  node dist/cli.js status --addr http://${agent.address}

It falls asleep after ${rawConfig.instances[0]!.idleTimeout} without traffic. Ctrl-C wakes it and removes everything.
`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  say('\nstopping: waking the app, removing programs, namespace and cgroup…');
  await cleanup();
  say('done.');
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`doze demo: ${messageOf(error)}\n`);
    process.exit(1);
  },
);
