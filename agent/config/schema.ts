import { z } from 'zod';
import { DURATION_TEXT, parseDuration } from './duration.js';

/*
 * The agent's config file. Each field's `.describe()` is its meaning in the configuration
 * reference: the README table (`doze config reference`) and the JSON Schema (`doze config
 * schema`) are generated from here (agent/config/reference.ts), so they cannot drift from what the
 * agent accepts. Defaults are written as a user writes them (`.prefault("10s")` for durations),
 * so the reference shows them that way.
 */

/**
 * The reference's default column for a field whose default is worked out at start or from other
 * fields, not held by the schema ("lo + default routes'").
 */
export const computedDefaults = z.registry<{ text: string }>();

const notADuration = { error: (issue: { input?: unknown }) => `${JSON.stringify(issue.input)} is not a duration (use e.g. "500ms", "30s", "5m", or milliseconds)` };

/** A duration written as "500ms" / "30s" / "5m", or a number of milliseconds; parsed to milliseconds. */
const duration = z
  .union([z.int(notADuration).nonnegative(notADuration), z.string(notADuration).regex(DURATION_TEXT, notADuration)], notADuration)
  .transform((value, ctx) => {
    const ms = typeof value === 'number' ? value : parseDuration(value);
    if (ms !== undefined) return ms;
    ctx.addIssue({ code: 'custom', message: notADuration.error({ input: value }) });
    return z.NEVER;
  });

const hostPort = z.string().regex(/^[^\s:]+:\d{1,5}$/, 'expected "host:port"');

const ipv4 = z.ipv4({ message: 'expected an IPv4 address' });

const ipv6 = z.ipv6({ message: 'expected an IPv6 address' });

/** "10.0.5.20", "10.0.9.0/24", "fd00:5::20" or "fd00:5::/64": a source iptables and the tc program match. */
const sourceNet = z.string().refine((text) => {
  const [address = '', prefix, extra] = text.split('/');
  if (extra !== undefined) return false;
  const family = ipv4.safeParse(address).success ? 32 : ipv6.safeParse(address).success ? 128 : 0;
  return family > 0 && (prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= family));
}, 'expected an IPv4 or IPv6 address or CIDR, e.g. "10.0.5.20", "10.0.9.0/24" or "fd00:5::/64"');

/** Instance address "10.0.0.2:8080" or "[fd00::2]:8080" (an IPv6 host in brackets, as in a URL). */
const instanceAddress = z.string().refine((text) => {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (!match) return false;
  const hostOk = match[1] !== undefined ? ipv6.safeParse(match[1]).success : ipv4.safeParse(match[2]).success;
  return hostOk && Number(match[3]) > 0 && Number(match[3]) < 65536;
}, 'expected "IPv4:port" or "[IPv6]:port", e.g. "10.200.0.2:8080" or "[fd00::2]:8080"');

const mark = z
  .union([z.number().int().positive(), z.string().regex(/^(0x[0-9a-fA-F]+|\d+)$/, 'expected a number such as "0x1"')])
  .transform((value) => (typeof value === 'number' ? value : Number(value)))
  .refine((value) => value > 0 && value <= 0xffffffff, 'must be a 32-bit non-zero mark')
  // CNI portmap owns 0x2000 on Nomad nodes (docs/reference.md).
  .refine((value) => (value & 0x2000) === 0, 'must not use bit 0x2000 (CNI portmap uses it on Nomad nodes)');

const interfaceName = z.string().regex(/^[A-Za-z0-9_.@-]{1,15}$/, 'an interface name of at most 15 characters');

/** "http://127.0.0.1:4646": an http(s) URL, as NOMAD_ADDR / CONSUL_HTTP_ADDR are written. */
const httpUrl = z.url({ protocol: /^https?$/, message: 'expected an http(s) URL such as "http://127.0.0.1:4646"' });

const absolutePath = z.string().startsWith('/', 'must be an absolute path');

/** sun_path holds 108 bytes with its NUL (Nomad's qemu driver checks the same before launch). */
const UNIX_SOCKET_PATH_MAX = 107;

/** An absolute unix socket path that fits sun_path: checked at load, not at the first sleep. */
const unixSocketPath = z
  .string()
  .refine((path) => path.startsWith('/'), 'must be an absolute path')
  .refine((path) => Buffer.byteLength(path) <= UNIX_SOCKET_PATH_MAX, `a unix socket path has at most ${UNIX_SOCKET_PATH_MAX} bytes; use a shorter directory`);

