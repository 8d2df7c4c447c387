import type { ExecutionContext } from 'ava';
import type { ChildProcess } from 'node:child_process';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listRules } from '../../agent/net/iptables.js';
import { OwnerClient, type OwnerState } from '../../agent/runtimes/qemu/owner-protocol.js';
import type { InstanceView } from '../../agent/status/instance-view.js';
import { createBpffs } from '../helpers/bpffs.js';
import { CHECKER_UID } from '../helpers/checker.js';
import { spawnCli } from '../helpers/cli.js';
import { get } from '../helpers/http.js';
import { uniqueSuffix } from '../helpers/names.js';
import { sweepChainsAtTeardown } from '../helpers/netfilter.js';
import { guestTest } from '../helpers/qemu-guest.js';
import { startOwnedGuest } from '../helpers/qemu-owner.js';
import { sh } from '../helpers/sh.js';
import { until } from '../helpers/until.js';

/*
 * The CLI agent is SIGKILLed while a live VM (TCG guest behind `doze vm run`, snapshot
 * mode) is pausing, and again while it is waking: the kill is aimed at the owner's own
 * transition (`saving`: 40-110 ms, `restoring`: ~300 ms), found by polling the owner's
 * control socket. A restarted agent must find the VM as it really is (nothing left half
 * paused: agent state, state map, check redirect and VM agree) and it must still serve.
 */

const TEST_TIMEOUT_MS = 180_000;

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A CLI agent whose JSON log is collected from the start (so a test can look back as well as wait). */
interface RunningAgent {
  child: ChildProcess;
  log(): string;
  waitLog(pattern: RegExp, fromOffset?: number, timeoutMs?: number): Promise<void>;
  exited: Promise<number | null>;
}

function spawnAgent(t: ExecutionContext, config: string): RunningAgent {
  const child = spawnCli(['agent', '--config', config]);
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  return {
    child,
    exited,
    log: () => out,
    async waitLog(pattern, fromOffset = 0, timeoutMs = 20_000) {
      await until(`the agent's log to match ${pattern}`, () => {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`agent exited before its log matched ${pattern}:\n${out.slice(-3000)}`);
        return pattern.test(out.slice(fromOffset));
      }, { timeoutMs, everyMs: 5, detail: () => out.slice(-3000) });
    },
  };
}

async function sigkill(agent: RunningAgent): Promise<void> {
  agent.child.kill('SIGKILL');
  await agent.exited;
}

