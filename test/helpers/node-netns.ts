import type { Teardown } from './teardown.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO } from './cli.js';
import { get, type HttpResult } from './http.js';
import { tempDir } from './temp-dir.js';

/*
 * A test namespace playing a Nomad client node, for host-port instances (host network mode,
 * QEMU's hostfwd): the workload listens on the namespace's own address and the agent runs
 * inside it. nsenter switches only the network namespace (ip netns exec would remount /sys and
 * hide the cgroups), so cgroups, files and the private bpffs stay visible.
 */

export function spawnInNetns(ns: string, command: string, args: string[], uid?: number): ChildProcess {
  const user = uid === undefined ? [] : [`--setuid=${uid}`, `--setgid=${uid}`];
  return spawn('nsenter', [`--net=/run/netns/${ns}`, ...user, command, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** One GET from inside the namespace (over its lo), optionally as another user (a local checker). */
export function getInNetns(ns: string, url: string, uid?: number): Promise<HttpResult> {
  const script = `const s=performance.now();require('http').get(${JSON.stringify(url)},{timeout:3000},(r)=>{let b='';r.on('data',(c)=>b+=c);` +
    `r.on('end',()=>{console.log(JSON.stringify({status:r.statusCode,body:b,ms:performance.now()-s}));process.exit(0)})})` +
    `.on('error',(e)=>{console.error(e.message);process.exit(2)}).on('timeout',()=>process.exit(3));`;
  const child = spawnInNetns(ns, process.execPath, ['-e', script], uid);
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

export interface NodeAgent {
  child: ChildProcess;
  /** http://<address>:<port> of its status API. */
  statusUrl: string;
  exited: Promise<number | null>;
  stderr(): string;
  instance(id: string): Promise<{ id: string; state: string; wakes: number; sleeps: number; checksAnswered: number; interface: string | null; lastWakeMs: number | null }>;
}

/** The status API's token of a node agent: it listens on the namespace's address, not loopback, so it needs one. */
export const NODE_AGENT_TOKEN = 'node-agent-token-for-tests';

/** `doze agent` inside the namespace with this config (listen is set to address:7070, with a token); SIGKILLed at teardown. */
export async function startNodeAgent(t: Teardown, ns: string, address: string, config: Record<string, unknown>): Promise<NodeAgent> {
  const file = join(await tempDir(t, 'agent'), 'doze.json');
  await writeFile(file, JSON.stringify({ listen: `${address}:7070`, token: NODE_AGENT_TOKEN, ...config }));
  // Its iptables chains live in the namespace too: nothing to sweep in the root one.
  const child = spawnInNetns(ns, process.execPath, ['--import', 'tsx', 'cli.ts', 'agent', '--config', file]);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  const statusUrl = `http://${address}:7070`;
  return {
    child,
    statusUrl,
    exited,
    stderr: () => stderr,
    instance: async (id) => JSON.parse((await get(`${statusUrl}/api/instances/${id}`)).body),
  };
}
