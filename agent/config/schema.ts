import { z } from 'zod';
import { parseDuration } from './duration.js';

/** A duration written as "500ms" / "30s" / "5m", or a number of milliseconds. */
const duration = z.unknown().transform((value, ctx) => {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0) return value;
  const ms = typeof value === 'string' ? parseDuration(value) : undefined;
  if (ms !== undefined) return ms;
  ctx.addIssue({ code: 'custom', message: `${JSON.stringify(value)} is not a duration (use e.g. "500ms", "30s", "5m", or milliseconds)` });
  return z.NEVER;
});

const hostPort = z.string().regex(/^[^\s:]+:\d{1,5}$/, 'expected "host:port"');

const ipv4 = z.ipv4({ message: 'expected an IPv4 address' });

/** Instance address "10.0.0.2:8080": the eBPF programs key instances by IPv4 address. */
const instanceAddress = z.string().refine((text) => {
  const [host, port] = text.split(':');
  return ipv4.safeParse(host).success && port !== undefined && /^\d{1,5}$/.test(port) && Number(port) > 0 && Number(port) < 65536;
}, 'expected "IPv4:port", e.g. "10.200.0.2:8080"');

const mark = z
  .union([z.number().int().positive(), z.string().regex(/^(0x[0-9a-fA-F]+|\d+)$/, 'expected a number such as "0x1"')])
  .transform((value) => (typeof value === 'number' ? value : Number(value)))
  .refine((value) => value > 0 && value <= 0xffffffff, 'must be a 32-bit non-zero mark')
  // CNI portmap owns 0x2000 on Nomad nodes (docs/reference.md).
  .refine((value) => (value & 0x2000) === 0, 'must not use bit 0x2000 (CNI portmap uses it on Nomad nodes)');

export const freezerRuntimeSchema = z.strictObject({
  kind: z.literal('freezer'),
  /** Path relative to the freezer hierarchy ("doze/web"), or absolute. */
  cgroup: z.string().min(1),
  /** Push its memory out to swap once it has slept reclaimAfter (docs/memory.md); needs swap on the node. */
  reclaim: z.boolean().default(false),
  reclaimAfter: duration.default(10_000),
  /** With reclaim: on a wake, read the pages the app used after its last wake back from swap ahead of its faults (measured: docs/memory.md). */
  prefetch: z.boolean().default(false),
  /** Its memory cgroup (relative to the v1 memory hierarchy or cgroup2, or absolute); default: beside the freezer cgroup, else its processes'. */
  memoryCgroup: z.string().min(1).optional(),
  /** Where a reclaim under way is recorded, so a restarted agent can undo it; default /run/doze/freezer/<cgroup>.json. */
  handleFile: z.string().startsWith('/', 'must be an absolute path').optional(),
});

export const fakeRuntimeSchema = z.strictObject({
  kind: z.literal('fake'),
  pauseMs: z.number().int().nonnegative().default(0),
  resumeMs: z.number().int().nonnegative().default(0),
  failResume: z.boolean().default(false),
  /** Report this freezer cgroup's CPU as the instance's (busy guard benchmarks and tests); none by default. */
  usageCgroup: z.string().min(1).optional(),
});

/** sun_path holds 108 bytes with its NUL (Nomad's qemu driver checks the same before launch). */
const UNIX_SOCKET_PATH_MAX = 107;

/** An absolute unix socket path that fits sun_path. */
const unixSocketPath = z
  .string()
  .refine((path) => path.startsWith('/'), 'must be an absolute path')
  .refine((path) => Buffer.byteLength(path) <= UNIX_SOCKET_PATH_MAX, `a unix socket path has at most ${UNIX_SOCKET_PATH_MAX} bytes; use a shorter directory`);

