import { ConfigError } from '../shared/errors.js';

/*
 * Where the Docker engine listens, found as every Docker client finds it: the
 * agent's `docker.socket`, else DOCKER_HOST (`unix:///path`), else the
 * engine's default /var/run/docker.sock. Only a local unix socket will do:
 * the containers doze freezes are on this node, and their cgroups are read
 * from this node's /proc.
 */

export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';

export function dockerSocket(configured: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (configured) return configured;
  const host = env.DOCKER_HOST?.trim();
  if (!host) return DEFAULT_DOCKER_SOCKET;
  if (host.startsWith('unix://') && host.length > 'unix://'.length) return host.slice('unix://'.length);
  throw new ConfigError(`DOCKER_HOST=${JSON.stringify(host)}: doze reads docker tasks on this node, through a local unix socket only; set DOCKER_HOST=unix:///var/run/docker.sock or the agent's "docker": { "socket": "/path/docker.sock" }`);
}
