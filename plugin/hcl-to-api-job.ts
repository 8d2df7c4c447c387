import { parseDuration } from '../agent/config/duration.js';
import { DozeError } from '../agent/shared/errors.js';

/*
 * Turns hcl2json's rendering of a jobspec into Nomad's API job JSON, for the
 * offline path (no Nomad to call /v1/jobs/parse). hcl2json keeps HCL's shape:
 * blocks are arrays of bodies, labelled blocks are objects keyed by label,
 * attributes (including maps such as `meta = {…}`) are plain values. Nomad's
 * API uses PascalCase names, a few renamed fields (port → PortLabel, memory →
 * MemoryMB…) and nanosecond durations.
 *
 * Covered: the job/group/task/network/service/check/resources/constraint
 * structure doze validates, the fields whose API names are not the HCL
 * name in PascalCase (FIELD_NAMES, read from the `hcl` and `json` tags of
 * Nomad's api package: api/tasks.go, api/jobs.go, api/services.go,
 * api/resources.go, api/networking.go, at v1.11.3), and a generic rename
 * for everything else. Nomad decodes job JSON case-insensitively and drops
 * unknown fields silently, so a wrong name would lose the block without a
 * word: blocks this parser cannot map (UNMAPPED) are refused instead.
 * Not covered: HCL functions and variables (left as "${…}" strings), and
 * Nomad's canonical defaults. With a Nomad address, Nomad parses instead.
 */

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Body = { [key: string]: Json };

/** HCL name → API name where it is not just PascalCase. */
const RENAMES: Record<string, string> = {
  group: 'TaskGroups', task: 'Tasks', network: 'Networks', service: 'Services', check: 'Checks',
  constraint: 'Constraints', affinity: 'Affinities', spread: 'Spreads', template: 'Templates', artifact: 'Artifacts',
  volume_mount: 'VolumeMounts', device: 'Devices', restart: 'RestartPolicy', reschedule: 'ReschedulePolicy',
  logs: 'LogConfig', cpu: 'CPU', memory: 'MemoryMB', memory_max: 'MemoryMaxMB', attribute: 'LTarget',
  value: 'RTarget', operator: 'Operand', dns: 'DNS', size: 'SizeMB', max_files: 'MaxFiles', max_file_size: 'MaxFileSizeMB',
};

/**
 * Per block: HCL name → API name where the API's differs from RENAMES and
 * PascalCase (the `hcl:"…"` tag vs the Go field / `json` name).
 */
const FIELD_NAMES: Record<string, Record<string, string>> = {
  job: { parameterized: 'ParameterizedJob', reschedule: 'Reschedule' },
  template: {
    source: 'SourcePath', destination: 'DestPath', data: 'EmbeddedTmpl', uid: 'Uid', gid: 'Gid', left_delimiter: 'LeftDelim',
    right_delimiter: 'RightDelim', env: 'Envvars', error_on_missing_key: 'ErrMissingKey',
  },
  artifact: { source: 'GetterSource', options: 'GetterOptions', headers: 'GetterHeaders', mode: 'GetterMode', insecure: 'GetterInsecure', destination: 'RelativeDest' },
  periodic: { cron: 'Spec', crons: 'Specs' },
  spread: { attribute: 'Attribute' },
  volume_mount: { selinux_label: 'SELinuxLabel' },
  identity: { aud: 'Audience' },
  check: { grpc_service: 'GRPCService', grpc_use_tls: 'GRPCUseTLS', task: 'TaskName', port: 'PortLabel' },
  resources: { disk: 'DiskMB', secrets: 'SecretsMB', iops: 'IOPS' },
  network: { mbits: 'MBits', cni: 'CNI', device: 'Device' },
  task: { identity: 'Identities' },
};

/** Blocks this parser cannot render faithfully (labelled or deeply nested shapes): refused with a pointer to Nomad's parser. */
const UNMAPPED = new Set(['connect', 'multiregion', 'ui', 'csi_plugin', 'action', 'secret', 'numa', 'dynamic']);

/** Attribute maps inside these blocks are the user's (autoscaler policy, getter options). */
const VERBATIM_IN: Record<string, Set<string>> = { scaling: new Set(['policy']), artifact: new Set(['options', 'headers']) };

/** Blocks that may repeat: always lists in the API. */
const LIST_BLOCKS = new Set(['network', 'service', 'check', 'constraint', 'affinity', 'spread', 'template', 'artifact', 'volume_mount', 'device', 'upstreams', 'expose', 'path', 'identity']);

/** Attribute maps whose keys are the user's, not Nomad's: kept verbatim. */
const VERBATIM = new Set(['meta', 'env', 'config', 'header', 'labels', 'options', 'headers']);
const STRING_MAPS = new Set(['meta', 'env']);