export const freezerRuntimeSchema = z.strictObject({
  kind: z.literal('freezer'),
  cgroup: z.string().min(1).describe('the instance\'s freezer cgroup: relative to the freezer hierarchy (`doze/web`), or absolute'),
  reclaim: z.boolean().default(false).describe('push the frozen instance\'s memory to swap once it has slept `reclaimAfter`; needs swap on the node ([docs/memory.md](docs/memory.md))'),
  reclaimAfter: duration.prefault('10s').describe('how long it sleeps before the reclaim (an instance that wakes more often never pays for one)'),
  prefetch: z
    .boolean()
    .default(false)
    .describe('with reclaim: read the pages the app used since its last wake back from swap on the wake, ahead of its faults (measured slower here: [docs/memory.md](docs/memory.md#working-set-prefetch-built-off-it-did-not-win-here))'),
  reclaimKeep: z
    .enum(['nothing', 'working-set'])
    .default('working-set')
    .describe('with reclaim: what stays resident. `working-set` keeps the pages the app touched since the last reclaim (its next wake is as fast as a plain freezer wake, measured); `nothing` pushes everything out ([docs/memory.md](docs/memory.md#working-set-reclaim-the-default))'),
  memoryCgroup: z
    .string()
    .min(1)
    .optional()
    .describe('its memory cgroup (relative to the v1 memory hierarchy or cgroup2, or absolute): where its memory is measured and reclaimed')
    .register(computedDefaults, { text: "beside the freezer cgroup, else its processes'" }),
  handleFile: absolutePath
    .optional()
    .describe('records a reclaim under way, so a restarted agent can undo it')
    .register(computedDefaults, { text: '`/run/doze/freezer/<cgroup>.json`' }),
});

export const fakeRuntimeSchema = z.strictObject({
  kind: z.literal('fake'),
  pauseMs: z.number().int().nonnegative().default(0).describe('tests and benchmarks: how long its sleep takes, in ms'),
  resumeMs: z.number().int().nonnegative().default(0).describe('tests and benchmarks: how long its wake takes, in ms'),
  failResume: z.boolean().default(false).describe('tests: every wake fails'),
  usageCgroup: z.string().min(1).optional().describe("report this freezer cgroup's CPU as the instance's (busy guard benchmarks and tests)"),
});

export const qemuRuntimeSchema = z
  .strictObject({
    kind: z.literal('qemu'),
    qmp: unixSocketPath.optional().describe("pause mode (required there): the VM's QMP socket (`-qmp unix:PATH,server=on,wait=off`), absolute and at most 107 bytes"),
    mode: z
      .enum(['pause', 'snapshot'], { message: 'mode is "pause" (QMP stop/cont) or "snapshot" (needs the VM run by "doze vm run")' })
      .default('pause')
      .describe('`pause`: QMP `stop` on sleep and `cont` on wake, the QEMU process stays. `snapshot`: QEMU exits behind its `doze vm run` owner ([docs/qemu.md](docs/qemu.md))'),
    control: unixSocketPath.optional().describe('snapshot mode (required there): the `doze vm run` owner\'s control socket (`<state dir>/control.sock`)'),
    reclaim: z.boolean().default(true).describe("push the guest's RAM out of memory while it sleeps (needs it in a `memory-backend-file,share=on` on disk)"),
    memoryCgroup: z.string().min(1).optional().describe("QEMU's memory cgroup, relative to the v1 memory hierarchy or cgroup2, or absolute; used only to measure memory"),
    ramFile: z
      .string()
      .min(1)
      .optional()
      .describe('the guest RAM file')
      .register(computedDefaults, { text: 'found through QMP (`query-memdev`, `mem-path`)' }),
    cpuCgroup: z
      .string()
      .startsWith('/', 'an absolute cgroup path')
      .optional()
      .describe("pause mode, busy guard ([docs/busy-guard.md](docs/busy-guard.md)): the absolute cgroup QEMU's CPU and block I/O are counted in (a Nomad task's cgroup: its v1 freezer path or its cgroup2 directory)")
      .register(computedDefaults, { text: 'the QEMU process, once its pid is known (the first page-out)' }),
  })
  .superRefine((runtime, ctx) => {
    if (runtime.mode === 'pause' && runtime.qmp === undefined) ctx.addIssue({ code: 'custom', path: ['qmp'], message: "pause mode needs the VM's QMP socket" });
    if (runtime.mode === 'snapshot' && runtime.control === undefined) {
      ctx.addIssue({ code: 'custom', path: ['control'], message: 'snapshot mode needs the control socket of the VM\'s "doze vm run" owner (<state dir>/control.sock)' });
    }
  });