guestTest.serial('agent SIGKILLed while the VM is pausing, then while it is waking: each restart finds it as it is (nothing half paused) and it still serves and wakes', async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const guest = await startOwnedGuest(t, { fillMiB: 16 });
  let last = await guest.count();
  const bpffs = await createBpffs(t);
  const prefix = `DZ${uniqueSuffix().toUpperCase()}`;
  sweepChainsAtTeardown(t, prefix);
  const dir = await mkdtemp(join(tmpdir(), 'dz-agent-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const listen = `127.0.0.1:${await freePort()}`;
  const config = join(dir, 'doze.json');
  await writeFile(config, JSON.stringify({
    listen, bpffs, netfilter: { chainPrefix: prefix }, healthChecks: { fromUid: CHECKER_UID },
    instances: [{
      // retry, not the snapshot default (hold): a held connection lives in the agent and dies with it,
      // while a retried SYN reaches the VM whoever is left to wake it.
      id: 'vm', address: guest.address, interface: guest.tap, idleTimeout: '1500ms', pauseTimeout: '10s', wakeTimeout: '10s', wake: 'retry',
      runtime: { kind: 'qemu', mode: 'snapshot', control: guest.control },
    }],
  }));

  const owner = await OwnerClient.connect(guest.control, 3000);
  t.teardown(() => owner.close());
  const ownerState = async (): Promise<OwnerState> => (await owner.request('status', 2000)).state;
  /** Polls the owner (each answer takes ~1 ms) until it is in `state`. */
  const ownerReaches = async (state: OwnerState, timeoutMs: number): Promise<void> => {
    let last: OwnerState | undefined;
    await until(`doze vm to reach ${state}`, async () => (last = await ownerState()) === state, { timeoutMs, everyMs: 1, detail: () => `(now ${last}):\n${guest.ownerOutput().slice(-2000)}` });
  };
  const view = async (): Promise<InstanceView> => {
    const list = JSON.parse((await get(`http://${listen}/api/instances`)).body) as InstanceView[];
    return list.find((i) => i.id === 'vm')!;
  };
  const redirects = async () => (await listRules('nat', `${prefix}-STUB`)).filter((l) => l.startsWith('-A ') && l.includes('doze:vm'));
  const eventReaders = async () => (await sh('sh', ['-c', `ps -eo args | grep -c "[d]oze-maps events ${bpffs}" || true`])).trim();
  const exists = (path: string) => access(path).then(() => true, () => false);
  const countOf = (body: string) => Number(/^count (\d+)/.exec(body)?.[1]);

  // --- 1. SIGKILL while pausing: the owner is saving the device state --------------------------
  const first = spawnAgent(t, config);
  await first.waitLog(/doze agent running/);
  await ownerReaches('saving', 20_000);
  await sigkill(first);
  const atKill = await ownerState();
  t.regex(first.log(), /"from":"running","to":"pausing"/);
  t.notRegex(first.log(), /"to":"sleeping"/, 'the agent died before the sleep completed');
  t.log(`killed the agent while pausing; the VM was ${atKill}`);
  await ownerReaches('sleeping', 10_000); // the owner finishes what it started
  t.deepEqual(await guest.qemuPids(), [], 'asleep: no QEMU');

  const second = spawnAgent(t, config);
  await second.waitLog(/doze agent running/);
  let v = await view();
  t.is(v.state, 'sleeping', 'the restarted agent adopts the VM as the sleeper it became');
  t.is((await redirects()).length, 1, 'one check redirect for it, not two, not none');
  t.is(await eventReaders(), '1', 'the dead agent\'s wake-event reader is gone');
  let mark = second.log().length;
  let answer = await get(guest.url, 10_000);
  await second.waitLog(/"from":"waking","to":"running"/, mark, 10_000);
  t.is(answer.status, 200);
  t.is(countOf(answer.body), last + 1, 'restored with its memory: the counter continues');
  last = countOf(answer.body);
  t.is((await view()).state, 'running');
  t.deepEqual(await redirects(), [], 'the redirect came down on wake');
  t.is(await ownerState(), 'running');
  t.is((await guest.qemuPids()).length, 1);

  // --- 2. SIGKILL while waking: the owner is restoring the VM ---------------------------------
  mark = second.log().length;
  await second.waitLog(/"from":"pausing","to":"sleeping"/, mark, 15_000);
  mark = second.log().length;
  const pending = get(guest.url, 15_000); // its SYN is dropped (no QEMU holds the tap); the retransmission 1 s later lands
  await ownerReaches('restoring', 5000);
  await sigkill(second);
  t.regex(second.log().slice(mark), /"from":"sleeping","to":"waking"/);
  t.notRegex(second.log().slice(mark), /"to":"running"/, 'the agent died before the wake completed');
  answer = await pending;
  t.is(answer.status, 200, 'the request that woke it is answered although the agent died mid-wake');
  t.is(countOf(answer.body), last + 1);
  last = countOf(answer.body);
  t.log(`request answered in ${answer.ms.toFixed(0)} ms across the agent's death`);
  await ownerReaches('running', 5000);

  const third = spawnAgent(t, config);
  await third.waitLog(/doze agent running/);
  v = await view();
  t.is(v.state, 'running', 'the restarted agent adopts the VM as running, not asleep');
  t.deepEqual(await redirects(), [], 'its checks reach the VM, not the stub');
  t.false(await exists(join(guest.stateDir, 'device.state')), 'the stale snapshot is gone');
  // Fully managed again: it idles to sleep and the next request wakes it.
  mark = third.log().length;
  await third.waitLog(/"from":"pausing","to":"sleeping"/, mark, 15_000);
  t.deepEqual(await guest.qemuPids(), []);
  mark = third.log().length;
  answer = await get(guest.url, 10_000);
  await third.waitLog(/"from":"waking","to":"running"/, mark, 10_000);
  t.is(answer.status, 200);
  t.is(countOf(answer.body), last + 1);
  t.is(await eventReaders(), '1');

  third.child.kill('SIGTERM');
  t.is(await third.exited, 0, 'the restarted agent stops cleanly');
  t.is(await ownerState(), 'running', 'and leaves the VM awake');
});