/** Fields that are Go time.Duration in the API (nanoseconds in JSON). */
const DURATIONS = new Set([
  'interval', 'timeout', 'grace', 'kill_timeout', 'shutdown_delay', 'stagger', 'min_healthy_time', 'healthy_deadline',
  'progress_deadline', 'delay', 'max_delay', 'max_client_disconnect', 'stop_after_client_disconnect', 'splay',
  'initial_status_delay', 'lost_after', 'min', 'max', 'deadline', 'ttl',
]);

/** Duration fields only inside these blocks (elsewhere the same names are numbers: scaling min/max). */
const DURATIONS_IN: Record<string, Set<string>> = { wait: new Set(['min', 'max']), wait_bounds: new Set(['min', 'max']) };

const ACRONYMS: Record<string, string> = { id: 'ID', ip: 'IP', cpu: 'CPU', dns: 'DNS', cidr: 'CIDR', ttl: 'TTL', url: 'URL', tls: 'TLS', uid: 'UID', mb: 'MB', hcl: 'HCL' };

export function pascalCase(key: string): string {
  return key
    .split('_')
    .map((part) => ACRONYMS[part] ?? part.charAt(0).toUpperCase() + part.slice(1))
    .join('');
}

function isBody(value: Json | undefined): value is Body {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Bodies of an unlabelled block, written once (`x {}`) or as a list. */
function bodies(value: Json | undefined): Body[] {
  if (Array.isArray(value)) return value.filter(isBody);
  return isBody(value) ? [value] : [];
}

/** Where each `kind "label"` first appears in the source: hcl2json sorts labels, Nomad keeps file order. */
type LabelOrder = (kind: string, label: string) => number;

function labelOrder(source: string | undefined): LabelOrder {
  const first = new Map<string, number>();
  for (const match of (source ?? '').matchAll(/\b([a-z_]+)\s+"((?:[^"\\]|\\.)*)"\s*\{/g)) {
    const key = `${match[1]}:${match[2]}`;
    if (!first.has(key)) first.set(key, match.index);
  }
  return (kind, label) => first.get(`${kind}:${label}`) ?? Number.MAX_SAFE_INTEGER;
}

let order: LabelOrder = () => 0;

/** [label, body] pairs of a labelled block (`group "web" {}`), in file order when the source is known. */
function labelled(value: Json | undefined, kind = ''): [string, Body][] {
  if (!isBody(value)) return [];
  const pairs = Object.entries(value).flatMap(([label, inner]) => bodies(inner).map((body): [string, Body] => [label, body]));
  return pairs.sort((a, b) => order(kind, a[0]) - order(kind, b[0]));
}

function durationNs(value: Json): Json {
  if (typeof value !== 'string') return value;
  const ms = parseDuration(value);
  return ms === undefined ? value : ms * 1_000_000;
}

function stringMap(value: Json | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const body of bodies(value)) {
    for (const [key, inner] of Object.entries(body)) out[key] = typeof inner === 'string' ? inner : JSON.stringify(inner);
  }
  return out;
}

/** The generic rule: rename, convert durations, recurse into blocks, keep user maps verbatim. `block`: the HCL block name of `body`. */
function convertBody(body: Body, special: Record<string, (value: Json, out: Body) => void> = {}, block = '', where = ''): Body {
  const out: Body = {};
  for (const [key, value] of Object.entries(body)) {
    const handler = special[key];
    if (handler) {
      handler(value, out);
      continue;
    }
    if (UNMAPPED.has(key) && Array.isArray(value) && value.every(isBody)) {
      throw new DozeError('E_JOB_PARSE', `${where || 'job'}: the offline parser cannot render a "${key}" block into Nomad's API JSON (Nomad would drop what it cannot read, silently); parse with Nomad instead (--nomad-addr or NOMAD_ADDR)`);
    }
    const name = FIELD_NAMES[block]?.[key] ?? RENAMES[key] ?? pascalCase(key);
    if (FIELD_NAMES[block]?.[key] && !(Array.isArray(value) && value.every(isBody))) out[name] = value;
    else if (VERBATIM_IN[block]?.has(key)) out[name] = Array.isArray(value) ? (bodies(value)[0] ?? {}) : value;
    else if (STRING_MAPS.has(key)) out[name] = stringMap(value);
    else if (VERBATIM.has(key)) out[name] = Array.isArray(value) ? (bodies(value)[0] ?? {}) : value;
    else if (isDuration(block, key)) out[name] = durationNs(value);
    else if (Array.isArray(value) && value.length > 0 && value.every(isBody)) {
      const converted = value.map((b) => convertBody(b, specialFor(key, where), key, where));
      out[name] = LIST_BLOCKS.has(key) ? converted : converted[0]!;
    } else out[name] = value;
  }
  return out;
}