// --- Cloud Hypervisor, Firecracker, Nomad scale (agent/runtimes/cloud-hypervisor.ts, firecracker.ts, nomad-scale.ts; docs/runtimes.md) ---
/** A helper program: its path (or a name on PATH) and leading arguments. */
const commandSpec = z.strictObject({ binary: z.string().min(1), args: z.array(z.string()).default([]) });

export const cloudHypervisorRuntimeSchema = z.strictObject({
  kind: z.literal('cloud-hypervisor'),
  socket: unixSocketPath.describe("the VMM's API socket (`cloud-hypervisor --api-socket path=…`), absolute and at most 107 bytes"),
  snapshotDir: absolutePath.optional().describe('snapshot each paused VM here (`<dir>/current`), so a VMM that restarts while it sleeps can restore it'),
  handleFile: absolutePath.optional().describe('where doze records that the VM is asleep and that a snapshot of it exists (what a restarted agent needs to wake it)'),
});

export const firecrackerRuntimeSchema = z
  .strictObject({
    kind: z.literal('firecracker'),
    socket: unixSocketPath.describe("the process's API socket (`firecracker --api-sock …`), absolute and at most 107 bytes"),
    mode: z.enum(['pause', 'snapshot']).default('pause').describe('`pause`: `PATCH /vm`, the process stays. `snapshot`: snapshot, stop the process, load into a fresh one on wake ([docs/runtimes.md](docs/runtimes.md))'),
    snapshotDir: absolutePath.optional().describe('snapshot mode (required there): holds `vmstate` and `mem`, plus `*.next` and `mem.diff` while a sleep is in progress'),
    diffSnapshots: z.boolean().default(true).describe('snapshot mode: `Diff` snapshots after the first `Full` one (merged with `snapshotEditor`)'),
    launcher: commandSpec.optional().describe('snapshot mode (required there): `{ "binary", "args" }` of the Firecracker to start fresh processes with (`--api-sock <socket>` is appended)'),
    snapshotEditor: commandSpec.optional().describe("`{ \"binary\", \"args\" }` of Firecracker's `snapshot-editor`, which merges Diff layers (`edit-memory rebase`); required when `diffSnapshots` is on in snapshot mode"),
    networkOverrides: z
      .array(z.strictObject({ iface_id: z.string().min(1), host_dev_name: z.string().regex(/^[A-Za-z0-9_.@-]{1,15}$/, 'a tap name of at most 15 characters') }))
      .default([])
      .describe("`[{ \"iface_id\", \"host_dev_name\" }]`: taps to restore the snapshot's interfaces onto (`PUT /snapshot/load` `network_overrides`)"),
    handleFile: absolutePath.optional().describe('the snapshot bookkeeping a restarted agent needs'),
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
  job: z.string().min(1).describe('the job of the task group to scale; it must be a `service` job'),
  group: z.string().min(1).describe('the task group to scale to 0 on sleep and back on wake'),
  port: z.string().min(1).optional().describe('the port label whose address a wake reports').register(computedDefaults, { text: "the allocation's first port" }),
  wakeCount: z.number().int().positive().optional().describe('the count to scale back to when no previous count was remembered').register(computedDefaults, { text: '`1`' }),
  nomad: z
    .strictObject({
      address: httpUrl,
      token: z.string().min(1).optional(),
      namespace: z.string().min(1).optional(),
      region: z.string().min(1).optional(),
    })
    .optional()
    .describe('`{ "address", "token", "namespace", "region" }` of the Nomad API')
    .register(computedDefaults, { text: '`NOMAD_ADDR`, else `http://127.0.0.1:4646` (`NOMAD_TOKEN` for the token)' }),
  handleFile: absolutePath.optional().describe("where the group's previous count survives an agent restart"),
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
  id: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'ids are 1-64 characters of letters, digits, "_", "." and "-"')
    .describe('its name in the status page, the API, the metrics and the log: 1-64 letters, digits, `_`, `.` and `-`'),
  // --- addresses, either family (issue 27) ---
  address: instanceAddress.describe('`IPv4:port` or `[IPv6]:port` of the instance: where its clients reach it'),
  addresses: z
    .array(instanceAddress)
    .default([])
    .describe('its other addresses (dual-stack: the IPv6 one beside the IPv4 one, or the reverse): counted, tracked and woken on as `address` is, and checks sent to them are answered while it sleeps'),
  checkAddresses: z.array(instanceAddress).default([]).describe('other `IPv4:port` or `[IPv6]:port` addresses its checks are sent to (a mapped host port); redirected too'),
  metricsPath: z
    .string()
    .startsWith('/', 'a path such as "/metrics"')
    .default('/metrics')
    .describe('where the app serves its metrics: fetched through its address just before it sleeps, and served to `observers` while it sleeps (`doze.metrics_path`; [docs/observers.md](docs/observers.md))'),
  interface: interfaceName
    .optional()
    .describe("the instance's host-side interface (veth, tap), where the tc programs attach. Without one it is a host-port instance (host network mode, QEMU's user-mode hostfwd): counted by the address's port on the node's own interfaces, and the address must be one of the node's"),
  idleTimeout: duration.prefault('500ms').describe('no unmarked traffic for this long (and nothing in flight) means idle'),
  idlePolicy: z.enum(IDLE_POLICIES).default('requests').describe('`requests`, `connections` or `traffic` (below)'),
  wake: z
    .enum(WAKE_MODES)
    .optional()
    .describe(
      '`retry`: the first packets go to the instance as usual (a frozen process\'s kernel queues the handshake; a VM whose process is gone drops the SYN and the client retransmits after 1 s). `hold`: the first connections are taken by the agent while the instance wakes and relayed once it serves, so nobody waits for a retransmit. Set it to keep either',
    )
    .register(computedDefaults, { text: '`hold` where the runtime drops the first SYN while asleep (`qemu` snapshot without `--prespawn`, `firecracker` snapshot), else `retry`' }),
  maxHeld: z
    .number()
    .int()
    .positive()
    .default(32)
    .describe('hold mode: at most this many connections held at once (the excess takes the retry path: an nft/iptables `connlimit`, no unbounded queue)'),
  holdTimeout: duration.prefault('10s').describe('hold mode: a held connection is reset at this deadline, and all are reset at once when the wake fails'),
  minAwake: duration.prefault(0).describe('never sleep sooner than this after a wake'),
  maxAwake: duration.optional().describe('bounds how long in-flight requests / open connections / the busy guard keep a packet-idle instance awake'),
  busyCpu: z
    .number()
    .min(0, 'a share of one core, 0 or more (0 turns the busy guard off)')
    .default(BUSY_CPU_DEFAULT)
    .describe(
      'busy guard: the share of one core that still counts as quiet. Above it (CPU over the last idle window, min(idle timeout, 1 s); or block I/O over 1 MiB/s) the instance is still working and does not sleep; `0` turns it off ([docs/busy-guard.md](docs/busy-guard.md))',
    ),
  maxSleep: duration.optional().describe('wake by itself after this long asleep (`doze.max_sleep`)'),
  dryRun: z
    .boolean()
    .default(false)
    .describe('rehearse (`doze.dry_run`): every decision is made as if managed, but the instance is never frozen, redirected or reclaimed; each sleep it would have taken is logged and counted (`GET /api/instances`: `dryRun`, `wouldSleeps`, `wouldAsleepMs`, `wouldFreeByteSeconds`) and drawn on the timeline. Turn it off by a `PUT` of its config or a Nomad job update, no restart'),
  wakeTimeout: duration.prefault('5s').describe("deadline for the runtime's wake; a wake past its deadline is a failed wake"),
  pauseTimeout: duration.prefault('5s').describe("deadline for the runtime's sleep; a sleep past its deadline is undone and the instance stays awake"),
  memory: z.number().int().nonnegative().default(0).describe('MiB it holds awake, for `budget.maxActiveMemory` (Nomad: the task\'s memory)'),
  checkTls: checkTlsSchema
    .optional()
    .describe('`{ "certFile", "keyFile" }`: this instance\'s certificate for its verifying TLS checks')
    .register(computedDefaults, { text: '`healthChecks.tls`' }),
  runtime: runtimeSchema.describe(
    'how it sleeps: `{ "kind": "freezer", "cgroup": "doze/web" }` (relative to the freezer hierarchy, or absolute), or `{ "kind": "qemu", "qmp": "/run/…/qmp.sock", "mode": "pause" }` ([docs/qemu.md](docs/qemu.md)); `cloud-hypervisor`, `firecracker` and `nomad-scale` ([docs/runtimes.md](docs/runtimes.md)); `fake` for tests',
  ),
});

