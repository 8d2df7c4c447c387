import type { CheckNeed } from '../nomad/check-needs.js';
import { analyzeGroup } from '../nomad/managed-group.js';
import { instanceId } from '../nomad/instance-id.js';
import type { IdlePolicy, SleepMode, WakeMode } from '../nomad/meta-keys.js';
import type { NomadAllocation, NomadJob, NomadNetworkResource } from '../nomad/nomad-schemas.js';

/*
 * Pure mapping from a (validated) Nomad allocation to the instance doze
 * manages for it. Address rules (Nomad's client networking, see
 * docs/reference.md): in bridge mode traffic reaches the allocation's own
 * IP (NetworkStatus.Address) on the port's `To` (Value when To is unset), and
 * the host-side veth must be found in the kernel (host-veth.ts); in host mode
 * there is no interface of its own, so traffic is attributed by host IP and
 * port.
 */

/** A Nomad allocation annotated for doze (doze.* meta): what doze will manage as an instance, not yet one. */
export interface AnnotatedAllocation {
  /** Stable, filesystem- and metric-safe: "<job>.<group>.<alloc id prefix>". */
  id: string;
  allocId: string;
  namespace: string;
  jobId: string;
  group: string;
  task: string;
  driver: string;
  /** "IPv4:port" (or "[IPv6]:port" for an IPv6-only bridge) where its clients reach it. */
  address: string;
  /** Its other addresses: a dual-stack bridge's "[IPv6]:port" (NetworkStatus.AddressIPv6). */
  addresses: string[];
  /**
   * Where checks for it may also arrive: a bridge allocation's mapped host
   * port. Nomad's default check address_mode is "host", so Consul probes
   * host_ip:host_port and the CNI DNAT only rewrites it after doze's redirect.
   */
  checkAddresses: string[];
  /** Host-side interface; unknown here for bridge mode (see findHostVeth), absent in host mode. */
  interface?: string;
  networkMode: 'bridge' | 'host';
  service: string;
  /** What the stub needs to answer the service's checks (TLS, verification). */
  checks: CheckNeed[];
  idleTimeoutMs: number;
  /** doze.metrics_path. */
  metricsPath: string;
  idlePolicy: IdlePolicy;
  wake: WakeMode | undefined;
  mode: SleepMode;
  busyCpu: number;
  minAwakeMs: number;
  maxAwakeMs: number | undefined;
  maxSleepMs: number | undefined;
  /** doze.dry_run. */
  dryRun: boolean;
  /** Push a qemu-driver VM's RAM out of memory while it is paused (doze.reclaim). */
  reclaim: boolean;
  /** A non-VM task: push its memory to swap after reclaimAfterMs asleep (doze.reclaim written, doze.reclaim_after). */
  reclaimFreezer: boolean;
  reclaimAfterMs: number;
  /** doze.reclaim_keep. */
  reclaimKeep: 'working-set' | 'nothing';
  /**
   * The task runs the VM under `doze vm run --register` (what `doze job render` makes of a
   * snapshot-mode qemu task): the owner registers the VM with the agent itself, so discovery
   * does not manage it, and only takes the registration away when the allocation stops.
   */
  vmOwner: boolean;
}

export type AllocationMapping =
  | { kind: 'instance'; instance: AnnotatedAllocation }
  /** Not doze's (not enabled, stopped) or not ready yet (no address): look again on the next update. */
  | { kind: 'ignored'; reason: string }
  /** Annotated for doze but unusable: report it, do not manage it. */
  | { kind: 'invalid'; reason: string };

const TERMINAL_CLIENT = new Set(['complete', 'failed', 'lost']);

/** An allocation doze may keep managing: Nomad wants it running and the client has not finished it. */
export function isAllocationLive(alloc: Pick<NomadAllocation, 'DesiredStatus' | 'ClientStatus'>): boolean {
  return alloc.DesiredStatus === 'run' && !TERMINAL_CLIENT.has(alloc.ClientStatus);
}

/**
 * `job` defaults to the allocation's embedded job; event-stream allocations
 * have none, so pass the job read from Nomad.
 */
