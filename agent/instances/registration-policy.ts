import { existsSync, realpathSync } from 'node:fs';
import { dirname, isAbsolute, join, normalize, sep } from 'node:path';
import type { DozeConfig, InstanceConfig } from '../config/schema.js';

/*
 * What a run-time registration (PUT /api/instances/{id}) may name. The agent
 * runs as root: a registered freezer runtime freezes whatever cgroup it names
 * (the root of the freezer hierarchy holds the Nomad client itself), a qemu
 * one connects to whatever socket it names, a firecracker launcher runs
 * whatever program it names. So a registration may only name cgroups and
 * paths below roots the config allows (by default Nomad's task cgroups and
 * doze's own run directory, plus Nomad's alloc dir where `doze vm run` keeps
 * its state), never a root itself, and never a program to run.
 */

/** Where the runtimes resolve a relative cgroup (agent/runtimes/freezer.ts, agent/cgroups/memory-cgroup.ts). */
const CGROUP_MOUNT = '/sys/fs/cgroup';
/** The v1 hierarchies a Nomad task has a cgroup in (Nomad's cgroup_parent "/nomad"; cgroup2: "nomad.slice"). */
const V1_CONTROLLERS = ['freezer', 'memory', 'cpu,cpuacct', 'cpu', 'cpuacct', 'cpuset', 'blkio', 'pids'];
const RUN_DIR = '/run/doze';
const NOMAD_ALLOC_DIR = '/opt/nomad/data/alloc';

export interface RegistrationRoots {
  cgroups: string[];
  paths: string[];
}

export type RegistrationRefusal =
  /** `nomad-scale` would scale any job the agent's Nomad token reaches. */
  | { kind: 'runtime-kind'; runtime: string }
  /** A program the agent would run as root. */
  | { kind: 'command'; field: string }
  | { kind: 'is-root'; field: string; path: string; what: 'cgroup' | 'path' }
  | { kind: 'outside-roots'; field: string; path: string; what: 'cgroup' | 'path'; roots: string[] }
  | { kind: 'parent-reference'; field: string; path: string };

/** The roots in force: the config's, else the defaults. */
export function registrationRoots(config: Pick<DozeConfig, 'registrations' | 'nomad'>): RegistrationRoots {
  const mount = config.nomad?.cgroupRoot ?? CGROUP_MOUNT;
  const paths = [RUN_DIR, ...(config.nomad ? [config.nomad.allocDir ?? NOMAD_ALLOC_DIR] : [])];
  return {
    cgroups: config.registrations.cgroupRoots ?? [join(mount, 'nomad.slice'), ...V1_CONTROLLERS.map((c) => join(mount, c, 'nomad'))],
    paths: config.registrations.pathRoots ?? paths,
  };
}

type Named = { field: string; path: string; what: 'cgroup' | 'path' };

/** Every cgroup and path the instance names, with its field. */
function namedBy(instance: InstanceConfig): Named[] | RegistrationRefusal {
  const r = instance.runtime;
  const named: Named[] = [];
  const cgroup = (field: string, path: string | undefined) => path !== undefined && named.push({ field: `runtime.${field}`, path, what: 'cgroup' });
  const path = (field: string, p: string | undefined) => p !== undefined && named.push({ field, path: p, what: 'path' });
  switch (r.kind) {
    case 'freezer':
      cgroup('cgroup', r.cgroup);
      cgroup('memoryCgroup', r.memoryCgroup);
      path('runtime.handleFile', r.handleFile);
      break;
    case 'fake':
      cgroup('usageCgroup', r.usageCgroup);
      break;
    case 'qemu':
      path('runtime.qmp', r.qmp);
      path('runtime.control', r.control);
      path('runtime.ramFile', r.ramFile);
      cgroup('memoryCgroup', r.memoryCgroup);
      cgroup('cpuCgroup', r.cpuCgroup);
      break;
    case 'cloud-hypervisor':
      path('runtime.socket', r.socket);
      path('runtime.snapshotDir', r.snapshotDir);
      path('runtime.handleFile', r.handleFile);
      break;
    case 'firecracker':
      if (r.launcher) return { kind: 'command', field: 'runtime.launcher' };
      if (r.snapshotEditor) return { kind: 'command', field: 'runtime.snapshotEditor' };
      path('runtime.socket', r.socket);
      path('runtime.snapshotDir', r.snapshotDir);
      path('runtime.handleFile', r.handleFile);
      break;
    case 'nomad-scale':
      return { kind: 'runtime-kind', runtime: r.kind };
  }
  path('checkTls.certFile', instance.checkTls?.certFile);
  path('checkTls.keyFile', instance.checkTls?.keyFile);
  return named;
}