// --- Docker engine (agent/docker/; docs/docker.md) -------------------------------------------------
export const dockerSchema = z.strictObject({
  socket: unixSocketPath
    .optional()
    .describe("the Docker engine's unix socket, where Nomad docker tasks' containers are looked up (read only: doze freezes their cgroups itself, [docs/docker.md](docs/docker.md))")
    .register(computedDefaults, { text: '`DOCKER_HOST` (`unix://…`), else `/var/run/docker.sock`' }),
});

// --- Nomad + Consul discovery (agent/discovery/nomad-instances.ts) ---------------------------------
/** PEM files for an https address (NOMAD_CACERT / NOMAD_CLIENT_CERT / NOMAD_CLIENT_KEY and Consul's equivalents). */
const tlsFilesSchema = z.strictObject({
  caFile: z.string().min(1).optional(),
  certFile: z.string().min(1).optional(),
  keyFile: z.string().min(1).optional(),
  serverName: z.string().min(1).optional(),
});

export const nomadSchema = z.strictObject({
  address: httpUrl.describe('the local Nomad agent, an http(s) URL (as `NOMAD_ADDR`)'),
  token: z
    .string()
    .min(1)
    .optional()
    .describe('ACL token (`read-job` on the namespaces served; `namespace=*` for the event stream)')
    .register(computedDefaults, { text: '`NOMAD_TOKEN` (a task\'s workload identity)' }),
  namespace: z.string().min(1).optional().describe('namespace of the allocation event stream').register(computedDefaults, { text: '`*` (every namespace the token can read)' }),
  region: z.string().min(1).optional().describe('`region` query parameter').register(computedDefaults, { text: "agent's" }),
  nodeId: z
    .string()
    .min(1)
    .optional()
    .describe("this client node's id. When unset, the agent asks the local Nomad agent (`GET /v1/agent/self`, `stats.client.node_id`) and retries with backoff until it answers; a server-only agent is an error that says to set it")
    .register(computedDefaults, { text: 'asked' }),
  tls: tlsFilesSchema.optional().describe('`{ "caFile", "certFile", "keyFile", "serverName" }` for an https address'),
  allocDir: z
    .string()
    .startsWith('/', 'an absolute path')
    .optional()
    .describe("the client's `data_dir` + `/alloc`: where a qemu-driver task's QMP socket is (`<alloc id>/<task>/local/doze-qmp.sock`)")
    .register(computedDefaults, { text: '`/opt/nomad/data/alloc`' }),
  cgroupRoot: z.string().startsWith('/', 'an absolute path').default('/sys/fs/cgroup').describe("where Nomad's task cgroups are found (v1 `freezer/nomad/…`, v2 `nomad.slice/…`)"),
  checkTls: z
    .record(z.string().min(1), checkTlsSchema)
    .optional()
    .describe('`{ "<Consul service name>": { "certFile", "keyFile" } }`: certificates for TLS checks that verify them, per service (before `healthChecks.tls`)'),
});