export const qemuRuntimeSchema = z.strictObject({
  kind: z.literal('qemu'),
  /** The VM's QMP socket (`-qmp unix:PATH,server=on,wait=off`); pause mode. */
  qmp: unixSocketPath.optional(),
  /** `pause`: QMP stop/cont, the QEMU process stays. `snapshot`: QEMU exits behind its `doze vm run` owner. */
  mode: z.enum(['pause', 'snapshot'], { message: 'mode is "pause" (QMP stop/cont) or "snapshot" (needs the VM run by "doze vm run")' }).default('pause'),
  /** snapshot mode: the `doze vm run` owner's control socket (`<state dir>/control.sock`). */
  control: unixSocketPath.optional(),
  /** Push guest RAM out of memory while asleep (needs it in a memory-backend-file,share=on on disk). */
  reclaim: z.boolean().default(true),
  /** QEMU's memory cgroup, where its memory is measured: relative to the v1 memory hierarchy or cgroup2, or absolute. */
  memoryCgroup: z.string().min(1).optional(),
  /** The guest RAM file; found through QMP (query-memdev, mem-path) when omitted. */
  ramFile: z.string().min(1).optional(),
  /**
   * pause mode, busy guard: the cgroup QEMU's CPU and block I/O are counted in (a Nomad task's
   * cgroup: its v1 freezer path or its cgroup2 directory, absolute). Default: the QEMU process, once
   * its pid is known (learnt by the first page-out).
   */
  cpuCgroup: z.string().startsWith('/', 'an absolute cgroup path').optional(),
}).superRefine((runtime, ctx) => {
  if (runtime.mode === 'pause' && runtime.qmp === undefined) ctx.addIssue({ code: 'custom', path: ['qmp'], message: "pause mode needs the VM's QMP socket" });
  if (runtime.mode === 'snapshot' && runtime.control === undefined) {
    ctx.addIssue({ code: 'custom', path: ['control'], message: 'snapshot mode needs the control socket of the VM\'s "doze vm run" owner (<state dir>/control.sock)' });
  }
});

// --- Cloud Hypervisor, Firecracker, Nomad scale (agent/runtimes/cloud-hypervisor.ts, firecracker.ts, nomad-scale.ts; docs/runtimes.md) ---
/** A VMM's API socket: absolute, and short enough for sun_path (checked here, not at the first sleep). */
const vmmSocketPath = z
  .string()
  .refine((path) => path.startsWith('/'), 'must be an absolute path')
  .refine((path) => Buffer.byteLength(path) <= UNIX_SOCKET_PATH_MAX, `a unix socket path has at most ${UNIX_SOCKET_PATH_MAX} bytes; use a shorter directory`);
const absolutePath = z.string().startsWith('/', 'must be an absolute path');
/** A helper program: its path (or a name on PATH) and leading arguments. */
const commandSpec = z.strictObject({ binary: z.string().min(1), args: z.array(z.string()).default([]) });

export const cloudHypervisorRuntimeSchema = z.strictObject({
  kind: z.literal('cloud-hypervisor'),
  /** The VMM's API socket (`cloud-hypervisor --api-socket path=…`). */
  socket: vmmSocketPath,
  /** Snapshot each paused VM here (`<dir>/current`), so a VMM that restarts while it sleeps can restore it. */
  snapshotDir: absolutePath.optional(),
  /** The runtime's handle file (what a restarted agent needs to wake the VM). */
  handleFile: absolutePath.optional(),
});

export const firecrackerRuntimeSchema = z
  .strictObject({
    kind: z.literal('firecracker'),
    /** The process's API socket (`firecracker --api-sock …`). */
    socket: vmmSocketPath,
    /** `pause`: PATCH /vm, the process stays. `snapshot`: snapshot, stop the process, load into a fresh one on wake. */
    mode: z.enum(['pause', 'snapshot']).default('pause'),
    snapshotDir: absolutePath.optional(),
    /** snapshot mode: Diff snapshots after the first Full one (merged with snapshotEditor). */
    diffSnapshots: z.boolean().default(true),
    /** snapshot mode: the Firecracker binary to start fresh processes with (`--api-sock <socket>` is appended). */
    launcher: commandSpec.optional(),
    /** Firecracker's `snapshot-editor` (merges Diff layers: `edit-memory rebase`). */
    snapshotEditor: commandSpec.optional(),
    /** Tap devices to restore the snapshot's interfaces onto (PUT /snapshot/load network_overrides). */
    networkOverrides: z.array(z.strictObject({ iface_id: z.string().min(1), host_dev_name: z.string().regex(/^[A-Za-z0-9_.@-]{1,15}$/, 'a tap name of at most 15 characters') })).default([]),
    handleFile: absolutePath.optional(),
  })
  .superRefine((runtime, ctx) => {
    if (runtime.mode !== 'snapshot') return;
    if (!runtime.snapshotDir) ctx.addIssue({ code: 'custom', path: ['snapshotDir'], message: 'snapshot mode needs a snapshot directory' });
    if (!runtime.launcher) ctx.addIssue({ code: 'custom', path: ['launcher'], message: 'snapshot mode needs launcher.binary: a snapshot loads only into a fresh Firecracker process' });
    if (runtime.diffSnapshots && !runtime.snapshotEditor) {
      ctx.addIssue({ code: 'custom', path: ['snapshotEditor'], message: 'Diff snapshots are merged with Firecracker\'s snapshot-editor: set snapshotEditor.binary, or diffSnapshots: false' });
    }
  });

