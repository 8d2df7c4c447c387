import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBpffs } from '../helpers/bpffs.js';
import { CHECKER_UID } from '../helpers/checker.js';
import { logShows, REPO } from '../helpers/cli.js';
import { get, type HttpResult } from '../helpers/http.js';
import { createInstance } from '../helpers/instance.js';
import { APP_PORT } from '../helpers/app.js';
import { requireRoot } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';

/*
 * A host-port instance: a process in the node's own network namespace (Nomad's host network
 * mode, or QEMU's user-mode hostfwd), with no interface of its own. The test's namespace plays
 * the node: the app listens on its address, the agent runs inside it (nsenter switches only the
 * network namespace, so cgroups and the private bpffs stay visible) and counts traffic by port on
 * the namespace's lo and veth. Clients: the root namespace through the veth, and the node itself
 * through lo.
 */

const STATUS_PORT = 7070;
/** A second client address on the root side: health checks come from it (healthChecks.fromSources). */
function checkerAddress(hostIp: string): string {
  const [, , c, d] = hostIp.split('.').map(Number);
  return `10.214.${c}.${d}`;
}

function inNetns(ns: string, command: string, args: string[], uid?: number) {
  return spawn('nsenter', [`--net=/run/netns/${ns}`, ...(uid === undefined ? [] : [`--setuid=${uid}`, `--setgid=${uid}`]), command, ...args], {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** One GET from inside the node namespace (over its lo), optionally as another user. */
function getInNetns(ns: string, url: string, uid?: number): Promise<HttpResult> {
  const script = `const s=performance.now();require('http').get(${JSON.stringify(url)},{timeout:3000},(r)=>{let b='';r.on('data',(c)=>b+=c);` +
    `r.on('end',()=>{console.log(JSON.stringify({status:r.statusCode,body:b,ms:performance.now()-s}));process.exit(0)})}).on('error',(e)=>{console.error(e.message);process.exit(2)}).on('timeout',()=>process.exit(3));`;
  const child = inNetns(ns, process.execPath, ['-e', script], uid);
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(JSON.parse(out) as HttpResult);
      else reject(new Error(`GET ${url} in ${ns} exited ${code}`));
    });
  });
}

function getFrom(localAddress: string, url: string): Promise<HttpResult> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: 3000, localAddress }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - started }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
  });
}

interface StatusInstance {
  id: string;
  state: string;
  wakes: number;
  checksAnswered: number;
  interface: string | null;
}

async function instanceStatus(base: string): Promise<StatusInstance> {
  return JSON.parse((await get(`${base}/api/instances/web`)).body) as StatusInstance;
}

test.serial('host port: counted on the node\'s lo and interfaces by port; checks (local by uid, remote by source) never wake it; a request does', async (t) => {
  if (!requireRoot(t)) return;
  const inst = await createInstance(t);
  const { ns } = inst;
  const checker = checkerAddress(ns.hostIp);
  await sh('ip', ['addr', 'add', `${checker}/32`, 'dev', ns.hostIf]);
  await sh('ip', ['-n', ns.name, 'route', 'add', `${checker}/32`, 'dev', ns.instanceIf]);

  const bpffs = await createBpffs(t);
  const config = join(await mkdtemp(join(tmpdir(), 'dz-agent-')), 'doze.json');
  await writeFile(config, JSON.stringify({
    listen: `${ns.instanceIp}:${STATUS_PORT}`,
    bpffs,
    healthChecks: { fromUid: CHECKER_UID, fromSources: [`${checker}/32`] },
    hostPorts: { interfaces: ['lo', ns.instanceIf] },
    instances: [{ id: 'web', address: inst.app.address, idleTimeout: '300ms', runtime: { kind: 'freezer', cgroup: inst.cgroup.name } }],
  }));
  // The agent's iptables chains live in the node namespace: nothing to sweep in the root one.
  const agent = inNetns(ns.name, process.execPath, ['--import', 'tsx', 'cli.ts', 'agent', '--config', config]);
  let stderr = '';
  agent.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exited = new Promise<number | null>((resolve) => agent.on('exit', resolve));
  t.teardown(() => agent.kill('SIGKILL'));
  const statusUrl = `http://${ns.instanceIp}:${STATUS_PORT}`;

  await logShows(agent, /"to":"sleeping"/, 15_000).catch((error) => {
    throw new Error(`${(error as Error).message}\nstderr: ${stderr}`);
  });
  t.is(await inst.cgroup.freezerState(), 'FROZEN');
  const asleep = await instanceStatus(statusUrl);
  t.is(asleep.interface, null, 'shown as a host-port instance');

  // A remote checker (by source address): tc sees it on the veth's ingress before netfilter marks it.
  const remoteCheck = await getFrom(checker, inst.app.url);
  t.is(remoteCheck.status, 200);
  t.regex(remoteCheck.body, /web is asleep/, 'the stub answered the remote check');
  // A local checker (by uid), over lo.
  const localCheck = await getInNetns(ns.name, inst.app.url, CHECKER_UID);
  t.is(localCheck.status, 200);
  t.regex(localCheck.body, /web is asleep/, 'the stub answered the local check');
  const afterChecks = await instanceStatus(statusUrl);
  t.is(afterChecks.state, 'sleeping', 'checks did not wake it');
  t.is(afterChecks.wakes, 0);
  t.true(afterChecks.checksAnswered >= 2);
  t.is(await inst.cgroup.freezerState(), 'FROZEN');

  // A real request from outside the node wakes it; the kernel held the handshake meanwhile.
  const remote = await get(inst.app.url, 3000);
  const asleepAgain = logShows(agent, /"to":"sleeping"/, 10_000);
  t.is(remote.status, 200);
  t.regex(remote.body, /hello from web/);
  t.true(remote.ms < 500, `first request took ${remote.ms.toFixed(1)} ms`);
  t.is(await inst.cgroup.freezerState(), 'THAWED');

  // Asleep again; a request from the node itself (lo) wakes it too.
  await asleepAgain;
  const local = await getInNetns(ns.name, inst.app.url);
  t.is(local.status, 200);
  t.regex(local.body, /hello from web/);
  t.is((await instanceStatus(statusUrl)).wakes, 2);

  // A clean exit takes the programs off the node's interfaces.
  agent.kill('SIGTERM');
  t.is(await exited, 0);
  for (const [device, hook] of [['lo', 'ingress'], [ns.instanceIf, 'ingress'], [ns.instanceIf, 'egress']] as const) {
    t.notRegex(await sh('tc', ['-n', ns.name, 'filter', 'show', 'dev', device, hook]), /doze_/, `no doze filter left on ${device} ${hook}`);
  }
  t.is(await inst.cgroup.freezerState(), 'THAWED');
});
