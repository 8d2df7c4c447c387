import { formatDuration, parseDuration } from '../config/duration.js';
import { nearestName } from '../shared/nearest-name.js';

/*
 * Every `doze.*` Nomad meta key, with its type, default and meaning. Job,
 * group and task meta are merged the way Nomad merges them (the narrower
 * wins). Docs (docs/nomad.md) carry the table `metaKeysMarkdown()` renders,
 * and a test fails when the two drift or when a key is used undeclared.
 */

export const IDLE_POLICIES = ['requests', 'connections', 'traffic'] as const;
export const SLEEP_MODES = ['snapshot', 'pause', 'scale'] as const;
export const WAKE_MODES = ['retry', 'hold'] as const;

export type IdlePolicy = (typeof IDLE_POLICIES)[number];
export type SleepMode = (typeof SLEEP_MODES)[number];
export type WakeMode = (typeof WAKE_MODES)[number];

interface KeyBase {
  key: `doze.${string}`;
  description: string;
}
export type MetaKeyDeclaration =
  | (KeyBase & { type: 'boolean'; default: 'true' | 'false' })
  | (KeyBase & { type: 'duration'; default: string | undefined })
  /** `default` undefined: it depends on the runtime (said in the description). */
  | (KeyBase & { type: 'enum'; values: readonly string[]; default: string | undefined })
  | (KeyBase & { type: 'number'; min: number; default: string })
  | (KeyBase & { type: 'address'; default: undefined })
  | (KeyBase & { type: 'path'; default: string });

export const META_KEYS = [
  { key: 'doze.enabled', type: 'boolean', default: 'false', description: 'Let doze manage this job, group or task. Nothing else is read unless it resolves to true.' },
  { key: 'doze.idle_timeout', type: 'duration', default: '5m', description: 'How long an instance must be idle (per doze.idle_policy) before it sleeps.' },
  { key: 'doze.idle_policy', type: 'enum', values: IDLE_POLICIES, default: 'requests', description: 'What counts as idle: `requests` = no client packet and no request in flight; `connections` = also no open client connection; `traffic` = no inbound packet at all.' },
  { key: 'doze.mode', type: 'enum', values: SLEEP_MODES, default: 'pause', description: 'How it sleeps: `pause` freezes the task (cgroup freezer, memory kept; a qemu-driver VM is stopped through QMP, see doze.reclaim); `snapshot` saves a VM\'s state and frees its memory; `scale` sets the group count to 0 through Nomad (services leave the catalog).' },
  { key: 'doze.reclaim', type: 'boolean', default: 'true', description: 'Push a sleeper\'s memory out. With `pause` on a task of Nomad\'s qemu driver (default `true`): the guest\'s RAM leaves memory while the VM sleeps (`doze job render` puts that RAM in a file in the task directory); `false` keeps it resident: a faster wake, no memory freed. On other tasks (docker, exec, raw_exec; default `false` for them): after doze.reclaim_after asleep the frozen task\'s memory goes to swap (needs swap on the node, docs/memory.md).' },
  { key: 'doze.reclaim_after', type: 'duration', default: '10s', description: 'With doze.reclaim on a non-VM task: how long it sleeps before its memory is pushed out, so an instance that wakes often never pays for it.' },
  { key: 'doze.reclaim_keep', type: 'enum', values: ['working-set', 'nothing'], default: 'working-set', description: 'With doze.reclaim on a non-VM task: what stays resident. `working-set` keeps the pages the task touched since the last reclaim (its next wake as fast as a plain freezer wake, measured); `nothing` pushes everything out (docs/memory.md).' },
  { key: 'doze.tap_address', type: 'address', default: undefined, description: 'With `snapshot` on a task of Nomad\'s qemu driver: `doze vm run` creates the VM\'s tap (the `ifname=` of its `-netdev tap`) with this host end of a /30 or /31 (e.g. `10.213.${NOMAD_ALLOC_INDEX}.1/30`; Nomad interpolates it) and removes it when it stops. Unset: the tap must exist on the node.' },
  { key: 'doze.wake', type: 'enum', values: WAKE_MODES, default: undefined, description: 'The first packets to a sleeping instance: `retry` lets the client\'s own retransmission carry them (a dropped SYN costs about 1 s); `hold` holds them until the instance is awake. Unset: `hold` where the sleeping runtime drops the first SYN (`snapshot` VMs without a pre-spawned QEMU, Firecracker snapshots), `retry` elsewhere.' },
  { key: 'doze.min_awake', type: 'duration', default: '0s', description: 'Shortest time an instance stays awake after a wake, however idle.' },
  { key: 'doze.max_awake', type: 'duration', default: undefined, description: 'With open but silent connections, sleep anyway after this long without a client packet. At least doze.idle_timeout. Unset: connections may hold an instance awake forever.' },
  { key: 'doze.busy_cpu', type: 'number', min: 0, default: '0.1', description: 'Busy guard: the share of one core (CPU over the last idle window) that still counts as quiet; above it the instance is still working and does not sleep (doze.max_awake still bounds it). `0` turns the guard off.' },
  { key: 'doze.metrics_path', type: 'path', default: '/metrics', description: 'Where the app serves its metrics: the agent fetches it through the instance\'s own address just before the instance sleeps, and serves that body to observers (Prometheus, agent config `observers.fromSources`) while it sleeps (docs/observers.md).' },
  { key: 'doze.max_sleep', type: 'duration', default: undefined, description: 'Wake an instance that has slept this long even without traffic (e.g. for periodic work). Unset: sleep until traffic comes.' },
  { key: 'doze.dry_run', type: 'boolean', default: 'false', description: 'Rehearse: doze decides as if it managed the task (idle, busy guard) and logs, counts and draws each sleep it would have taken and the memory it would have freed, but never freezes, redirects or reclaims it. Set it to `false` (a job update) to let doze manage it for real, no restart.' },
] as const satisfies readonly MetaKeyDeclaration[];