function isDuration(block: string, key: string): boolean {
  const scoped = DURATIONS_IN[block];
  if (key === 'min' || key === 'max') return scoped?.has(key) ?? false;
  if (key === 'ttl' || key === 'deadline') return block === 'check' || block === 'check_restart' || block === 'identity' || block === 'update';
  return DURATIONS.has(key);
}

/** Nested blocks with shapes of their own (labelled children). */
function specialFor(block: string, where: string): Record<string, (value: Json, out: Body) => void> {
  if (block === 'spread') {
    return { target: (v, out) => (out.SpreadTarget = labelled(v).map(([label, b]) => ({ Value: label, ...convertBody(b, {}, 'target', where) }))) };
  }
  return {};
}

function convertConstraint(body: Body): Body {
  const out = convertBody(body);
  out.Operand ??= '=';
  return out;
}

function convertCheck(body: Body, where: string): Body {
  return convertBody(body, { port: (v, out) => (out.PortLabel = v) }, 'check', where);
}

function convertService(body: Body, where: string): Body {
  return convertBody(body, {
    port: (v, out) => (out.PortLabel = typeof v === 'number' ? String(v) : v),
    task: (v, out) => (out.TaskName = v),
    check: (v, out) => (out.Checks = bodies(v).map((b) => convertCheck(b, where))),
  }, 'service', where);
}

function convertNetwork(body: Body, where: string): Body {
  return convertBody(body, {
    port: (v, out) => {
      const dynamic: Body[] = [];
      const reserved: Body[] = [];
      for (const [label, port] of labelled(v)) {
        const entry: Body = { Label: label, Value: typeof port.static === 'number' ? port.static : 0, To: typeof port.to === 'number' ? port.to : 0 };
        if (typeof port.host_network === 'string') entry.HostNetwork = port.host_network;
        (typeof port.static === 'number' ? reserved : dynamic).push(entry);
      }
      if (dynamic.length) out.DynamicPorts = dynamic;
      if (reserved.length) out.ReservedPorts = reserved;
    },
  }, 'network', where);
}

function common(where: string): Record<string, (value: Json, out: Body) => void> {
  return {
    meta: (v: Json, out: Body) => (out.Meta = stringMap(v)),
    constraint: (v: Json, out: Body) => (out.Constraints = bodies(v).map(convertConstraint)),
    service: (v: Json, out: Body) => (out.Services = bodies(v).map((b) => convertService(b, where))),
    network: (v: Json, out: Body) => (out.Networks = bodies(v).map((b) => convertNetwork(b, where))),
  };
}

function convertTask(name: string, body: Body, group: string): Body {
  const where = `group ${JSON.stringify(group)} task ${JSON.stringify(name)}`;
  return {
    Name: name,
    ...convertBody(body, {
      ...common(where),
      resources: (v, out) => {
        const first = bodies(v)[0];
        if (first) out.Resources = convertBody(first, { network: common(where).network! }, 'resources', where);
      },
      // Task scaling blocks are labelled ("cpu", "mem") policies: not rendered here.
      scaling: (v) => {
        if (v !== null) throw new DozeError('E_JOB_PARSE', `${where}: the offline parser cannot render a task "scaling" block into Nomad's API JSON; parse with Nomad instead (--nomad-addr or NOMAD_ADDR)`);
      },
    }, 'task', where),
  };
}

function convertGroup(name: string, body: Body): Body {
  const where = `group ${JSON.stringify(name)}`;
  return {
    Name: name,
    ...convertBody(body, {
      ...common(where),
      task: (v, out) => (out.Tasks = labelled(v, 'task').map(([label, b]) => convertTask(label, b, name))),
      volume: (v, out) => (out.Volumes = Object.fromEntries(labelled(v).map(([label, b]) => [label, { Name: label, ...convertBody(b, {}, 'volume', where) }]))),
    }, 'group', where),
  };
}

/**
 * hcl2json output → `{ ID, TaskGroups: [...] , … }` as Nomad's API spells a
 * job. With the HCL source, groups and tasks keep their file order (by first
 * appearance of `group "name" {` / `task "name" {`).
 */
export function hclJsonToApiJob(hcl: unknown, file: string, source?: string): Record<string, unknown> {
  order = labelOrder(source);
  const top = isBody(hcl as Json) ? (hcl as Body) : {};
  const jobs = labelled(top.job);
  if (jobs.length !== 1) {
    throw new DozeError('E_JOB_PARSE', `${file}: expected exactly one job block, found ${jobs.length}`);
  }
  const [id, body] = jobs[0]!;
  const job = convertBody(body, {
    ...common(`job ${JSON.stringify(id)}`),
    group: (v, out) => (out.TaskGroups = labelled(v, 'group').map(([label, b]) => convertGroup(label, b))),
  }, 'job', `job ${JSON.stringify(id)}`);
  return { ID: id, Name: typeof body.name === 'string' ? body.name : id, ...job };
}