export const nomadScaleRuntimeSchema = z.strictObject({
  kind: z.literal('nomad-scale'),
  job: z.string().min(1),
  group: z.string().min(1),
  /** The port label whose address a wake reports (default: the allocation's first port). */
  port: z.string().min(1).optional(),
  /** Count to scale back to when none was remembered. */
  wakeCount: z.number().int().positive().optional(),
  /** The Nomad API (default NOMAD_ADDR, else http://127.0.0.1:4646). */
  nomad: z
    .strictObject({
      address: z.url({ protocol: /^https?$/, message: 'expected an http(s) URL such as "http://127.0.0.1:4646"' }),
      token: z.string().min(1).optional(),
      namespace: z.string().min(1).optional(),
      region: z.string().min(1).optional(),
    })
    .optional(),
  /** Where the group's previous count is kept across agent restarts. */
  handleFile: absolutePath.optional(),
});
// --- end Cloud Hypervisor, Firecracker, Nomad scale ---

export const runtimeSchema = z.discriminatedUnion('kind', [freezerRuntimeSchema, fakeRuntimeSchema, qemuRuntimeSchema, cloudHypervisorRuntimeSchema, firecrackerRuntimeSchema, nomadScaleRuntimeSchema]);

export const IDLE_POLICIES = ['requests', 'connections', 'traffic'] as const;
/** Busy guard threshold, a share of one core: idle apps measured here peaked at 1.8 % (docs/busy-guard.md). */
export const BUSY_CPU_DEFAULT = 0.1;
export const WAKE_MODES = ['retry', 'hold'] as const;

/** A certificate and key (PEM files) the stub answers an instance's verifying TLS checks with. */
export const checkTlsSchema = z.strictObject({
  certFile: z.string().min(1),
  keyFile: z.string().min(1),
});

export const instanceSchema = z.strictObject({
  id: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'ids are 1-64 characters of letters, digits, "_", "." and "-"'),
  address: instanceAddress,
  /** Other "IPv4:port" addresses its health checks are sent to (a mapped host port); redirected too. */
  checkAddresses: z.array(instanceAddress).default([]),
  /**
   * The instance's own host-side interface (veth, tap): traffic is keyed by its IPv4 address.
   * Absent: a host-port instance (host network mode, Nomad's qemu driver with user-mode
   * networking), counted by the address's port on the node's own interfaces (hostPorts).
   */
  interface: z.string().regex(/^[A-Za-z0-9_.@-]{1,15}$/, 'an interface name of at most 15 characters').optional(),
  idleTimeout: duration.default(500),
  idlePolicy: z.enum(IDLE_POLICIES).default('requests'),
  /** Unset: `hold` where the runtime drops the first SYN while asleep (capabilities.dropsFirstSyn), else `retry`. */
  wake: z.enum(WAKE_MODES).optional(),
  /** hold: connections held at once while it wakes; the excess takes the retry path. */
  maxHeld: z.number().int().positive().default(32),
  /** hold: a held connection is reset after this long without a wake. */
  holdTimeout: duration.default(10_000),
  minAwake: duration.default(0),
  maxAwake: duration.optional(),
  /**
   * Busy guard: the share of one core that still counts as quiet; above it (CPU over the
   * last idle window) the instance is busy and does not sleep. 0 turns the guard off.
   * Default 0.1: idle apps measured here peaked at 1.8 % (docs/busy-guard.md).
   */
  busyCpu: z.number().min(0, 'a share of one core, 0 or more (0 turns the busy guard off)').default(BUSY_CPU_DEFAULT),
  /** Wake by itself after this long asleep (periodic work, cache refresh); none by default. */
  maxSleep: duration.optional(),
  wakeTimeout: duration.default(5000),
  pauseTimeout: duration.default(5000),
  /** MiB this instance holds while awake, for budget.maxActiveMemory (Nomad: the task's memory). */
  memory: z.number().int().nonnegative().default(0),
  /** Certificate for its TLS checks that verify (default healthChecks.tls; else the stub's self-signed one). */
  checkTls: checkTlsSchema.optional(),
  runtime: runtimeSchema,
});

// --- Nomad + Consul discovery (agent/discovery/nomad-instances.ts) ---------------------------------
/** "http://127.0.0.1:4646": an http(s) URL, as NOMAD_ADDR / CONSUL_HTTP_ADDR are written. */
const httpUrl = z.url({ protocol: /^https?$/, message: 'expected an http(s) URL such as "http://127.0.0.1:4646"' });

/** PEM files for an https address (NOMAD_CACERT / NOMAD_CLIENT_CERT / NOMAD_CLIENT_KEY and Consul's equivalents). */
const tlsFilesSchema = z.strictObject({
  caFile: z.string().min(1).optional(),
  certFile: z.string().min(1).optional(),
  keyFile: z.string().min(1).optional(),
  serverName: z.string().min(1).optional(),
});