export type MetaKey = (typeof META_KEYS)[number]['key'];

const DECLARED = new Map<string, MetaKeyDeclaration>(META_KEYS.map((d) => [d.key, d]));

export function isDeclaredMetaKey(key: string): key is MetaKey {
  return DECLARED.has(key);
}

/** Settings of one managed instance, after defaults and precedence. */
export interface DozeSettings {
  enabled: boolean;
  idleTimeoutMs: number;
  idlePolicy: IdlePolicy;
  mode: SleepMode;
  /** doze.reclaim: page a paused qemu-driver VM's guest RAM out of memory. */
  reclaim: boolean;
  /** doze.reclaim for a non-VM task: only when written (its default there is false). */
  reclaimFreezer: boolean;
  /** doze.reclaim_after. */
  reclaimAfterMs: number;
  /** doze.reclaim_keep. */
  reclaimKeep: 'working-set' | 'nothing';
  /** Unset: chosen by the runtime (hold where it drops the first SYN while asleep). */
  wake: WakeMode | undefined;
  minAwakeMs: number;
  /** doze.busy_cpu: the busy guard's threshold, a share of one core. */
  busyCpu: number;
  maxAwakeMs: number | undefined;
  maxSleepMs: number | undefined;
  /** doze.dry_run: decide, never freeze. */
  dryRun: boolean;
  /** doze.tap_address: the tap doze vm creates for a snapshot-mode qemu task. */
  tapAddress: string | undefined;
  /** doze.metrics_path: what observers get while it sleeps, fetched before it does. */
  metricsPath: string;
}

/** One level of meta: `job "web"`, `group "web"`, `group "web" task "app"`. */
export interface MetaLayer {
  place: string;
  meta: Record<string, string> | null | undefined;
}

export function jobPlace(job: string): string {
  return `job ${JSON.stringify(job)}`;
}
export function groupPlace(group: string): string {
  return `group ${JSON.stringify(group)}`;
}
export function taskPlace(group: string, task: string): string {
  return `group ${JSON.stringify(group)} task ${JSON.stringify(task)}`;
}

type Parsed = { ok: true; value: boolean | number | string } | { ok: false; why: string };

/** Go's strconv.ParseBool spellings, since Nomad users write meta for Go programs too. */
const TRUE = new Set(['1', 't', 'T', 'TRUE', 'true', 'True']);
const FALSE = new Set(['0', 'f', 'F', 'FALSE', 'false', 'False']);

function parseValue(decl: MetaKeyDeclaration, text: string): Parsed {
  switch (decl.type) {
    case 'boolean':
      if (TRUE.has(text.trim())) return { ok: true, value: true };
      if (FALSE.has(text.trim())) return { ok: true, value: false };
      return { ok: false, why: 'is not a boolean (use "true" or "false")' };
    case 'duration': {
      const ms = parseDuration(text);
      return ms === undefined ? { ok: false, why: 'is not a duration (use e.g. "500ms", "30s", "5m", "1h")' } : { ok: true, value: ms };
    }
    case 'number': {
      const value = Number(text.trim());
      return text.trim() !== '' && Number.isFinite(value) && value >= decl.min ? { ok: true, value } : { ok: false, why: `is not a number of at least ${decl.min} (e.g. "0.1")` };
    }
    case 'enum':
      return decl.values.includes(text.trim()) ? { ok: true, value: text.trim() } : { ok: false, why: `is not one of ${decl.values.join(', ')}` };
    case 'path': {
      const value = text.trim();
      return /^\/\S*$/.test(value) ? { ok: true, value } : { ok: false, why: 'is not a path (e.g. "/metrics")' };
    }
    case 'address': {
      // Nomad interpolation (${NOMAD_ALLOC_INDEX}…) is resolved on the node: doze vm checks the result.
      const value = text.trim();
      if (value.includes('${')) return { ok: true, value };
      const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(30|31)$/.exec(value);
      return match && match.slice(1, 5).every((o) => Number(o) <= 255)
        ? { ok: true, value }
        : { ok: false, why: 'is not the host end of a /30 or /31 (e.g. "10.213.7.1/30")' };
    }
  }
}