/** The path with symlinks resolved as far as it exists (a socket or handle may not exist yet). */
function resolved(path: string): string {
  const rest: string[] = [];
  let at = normalize(path);
  while (!existsSync(at) && dirname(at) !== at) {
    rest.unshift(at.slice(dirname(at).length).replace(/^\//, ''));
    at = dirname(at);
  }
  let real = at;
  try {
    real = realpathSync(at);
  } catch {
    // unreadable: judged as written
  }
  return join(real, ...rest);
}

function below(path: string, root: string): 'below' | 'is-root' | 'outside' {
  const r = resolved(root);
  if (path === r) return 'is-root';
  return path.startsWith(r.endsWith(sep) ? r : r + sep) ? 'below' : 'outside';
}

/** The cgroup2 root or a v1 hierarchy's (/sys/fs/cgroup/freezer, also cpu,cpuacct, unified, systemd). */
function isHierarchyRoot(dir: string): boolean {
  if (dir === CGROUP_MOUNT) return true;
  return dirname(dir) === CGROUP_MOUNT && [...V1_CONTROLLERS, 'unified', 'systemd', 'devices', 'net_cls', 'net_prio', 'perf_event', 'hugetlb', 'rdma', 'misc'].includes(dir.slice(CGROUP_MOUNT.length + 1));
}

/** The absolute cgroup directories a relative name may resolve to (v1 hierarchy of `controller`, cgroup2, hybrid). */
function cgroupCandidates(name: string, field: string): string[] {
  if (isAbsolute(name)) return [name];
  const controller = field.endsWith('memoryCgroup') ? 'memory' : 'freezer';
  return [join(CGROUP_MOUNT, controller, name), join(CGROUP_MOUNT, name), join(CGROUP_MOUNT, 'unified', name)];
}

/** Why the registration may not be taken on, or undefined when everything it names is below the roots. */
export function registrationRefusal(instance: InstanceConfig, roots: RegistrationRoots): RegistrationRefusal | undefined {
  const named = namedBy(instance);
  if (!Array.isArray(named)) return named;
  for (const { field, path, what } of named) {
    if (path.split('/').includes('..')) return { kind: 'parent-reference', field, path };
    const allowed = what === 'cgroup' ? roots.cgroups : roots.paths;
    // A relative cgroup is judged as every directory it may resolve to that exists; at least one must be below a root.
    const candidates = (what === 'cgroup' ? cgroupCandidates(path, field) : [path]).map(resolved);
    const existing = candidates.filter((c) => existsSync(c));
    const judged = existing.length > 0 ? existing : candidates;
    // The root of a hierarchy (/sys/fs/cgroup, /sys/fs/cgroup/freezer) holds every process, the Nomad client's too.
    if (what === 'cgroup' && judged.some(isHierarchyRoot)) return { kind: 'is-root', field, path, what };
    let anyBelow = false;
    for (const candidate of judged) {
      const verdicts = allowed.map((root) => below(candidate, root));
      if (verdicts.includes('is-root')) return { kind: 'is-root', field, path, what };
      if (verdicts.includes('below')) anyBelow = true;
      else if (existing.length > 0) return { kind: 'outside-roots', field, path, what, roots: allowed };
    }
    if (!anyBelow) return { kind: 'outside-roots', field, path, what, roots: allowed };
  }
  return undefined;
}

/** The refusal as the API's 403 says it, with the setting that would allow it. */
export function describeRegistrationRefusal(refusal: RegistrationRefusal): string {
  switch (refusal.kind) {
    case 'runtime-kind':
      return `runtime ${JSON.stringify(refusal.runtime)} cannot be registered through the API (it would act on Nomad with the agent's token); declare it in the config file`;
    case 'command':
      return `${refusal.field}: a registration may not name a program for the agent to run; declare this instance in the config file`;
    case 'parent-reference':
      return `${refusal.field}: ${JSON.stringify(refusal.path)} contains "..": name the path directly`;
    case 'is-root':
      return `${refusal.field}: ${JSON.stringify(refusal.path)} is the root of a ${refusal.what === 'cgroup' ? 'cgroup hierarchy or an allowed cgroup root' : 'allowed path root'}, which holds more than one instance; name the instance's own ${refusal.what} below it`;
    case 'outside-roots':
      return `${refusal.field}: ${JSON.stringify(refusal.path)} is outside the ${refusal.what === 'cgroup' ? 'cgroup' : 'path'} roots registrations may name (${refusal.roots.join(', ')}); add its parent to registrations.${refusal.what === 'cgroup' ? 'cgroupRoots' : 'pathRoots'} in the agent's config if it belongs to doze`;
  }
}