export const nomadSchema = z.strictObject({
  address: httpUrl,
  token: z.string().min(1).optional(),
  /** Namespace of the allocation event stream; default "*" (every namespace the token can read). */
  namespace: z.string().min(1).optional(),
  region: z.string().min(1).optional(),
  /** This client node's id; default: asked from the local Nomad agent (GET /v1/agent/self, stats.client.node_id). */
  nodeId: z.string().min(1).optional(),
  tls: tlsFilesSchema.optional(),
  /**
   * Nomad's allocation directory (<data_dir>/alloc): qemu-driver tasks keep their QMP socket in
   * <allocDir>/<alloc id>/<task>/local/doze-qmp.sock. Default /opt/nomad/data/alloc.
   */
  allocDir: z.string().startsWith('/', 'an absolute path').optional(),
  /** Root of the cgroup filesystem holding Nomad's task cgroups (v1 freezer/nomad/…, v2 nomad.slice/…). */
  cgroupRoot: z.string().startsWith('/', 'an absolute path').default('/sys/fs/cgroup'),
  /** Certificates for verifying TLS checks, by Consul service name (before healthChecks.tls). */
  checkTls: z.record(z.string().min(1), checkTlsSchema).optional(),
});

export const consulSchema = z.strictObject({
  address: httpUrl,
  token: z.string().min(1).optional(),
  tls: tlsFilesSchema.optional(),
  /** Register the agent as service "doze-agent" with an HTTP check on its /healthz. */
  register: z.boolean().default(true),
  /** Interval of that check. */
  checkInterval: duration.default(10_000),
});
// --- end Nomad + Consul ---------------------------------------------------------------------------

export const configSchema = z.strictObject({
  listen: hostPort.default('127.0.0.1:7070'),
  token: z.string().min(1).optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  bpffs: z.string().default('/sys/fs/bpf'),
  stub: z.strictObject({ listen: hostPort.default('127.0.0.1:7071') }).prefault({}),
  healthChecks: z
    .strictObject({
      mark: mark.default(0x1),
      fromUid: z.number().int().nonnegative().optional(),
      /** The same by user name ("consul"), looked up through NSS (getent passwd) at start. */
      fromUser: z.string().regex(/^[a-z_][a-z0-9_.-]*\$?$/i, 'a user name').optional(),
      fromSources: z.array(z.string()).default([]),
      /** Certificate for every instance's verifying TLS checks (instances[].checkTls and nomad.checkTls come first). */
      tls: checkTlsSchema.optional(),
    })
    .prefault({}),
  /** Node budget: more instances than fit awake; a wake that would exceed it puts the least recently used to sleep. */
  budget: z
    .strictObject({
      maxActive: z.number().int().positive().optional(),
      maxActiveMemory: z.number().int().positive().optional(),
      /** Wakes that may wait for room at once; past it a wake goes ahead over budget (never hurt a request). */
      maxQueued: z.number().int().nonnegative().default(64),
    })
    .prefault({}),
  /**
   * Host-port instances (no interface of their own) are counted on these node interfaces:
   * both hooks of each, the ingress hook only of lo (it sees every local packet there).
   * Default: lo and the interfaces of the default routes, looked up at start.
   */
  hostPorts: z
    .strictObject({ interfaces: z.array(z.string().regex(/^[A-Za-z0-9_.@-]{1,15}$/, 'an interface name of at most 15 characters')).min(1).optional() })
    .prefault({}),
  /** Names of the iptables chains the agent owns ("DOZE" -> DOZE-MARK, DOZE-STUB). */
  netfilter: z.strictObject({ chainPrefix: z.string().regex(/^[A-Z][A-Z0-9_-]{0,19}$/, 'upper-case letters, digits, "_" or "-", at most 20').default('DOZE') }).prefault({}),
  instances: z.array(instanceSchema).default([]),
  /** Discover instances from this node's Nomad allocations. */
  nomad: nomadSchema.optional(),
  /** Register the agent in Consul and pass sleeping instances' TTL checks. */
  consul: consulSchema.optional(),
});

export type DozeConfig = z.infer<typeof configSchema>;
export type InstanceConfig = z.infer<typeof instanceSchema>;
export type RuntimeConfig = z.infer<typeof runtimeSchema>;
export type IdlePolicy = (typeof IDLE_POLICIES)[number];
export type WakeMode = (typeof WAKE_MODES)[number];
export type NomadConfig = z.infer<typeof nomadSchema>;
export type ConsulConfig = z.infer<typeof consulSchema>;