/**
 * Problems with the `doze.*` keys written at one place: unknown keys (with a
 * suggestion) and values that do not parse. Other meta is not doze's.
 */
export function checkMetaLayer(layer: MetaLayer): string[] {
  const problems: string[] = [];
  for (const [key, value] of Object.entries(layer.meta ?? {})) {
    if (!key.startsWith('doze.')) continue;
    const decl = DECLARED.get(key);
    if (!decl) {
      const guess = closestKey(key);
      problems.push(`${layer.place}: ${key}: unknown doze meta key${guess ? ` (did you mean ${guess}?)` : ` (known: ${META_KEYS.map((d) => d.key).join(', ')})`}`);
      continue;
    }
    const parsed = parseValue(decl, value);
    if (!parsed.ok) problems.push(`${layer.place}: ${key}: ${JSON.stringify(value)} ${parsed.why}`);
  }
  return problems;
}

/**
 * Resolves doze settings from layers ordered broad to narrow (job, group,
 * task): for each key the narrowest layer that sets it wins, else the
 * default. Problems name the place and value; settings are only meaningful
 * when there are none.
 */
export function resolveDozeMeta(layers: readonly MetaLayer[]): { settings: DozeSettings; problems: string[] } {
  const problems = layers.flatMap(checkMetaLayer);
  const winner = (key: MetaKey): { value: Parsed; place: string; text: string } | undefined => {
    for (let i = layers.length - 1; i >= 0; i--) {
      const layer = layers[i]!;
      const text = layer.meta?.[key];
      if (text !== undefined) return { value: parseValue(DECLARED.get(key)!, text), place: layer.place, text };
    }
    return undefined;
  };
  const get = <T>(key: MetaKey): T | undefined => {
    const decl = DECLARED.get(key)!;
    const found = winner(key);
    // An invalid value is reported above; the default stands in for it.
    const parsed = found?.value.ok ? found.value : decl.default === undefined ? undefined : parseValue(decl, decl.default);
    return parsed?.ok ? (parsed.value as T) : undefined;
  };
  const settings: DozeSettings = {
    enabled: get<boolean>('doze.enabled')!,
    idleTimeoutMs: get<number>('doze.idle_timeout')!,
    idlePolicy: get<IdlePolicy>('doze.idle_policy')!,
    mode: get<SleepMode>('doze.mode')!,
    reclaim: get<boolean>('doze.reclaim')!,
    reclaimFreezer: winner('doze.reclaim')?.value.ok ? get<boolean>('doze.reclaim')! : false,
    reclaimAfterMs: get<number>('doze.reclaim_after')!,
    reclaimKeep: get<'working-set' | 'nothing'>('doze.reclaim_keep')!,
    wake: get<WakeMode>('doze.wake'),
    minAwakeMs: get<number>('doze.min_awake')!,
    busyCpu: get<number>('doze.busy_cpu')!,
    maxAwakeMs: get<number>('doze.max_awake'),
    maxSleepMs: get<number>('doze.max_sleep'),
    dryRun: get<boolean>('doze.dry_run')!,
    tapAddress: get<string>('doze.tap_address'),
    metricsPath: get<string>('doze.metrics_path')!,
  };
  const maxAwake = winner('doze.max_awake');
  if (maxAwake?.value.ok && settings.maxAwakeMs !== undefined && settings.maxAwakeMs < settings.idleTimeoutMs) {
    problems.push(`${maxAwake.place}: doze.max_awake: ${JSON.stringify(maxAwake.text)} is shorter than doze.idle_timeout (${formatDuration(settings.idleTimeoutMs)})`);
  }
  if (settings.idleTimeoutMs === 0 && winner('doze.idle_timeout')?.value.ok) {
    const found = winner('doze.idle_timeout')!;
    problems.push(`${found.place}: doze.idle_timeout: ${JSON.stringify(found.text)} must be longer than 0`);
  }
  return { settings, problems: [...new Set(problems)] };
}

/** The declared key nearest to a misspelt one, if it is plausibly a typo. */
function closestKey(key: string): string | undefined {
  return nearestName(key, META_KEYS.map((d) => d.key));
}

/** The table docs/nomad.md carries, generated from META_KEYS. */
export function metaKeysMarkdown(): string {
  const rows = META_KEYS.map((d) => {
    const type = d.type === 'enum' ? d.values.map((v) => `\`${v}\``).join(' \\| ') : d.type;
    const fallback = d.default === undefined ? 'unset' : `\`${d.default}\``;
    return `| \`${d.key}\` | ${type} | ${fallback} | ${d.description} |`;
  });
  return ['| key | type | default | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}
