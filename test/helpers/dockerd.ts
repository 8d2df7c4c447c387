import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, copyFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { diesWithParent } from '../../agent/process/die-with-parent.js';
import { APP_PATH } from './app.js';
import { uniqueSuffix } from './names.js';
import { missing, firstMissing, testIf } from './needs.js';
import { noRoot } from './root.js';
import { sh, shQuiet } from './sh.js';
import type { Teardown } from './teardown.js';
import { until } from './until.js';

/*
 * A real Docker engine per test (Debian's docker.io: dockerd 20.10 with
 * containerd and runc), on its own socket, data root, exec root and pidfile,
 * with no bridge of the host's (`--bridge none`, or a dz- bridge the helper
 * makes) and no iptables rules (`--iptables=false --ip-masq=false`: docker's
 * port publishing then goes through docker-proxy, which needs no rule). Its
 * one image is imported from a local root filesystem (POST
 * /images/create?fromSrc=-), so no registry is needed: a static busybox, the
 * fixture app (demo/app.mjs) and the node that runs it, bind-mounted
 * read-only from the host's /usr. Teardown removes every container and image
 * it made, stops the daemon (which stops its containerd), unmounts what it
 * left and removes its directories and bridge.
 */

/** dockerd on PATH (docker.io); CI installs it, so a missing one fails the run there. */
export const noDocker = missing('docker', () => {
  const found = spawnSync('sh', ['-c', 'command -v dockerd && command -v containerd && command -v runc'], { encoding: 'utf8' });
  return found.status === 0 ? undefined : 'dockerd, containerd and runc are not on PATH (apt-get install docker.io)';
});

/** `test` gated on root and a Docker engine. */
export const dockerTest = testIf(firstMissing(noRoot, noDocker));

export interface ContainerSpec {
  name: string;
  cmd: string[];
  labels?: Record<string, string>;
  env?: Record<string, string>;
  /** `none`, `host`, `bridge`, `container:<id>` (Docker's default is its bridge). */
  networkMode?: string;
  /** Container port ("8080/tcp") → host port ("0" for any). */
  publish?: Record<string, string>;
  /** The host address published ports bind (default 127.0.0.1). */
  publishIp?: string;
  memoryBytes?: number;
}

export interface StartedContainer {
  id: string;
  pid: number;
  sandboxKey: string;
  /** The address on Docker's bridge, when on it. */
  bridgeIp: string | undefined;
  /** Published host ports by container port. */
  hostPorts: Record<string, number>;
}

export interface TestDockerd {
  socket: string;
  /** The image every container runs: /bin/busybox, the fixture app at /dz/app.mjs, node from the host's /usr. */
  image: string;
  /** The bridge dockerd uses (when made with `bridge`), with its address. */
  bridge: { name: string; ip: string } | undefined;
  /** An Engine API call; the body is JSON. */
  api(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }>;
  /** Creates and starts a container, as Nomad's docker driver does (create, then start). */
  run(spec: ContainerSpec): Promise<StartedContainer>;
  /** The node command line that runs the fixture app in a container. */
  appCmd(host: string, port: number, name: string): string[];
}