export function allocationInstance(alloc: NomadAllocation, job: NomadJob | null | undefined = alloc.Job): AllocationMapping {
  if (!isAllocationLive(alloc)) return { kind: 'ignored', reason: `allocation is ${alloc.DesiredStatus}/${alloc.ClientStatus}` };
  if (!job) return { kind: 'invalid', reason: `allocation ${alloc.ID} carries no job: read it with GET /v1/allocation/${alloc.ID}` };
  const group = job.TaskGroups.find((g) => g.Name === alloc.TaskGroup);
  if (!group) return { kind: 'invalid', reason: `job ${JSON.stringify(job.ID)} has no group ${JSON.stringify(alloc.TaskGroup)}` };
  const analysis = analyzeGroup(job, group);
  if (analysis.problems.length > 0) return { kind: 'invalid', reason: analysis.problems.join('; ') };
  const managed = analysis.managed;
  if (!managed) return { kind: 'ignored', reason: 'doze.enabled is not true for any main task' };

  const networkMode = managed.networkMode === 'bridge' ? 'bridge' : managed.networkMode === 'host' ? 'host' : undefined;
  if (!networkMode) return { kind: 'invalid', reason: `network mode ${JSON.stringify(managed.networkMode)} is not supported (bridge or host)` };
  const vmOwner = isVmOwnerTask(group.Tasks.find((task) => task.Name === managed.task));
  const found = instanceAddress(alloc, managed.task, managed.service.portLabel, networkMode);
  // A doze vm owner registers its VM's own address (the guest behind its tap): Nomad's is only informative.
  // Snapshot mode always needs that owner, so without one the reason to report is that, not the address.
  const ownAddress = vmOwner || managed.settings.mode === 'snapshot';
  const address = ownAddress && !('address' in found) ? { address: '', addresses: [], checkAddresses: [] } : found;
  if ('pending' in address) return { kind: 'ignored', reason: address.pending };
  if ('invalid' in address) return { kind: 'invalid', reason: address.invalid };
  // A check on a port of its own (`port`, an `expose` check's generated port on the Connect sidecar)
  // reaches the frozen app too: redirected to the stub like the service port's checks.
  for (const label of managed.service.checkPorts) {
    const more = instanceAddress(alloc, managed.task, label, networkMode);
    if ('invalid' in more) return { kind: 'invalid', reason: `a check of service ${JSON.stringify(managed.service.name)}: ${more.invalid}` };
    if ('address' in more) address.checkAddresses = [...new Set([...address.checkAddresses, more.address, ...more.checkAddresses])];
  }

  const { settings } = managed;
  return {
    kind: 'instance',
    instance: {
      id: instanceId(job.ID, group.Name, alloc.ID),
      allocId: alloc.ID,
      namespace: alloc.Namespace || job.Namespace || 'default',
      jobId: job.ID,
      group: group.Name,
      task: managed.task,
      driver: managed.driver,
      address: address.address,
      addresses: address.addresses,
      checkAddresses: address.checkAddresses,
      networkMode,
      service: managed.service.name,
      checks: managed.service.checks,
      idleTimeoutMs: settings.idleTimeoutMs,
      metricsPath: settings.metricsPath,
      idlePolicy: settings.idlePolicy,
      wake: settings.wake,
      mode: settings.mode,
      busyCpu: settings.busyCpu,
      minAwakeMs: settings.minAwakeMs,
      maxAwakeMs: settings.maxAwakeMs,
      maxSleepMs: settings.maxSleepMs,
      dryRun: settings.dryRun,
      reclaim: settings.reclaim,
      reclaimFreezer: settings.reclaimFreezer,
      reclaimAfterMs: settings.reclaimAfterMs,
      reclaimKeep: settings.reclaimKeep,
      vmOwner,
    },
  };
}

/** A raw_exec/exec task running `doze vm run … --register URL … -- qemu…` (plugin/render-vm-task.ts renders it). */
export function isVmOwnerTask(task: { Driver: string; Config?: unknown } | undefined): boolean {
  if (!task || (task.Driver !== 'raw_exec' && task.Driver !== 'exec')) return false;
  const config = task.Config as { args?: unknown } | null | undefined;
  const args = Array.isArray(config?.args) ? config.args : [];
  const split = args.indexOf('--');
  const ours = split < 0 ? args : args.slice(0, split);
  return ours[0] === 'vm' && ours[1] === 'run' && ours.includes('--register');
}

type AddressResult = { address: string; addresses: string[]; checkAddresses: string[] } | { pending: string } | { invalid: string };

function instanceAddress(alloc: NomadAllocation, task: string, label: string, mode: 'bridge' | 'host'): AddressResult {
  const port = findPort(alloc, task, label);
  if (!port) return { invalid: `allocation ${alloc.ID} has no port ${JSON.stringify(label)}` };
  if (mode === 'bridge') {
    // Nomad fills NetworkStatus once the client has set the namespace up; a bridge with an IPv6
    // range gives it an IPv6 address too (AddressIPv6, Nomad 1.10), or only that one.
    const ip = alloc.NetworkStatus?.Address || undefined;
    const ip6 = alloc.NetworkStatus?.AddressIPv6 || undefined;
    if (!ip && !ip6) return { pending: `allocation ${alloc.ID} has no bridge address yet` };
    // To = -1 (Connect's and expose's generated ports): the same port inside the namespace.
    const inside = port.to > 0 ? port.to : port.value;
    const all = [...(ip ? [`${ip}:${inside}`] : []), ...(ip6 ? [`[${ip6}]:${inside}`] : [])];
    const hostSide = port.hostIp && port.value > 0 ? [hostPort(port.hostIp, port.value)] : [];
    return { address: all[0]!, addresses: all.slice(1), checkAddresses: hostSide };
  }
  if (!port.hostIp) return { invalid: `allocation ${alloc.ID}: port ${JSON.stringify(label)} has no host address` };
  return { address: hostPort(port.hostIp, port.value), addresses: [], checkAddresses: [] };
}

/** "host:port", an IPv6 host in brackets (Nomad writes a HostIP bare). */
function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

interface FoundPort {
  value: number;
  to: number;
  hostIp: string | undefined;
}

/** Shared.Ports first (Nomad ≥ 1.0), then the older per-network port lists; a numeric label is a literal port. */
function findPort(alloc: NomadAllocation, task: string, label: string): FoundPort | undefined {
  const resources = alloc.AllocatedResources;
  const hostIp = resources?.Shared?.Ports?.find((p) => p.HostIP)?.HostIP ?? resources?.Shared?.Networks?.find((n) => n.IP)?.IP;
  if (/^\d+$/.test(label)) return { value: Number(label), to: Number(label), hostIp };
  const mapped = resources?.Shared?.Ports?.find((p) => p.Label === label);
  if (mapped) return { value: mapped.Value, to: mapped.To ?? 0, hostIp: mapped.HostIP || hostIp };
  const networks: NomadNetworkResource[] = [...(resources?.Shared?.Networks ?? []), ...(resources?.Tasks?.[task]?.Networks ?? [])];
  for (const network of networks) {
    const port = [...(network.DynamicPorts ?? []), ...(network.ReservedPorts ?? [])].find((p) => p.Label === label);
    if (port?.Value) return { value: port.Value, to: port.To ?? 0, hostIp: network.IP || hostIp };
  }
  return undefined;
}
