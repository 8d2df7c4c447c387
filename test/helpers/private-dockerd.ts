import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { execFile, execFileSync } from 'node:child_process';
import { missing } from './needs.js';
import type { Teardown } from './teardown.js';
import { until } from './until.js';

/** Docker's engine and CLI, for the image test. */
export const noDocker = missing('docker', () => {
  for (const tool of ['dockerd', 'docker']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `${tool} is not installed (Debian: docker.io)`;
    }
  }
  return undefined;
});

export interface PrivateDockerd {
  /** DOCKER_HOST for the CLI. */
  host: string;
  docker(args: string[], timeoutMs?: number): Promise<string>;
}

/**
 * A dockerd of the test's own: its own socket, data root and exec root under
 * /var/tmp/dz-dockerd-*, no bridge and no iptables rules of its own (the
 * containers use the host network). Teardown stops it and removes its data.
 */
export async function startPrivateDockerd(t: Teardown): Promise<PrivateDockerd> {
  const dir = await mkdtemp('/var/tmp/dz-dockerd-');
  const host = `unix://${dir}/d.sock`;
  const daemon = spawn('dockerd', ['--data-root', `${dir}/data`, '--exec-root', `${dir}/x`, '-H', host, '--pidfile', `${dir}/pid`, '--iptables=false', '--ip-masq=false', '--ip-forward=false', '--bridge', 'none'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  daemon.stderr.on('data', (c: Buffer) => (log = (log + c.toString()).slice(-4000)));
  const exited = new Promise<void>((resolve) => daemon.on('exit', () => resolve()));
  t.teardown(async () => {
    daemon.kill('SIGTERM');
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15_000))]);
    if (daemon.exitCode === null) daemon.kill('SIGKILL');
    await exited;
    // dockerd leaves its own network namespace bound at <exec root>/netns/default (and, after a
    // crash, overlay mounts): unmounted first, or the directory cannot be removed.
    const mounts = (await readFile('/proc/mounts', 'utf8')).split('\n').map((line) => line.split(' ')[1] ?? '').filter((m) => m.startsWith(`${dir}/`));
    for (const mount of mounts.reverse()) await new Promise((resolve) => execFile('umount', ['-l', mount], resolve));
    await rm(dir, { recursive: true, force: true });
  });
  const docker = (args: string[], timeoutMs = 60_000) =>
    new Promise<string>((resolve, reject) => {
      const child = spawn('docker', args, { env: { ...process.env, DOCKER_HOST: host }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (err += c.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.on('exit', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve(out);
        else reject(new Error(`docker ${args.join(' ')} exited ${code}: ${err.trim()}`));
      });
    });
  await until('the private dockerd answers', async () => existsSync(`${dir}/d.sock`) && (await docker(['version', '--format', '{{.Server.Version}}'], 5000).then(() => true, () => false)), {
    timeoutMs: 30_000,
    everyMs: 100,
    detail: () => log,
  });
  return { host, docker };
}