export const consulSchema = z.strictObject({
  address: httpUrl.describe('the local Consul agent, an http(s) URL (as `CONSUL_HTTP_ADDR`)'),
  token: z.string().min(1).optional().describe('ACL token').register(computedDefaults, { text: '`CONSUL_HTTP_TOKEN`' }),
  tls: tlsFilesSchema.optional().describe('`{ "caFile", "certFile", "keyFile", "serverName" }` for an https address'),
  register: z
    .boolean()
    .default(true)
    .describe('register the agent as service `doze-agent` with an HTTP check on its `/healthz` (checked over loopback when `listen` is a wildcard); deregistered on a clean stop'),
  checkInterval: duration.prefault('10s').describe('interval of that check'),
});
// --- end Nomad + Consul ---------------------------------------------------------------------------

// --- Release and operations (agent/instances/registration-policy.ts, agent/config/exposure.ts; docs/security.md) ---
export const registrationsSchema = z.strictObject({
  enabled: z
    .boolean()
    .default(false)
    .describe('accept `PUT`/`DELETE /api/instances/{id}` (`doze vm run --register`); off, both answer 404 ([docs/security.md](docs/security.md))'),
  cgroupRoots: z
    .array(absolutePath)
    .min(1)
    .optional()
    .describe('a registered runtime may only name cgroups strictly below these directories (a root itself is refused: it holds other tenants)')
    .register(computedDefaults, { text: "Nomad's task cgroups: `/sys/fs/cgroup/nomad.slice` and `/sys/fs/cgroup/<v1 controller>/nomad`" }),
  pathRoots: z
    .array(absolutePath)
    .min(1)
    .optional()
    .describe("a registered runtime may only name sockets, state files and directories (and `checkTls` files) below these, symlinks resolved; it may never name a program to run (`launcher`, `snapshotEditor`) nor be `nomad-scale`")
    .register(computedDefaults, { text: "doze's run directory `/run/doze`, and `nomad.allocDir` when `nomad` is set (`doze vm run`'s state in a task's `local/`)" }),
});
// --- end release and operations ---