function call(socket: string, method: string, path: string, body?: Buffer | string, contentType = 'application/json'): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method, path, headers: body === undefined ? {} : { 'content-type': contentType }, timeout: 30_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown = text;
        try {
          json = JSON.parse(text);
        } catch {
          // plain text (the import's progress lines, /_ping)
        }
        resolve({ status: res.statusCode ?? 0, json });
      });
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 30 s`)));
    req.end(body);
  });
}

export interface DockerdOptions {
  /** Make a bridge of this test (a /24 of 10.214.0.0/16) for Docker's own network; default none. */
  bridge?: boolean;
  /**
   * Let dockerd write its iptables rules (DOCKER* chains, its DNAT of published ports): for a case
   * that needs Docker's DNAT. Teardown removes its jumps and chains and puts the FORWARD policy back.
   */
  iptables?: boolean;
}

/** Docker's jumps from the built-in chains, its rules for the test's bridge and its DOCKER* chains, in filter and nat; the FORWARD policy as it was. */
async function removeDockerRules(forwardPolicy: string, bridge: string | undefined): Promise<void> {
  for (const table of ['filter', 'nat']) {
    const rules = (await sh('iptables', ['-t', table, '-S']).catch(() => '')).split('\n');
    const ours = (r: string) => /^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j DOCKER/.test(r) || (bridge !== undefined && /^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) /.test(r) && r.split(' ').includes(bridge));
    for (const rule of rules.filter(ours)) {
      await shQuiet('iptables', ['-t', table, '-D', ...rule.slice(3).split(' ')]);
    }
    const chains = rules.flatMap((r) => /^-N (DOCKER[\w-]*)$/.exec(r)?.[1] ?? []);
    for (const chain of chains) await shQuiet('iptables', ['-t', table, '-F', chain]);
    for (const chain of chains) await shQuiet('iptables', ['-t', table, '-X', chain]);
  }
  await shQuiet('iptables', ['-P', 'FORWARD', forwardPolicy]);
}

/** Starts a dockerd of this test and imports its image; teardown stops it and removes everything it made. */
export async function startDockerd(t: Teardown, options: DockerdOptions = {}): Promise<TestDockerd> {
  const dir = await mkdtemp(join(tmpdir(), 'dz-dockerd-'));
  const socket = join(dir, 'd.sock');
  const image = `dz-img-${uniqueSuffix()}:1`;
  let child: ChildProcess | undefined;
  let bridge: TestDockerd['bridge'];
  let exited: Promise<void> = Promise.resolve();
  const forwardPolicy = /^-P FORWARD (\w+)/m.exec(await sh('iptables', ['-S', 'FORWARD']))?.[1] ?? 'ACCEPT';
  t.teardown(async () => {
    if (existsSync(socket)) {
      const listed = await call(socket, 'GET', '/containers/json?all=1').catch(() => ({ status: 0, json: [] }));
      for (const c of Array.isArray(listed.json) ? (listed.json as Array<{ Id: string }>) : []) {
        // A container frozen by the agent under test must thaw before it can die.
        for (const file of [`/sys/fs/cgroup/freezer/docker/${c.Id}/freezer.state`]) await writeFile(file, 'THAWED').catch(() => undefined);
        await call(socket, 'DELETE', `/containers/${c.Id}?force=1&v=1`).catch(() => undefined);
      }
      await call(socket, 'DELETE', `/images/${image}?force=1`).catch(() => undefined);
    }
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child?.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(killer);
    }
    // Whatever the daemon left mounted (overlay layers, netns bind mounts), deepest first.
    const mounts = (await readFile('/proc/mounts', 'utf8')).split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(dir)).sort().reverse();
    for (const mount of mounts) await shQuiet('umount', ['-l', mount]);
    await rm(dir, { recursive: true, force: true });
    if (bridge) await shQuiet('ip', ['link', 'del', bridge.name]);
    if (options.iptables) await removeDockerRules(forwardPolicy, bridge?.name);
  });

  // The image's root filesystem: busybox, /lib and /lib64 pointing into the host's /usr (mounted at run).
  const root = join(dir, 'rootfs');
  for (const sub of ['bin', 'dz', 'tmp', 'usr', 'www', 'etc']) await mkdir(join(root, sub), { recursive: true });
  await copyFile('/bin/busybox', join(root, 'bin', 'busybox'));
  await symlink('busybox', join(root, 'bin', 'sh'));
  await symlink('usr/lib', join(root, 'lib'));
  await symlink('usr/lib64', join(root, 'lib64'));
  await copyFile(APP_PATH, join(root, 'dz', 'app.mjs'));
  await copyFile(new URL('./tcp-proxy.mjs', import.meta.url), join(root, 'dz', 'tcp-proxy.mjs'));
  await writeFile(join(root, 'www', 'index.html'), 'hello from busybox\n');
  await writeFile(join(root, 'etc', 'passwd'), 'root:x:0:0:root:/:/bin/sh\n');

  const args = ['--data-root', join(dir, 'data'), '--exec-root', join(dir, 'x'), '-H', `unix://${socket}`, '--pidfile', join(dir, 'pid'), `--iptables=${options.iptables === true}`, '--ip-masq=false', '--ip-forward=false',
    // dockerd uses a containerd already running at /run/containerd (a node's docker.io service) instead of
    // starting its own: namespaces of its own there keep its containers apart from everyone else's.
    '--containerd-namespace', `dz-${uniqueSuffix()}`, '--containerd-plugins-namespace', `dz-${uniqueSuffix()}-plugins`];
  if (options.bridge) {
    const name = `dzb${uniqueSuffix()}`;
    const block = Math.floor(Math.random() * 250) + 1;
    bridge = { name, ip: `10.214.${block}.1` };
    await sh('ip', ['link', 'add', name, 'type', 'bridge']);
    await sh('ip', ['addr', 'add', `${bridge.ip}/24`, 'dev', name]);
    await sh('ip', ['link', 'set', name, 'up']);
    args.push('--bridge', name);
  } else {
    args.push('--bridge', 'none');
  }
  const log: string[] = [];
  // A test run that dies leaves no daemon behind (its managed containerd dies with it).
  const [command, ...argv] = diesWithParent(['dockerd', ...args]);
  child = spawn(command!, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  exited = new Promise((resolve) => child!.once('exit', () => resolve()));
  for (const stream of [child.stdout!, child.stderr!]) stream.on('data', (chunk: Buffer) => log.push(chunk.toString('utf8')));
  await until('dockerd to answer /_ping', async () => child!.exitCode === null && (await call(socket, 'GET', '/_ping')).status === 200, {
    timeoutMs: 30_000,
    everyMs: 50,
    retryErrors: true,
    detail: () => log.join('').slice(-2000),
  });

  const tar = spawnSync('tar', ['-C', root, '-c', '.'], { maxBuffer: 64 << 20 });
  if (tar.status !== 0) throw new Error(`tar: ${tar.stderr.toString()}`);
  const [repo, tag] = image.split(':');
  const imported = await call(socket, 'POST', `/images/create?fromSrc=-&repo=${repo}&tag=${tag}`, tar.stdout, 'application/x-tar');
  if (imported.status !== 200) throw new Error(`docker import: ${imported.status} ${JSON.stringify(imported.json)}`);

  const api = (method: string, path: string, body?: unknown) => call(socket, method, path, body === undefined ? undefined : JSON.stringify(body));
  return {
    socket,
    image,
    bridge,
    api,
    appCmd: (host, port, name) => ['/usr/bin/node', '/dz/app.mjs', host, String(port), name],
    async run(spec) {
      const exposed = Object.fromEntries(Object.keys(spec.publish ?? {}).map((p) => [p, {}]));
      const portBindings = Object.fromEntries(Object.entries(spec.publish ?? {}).map(([p, host]) => [p, [{ HostIp: spec.publishIp ?? '127.0.0.1', HostPort: host }]]));
      const created = await api('POST', `/containers/create?name=${encodeURIComponent(spec.name)}`, {
        Image: image,
        Cmd: spec.cmd,
        Labels: spec.labels ?? {},
        Env: Object.entries(spec.env ?? {}).map(([k, v]) => `${k}=${v}`),
        ExposedPorts: exposed,
        HostConfig: {
          NetworkMode: spec.networkMode ?? 'none',
          Binds: ['/usr:/usr:ro'],
          PortBindings: portBindings,
          ...(spec.memoryBytes ? { Memory: spec.memoryBytes, MemorySwap: spec.memoryBytes, MemorySwappiness: 0 } : {}),
        },
      });
      if (created.status !== 201) throw new Error(`create ${spec.name}: ${created.status} ${JSON.stringify(created.json)}`);
      const id = (created.json as { Id: string }).Id;
      const started = await api('POST', `/containers/${id}/start`);
      if (started.status !== 204) throw new Error(`start ${spec.name}: ${started.status} ${JSON.stringify(started.json)}`);
      const inspect = (await api('GET', `/containers/${id}/json`)).json as {
        State: { Pid: number };
        NetworkSettings: { SandboxKey: string; Networks?: Record<string, { IPAddress: string }>; Ports?: Record<string, Array<{ HostPort: string }> | null> };
      };
      const hostPorts = Object.fromEntries(Object.entries(inspect.NetworkSettings.Ports ?? {}).flatMap(([p, b]) => (b?.[0] ? [[p, Number(b[0].HostPort)]] : [])));
      const bridgeIp = Object.values(inspect.NetworkSettings.Networks ?? {}).find((n) => n.IPAddress)?.IPAddress;
      return { id, pid: inspect.State.Pid, sandboxKey: inspect.NetworkSettings.SandboxKey, bridgeIp, hostPorts };
    },
  };
}