export const configSchema = z.strictObject({
  listen: hostPort.default('127.0.0.1:7070').describe('status page, JSON API, `/metrics` (loopback unless you say otherwise; any other address needs `token`); `--listen`, `DOZE_LISTEN`'),
  token: z
    .string()
    .min(1)
    .optional()
    .describe('bearer token required by `POST /api/instances/{id}/sleep` and `/wake`, and by `PUT`/`DELETE /api/instances/{id}`; required when `listen` is not a loopback address (the agent exits 2 without it); `--token`, `DOZE_TOKEN`'),
  logLevel: z
    .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
    .default('info')
    .describe('`fatal`, `error`, `warn`, `info`, `debug`, `trace` or `silent`: what the JSON log (stdout) carries; `--log-level`, `DOZE_LOG_LEVEL`'),
  dryRun: z.boolean().default(false).describe('rehearse every instance on the node (a first rollout): as `instances[].dryRun`, whatever each says'),
  earlyThaw: z
    .boolean()
    .default(true)
    .describe('thaw a sleeping freezer instance (no `reclaim`, `wake: retry`, within the budget) in the wake-event reader the moment its first packet is seen, before the agent runs the rest of the wake (docs/wake-path.md); `false` leaves every thaw to the agent'),
  coldStartThreshold: duration
    .optional()
    .describe("mark an instance whose wakes cost its users more than this: its first-response p99 over the last day (first packet → first response byte) above it shows as `slowWakes` in the API and on the status page, where `reclaim` or a shorter `idleTimeout` hurts"),
  bpffs: z.string().default('/sys/fs/bpf').describe('bpffs mount; maps are pinned in `tc/globals/doze_*`; one agent per bpffs (`--bpffs`, `DOZE_BPFFS`)'),
  stub: z.strictObject({ listen: hostPort.default('127.0.0.1:7071').describe("the health-check stub, which answers the checks of sleeping instances; `DOZE_STUB_LISTEN`") }).prefault({}),
  healthChecks: z
    .strictObject({
      mark: mark.prefault('0x1').describe('skb mark bits of health-check traffic; must not use `0x2000` (CNI portmap)'),
      fromUid: z.number().int().nonnegative().optional().describe('mark connections opened by this uid (Consul agent on the host as its packaged user; the owner match only works for local sockets)'),
      fromUser: z
        .string()
        .regex(/^[a-z_][a-z0-9_.-]*\$?$/i, 'a user name')
        .optional()
        .describe('the same by user name, looked up at start through NSS (`getent passwd`: local, LDAP, systemd users; Consul agent on the host: `"fromUser": "consul"`)'),
      fromSources: z
        .array(z.string())
        .default([])
        .describe('mark connections from these addresses/CIDRs (Consul in a container, remote checkers); for host-port instances the tc program also matches them itself (IPv4 and IPv6), since it sees a remote packet before netfilter marks it'),
      tls: checkTlsSchema
        .optional()
        .describe(
          '`{ "certFile", "keyFile" }` (PEM): the certificate the stub answers TLS checks that verify it with (HTTPS, gRPC with TLS), for every instance; checks that skip verification get a self-signed one. A Nomad instance whose check verifies and that has no certificate is kept awake ([docs/nomad.md](docs/nomad.md))',
        ),
    })
    .prefault({}),
  // --- observers (issue 27) ---
  observers: z
    .strictObject({
      fromSources: z
        .array(sourceNet)
        .default([])
        .describe('addresses/CIDRs (IPv4 or IPv6) of scrapers and probes (Prometheus, uptime robots, load balancer checks): their packets never count as traffic and never wake a sleeper; while an instance sleeps they get its last metrics from the agent ([docs/observers.md](docs/observers.md))'),
      mark: mark.prefault('0x4').describe("skb mark bits of observers' connections (beside `healthChecks.mark`, never the same bits)"),
    })
    .prefault({}),
  /** Node budget: more instances than fit awake; a wake that would exceed it puts the least recently used to sleep. */
  budget: z
    .strictObject({
      maxActive: z
        .number()
        .int()
        .positive()
        .optional()
        .describe(
          'node budget, instances awake at once: a wake that would exceed it first puts the least recently used awake instance to sleep (never one within `minAwake`, serving a request, or found working by the busy guard); if none can sleep, the wake waits in a queue of at most `budget.maxQueued` and, at its deadline, goes ahead over budget (counted) rather than fail a request',
        ),
      maxActiveMemory: z.number().int().positive().optional().describe('node budget in MiB of the awake instances\' `memory`, kept as `budget.maxActive` is'),
      maxQueued: z.number().int().nonnegative().default(64).describe('wakes that may wait for room at once; past it a wake goes ahead over budget (never hurt a request)'),
      pacedWakeTimeout: duration
        .prefault('20s')
        .describe(
          'mass wakes (agent stop, a drain or any removal that wakes): reclaimed sleepers fault their memory back under `budget.maxActive` / `budget.maxActiveMemory` (counting each one\'s memory before its reclaim), most recently used first; one still waiting at this deadline wakes over budget and is reported (log, `GET /api/status`). Within the agent job\'s `kill_timeout` (30 s)',
        ),
    })
    .prefault({}),
  hostPorts: z
    .strictObject({
      interfaces: z
        .array(interfaceName)
        .min(1)
        .optional()
        .describe('node interfaces the host-port programs attach to (both hooks; lo only on ingress, where it sees every local packet); unset, every interface with an address is watched, and new ones within 30 s (the status page lists them)')
        .register(computedDefaults, { text: 'lo + every interface with an address' }),
    })
    .prefault({}),
  netfilter: z
    .strictObject({
      chainPrefix: z
        .string()
        .regex(/^[A-Z][A-Z0-9_-]{0,19}$/, 'upper-case letters, digits, "_" or "-", at most 20')
        .default('DOZE')
        .describe('names of the iptables chains the agent owns (`DOZE-MARK-OUT`, `DOZE-MARK-IN`); `--chain-prefix`, `DOZE_CHAIN_PREFIX`'),
    })
    .prefault({}),
  instances: z.array(instanceSchema).default([]).describe('the instances this file declares (Nomad allocations and `PUT /api/instances/{id}` add more)'),
  nomad: nomadSchema.optional().describe('discover instances from Nomad allocations annotated `doze.*` ([docs/nomad.md](docs/nomad.md))'),
  consul: consulSchema.optional().describe("register the agent in Consul and pass sleeping instances' TTL checks ([docs/nomad.md](docs/nomad.md))"),
  docker: dockerSchema.prefault({}).describe('the Docker engine of Nomad docker tasks ([docs/docker.md](docs/docker.md))'),
  registrations: registrationsSchema.prefault({}).describe('run-time registrations through the status API'),
});

export type DozeConfig = z.infer<typeof configSchema>;
export type InstanceConfig = z.infer<typeof instanceSchema>;
export type RuntimeConfig = z.infer<typeof runtimeSchema>;
export type IdlePolicy = (typeof IDLE_POLICIES)[number];
export type WakeMode = (typeof WAKE_MODES)[number];
export type NomadConfig = z.infer<typeof nomadSchema>;
export type ConsulConfig = z.infer<typeof consulSchema>;
export type DockerConfig = z.infer<typeof dockerSchema>;
export type RegistrationsConfig = z.infer<typeof registrationsSchema>;
