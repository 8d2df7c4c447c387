import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { ConfigError, DozeError } from '../shared/errors.js';
import { run, runJson } from '../process/exec.js';
import { linkExists } from './ip.js';

/** doze's filters sit at this preference on both clsact hooks; the handle marks them as ours. */
export const DOZE_TC_PREF = 100;
export const DOZE_TC_HANDLE = '0xd0';
export type Hook = 'egress' | 'ingress';
/**
 * Which section of doze.bpf.o goes on which hook. Program names are "doze_<section>", and tc
 * shows them cut to 15 characters: keep them within that.
 */
export type ProgramSet = Partial<Record<Hook, string>>;
/** An instance's own interface (veth host side, tap): egress = into it, ingress = out of it. */
export const OWN_INTERFACE: ProgramSet = { egress: 'egress', ingress: 'ingress' };
/** A node interface carrying host-port instances' traffic. */
export const HOST_INTERFACE: ProgramSet = { egress: 'host_out', ingress: 'host_in' };
/** lo: its ingress hook sees every local packet once, so only that one. */
export const HOST_LOOPBACK: ProgramSet = { ingress: 'host_in' };

const qdiscList = z.array(z.looseObject({ kind: z.string() }));
const filterList = z.array(
  z.looseObject({
    pref: z.number().optional(),
    kind: z.string().optional(),
    options: z.looseObject({ handle: z.string().optional(), prog: z.looseObject({ id: z.number(), name: z.string().optional() }).optional() }).optional(),
  }),
);

export interface AttachedFilter {
  hook: Hook;
  pref: number;
  programId: number;
  programName: string | undefined;
}

async function hasClsact(device: string): Promise<boolean> {
  const qdiscs = await runJson('tc', ['-j', 'qdisc', 'show', 'dev', device], qdiscList, { emptyOutput: [] });
  return qdiscs.some((q) => q.kind === 'clsact');
}

export async function listFilters(device: string): Promise<AttachedFilter[]> {
  const found: AttachedFilter[] = [];
  for (const hook of ['egress', 'ingress'] as const) {
    const filters = await runJson('tc', ['-j', 'filter', 'show', 'dev', device, hook], filterList, { allowFailure: true, emptyOutput: [] });
    for (const f of filters ?? []) { // undefined: no clsact qdisc yet
      if (f.kind === 'bpf' && f.options?.prog && f.pref !== undefined) {
        found.push({ hook, pref: f.pref, programId: f.options.prog.id, programName: f.options.prog.name });
      }
    }
  }
  return found;
}

/** ARPHRD_* numbers (/sys/class/net/<dev>/type) and `ip link`'s names for them; 1 and 772 start with an Ethernet header. */
const LINK_TYPES: Record<number, string> = { 1: 'ether', 772: 'loopback', 65534: 'none', 768: 'ipip', 769: 'tunnel6', 776: 'sit', 778: 'gre', 823: 'ip6gre', 512: 'ppp' };
const ETHERNET_TYPES = new Set([1, 772]);

/**
 * Refuses a device whose packets carry no Ethernet header (wireguard, tun, ipip: ARPHRD_NONE and
 * other L3 types): doze.bpf.c reads an Ethernet header first, so there it would count nothing and
 * wake nobody. A device that does not exist is left to attach, which names it. Read from sysfs,
 * not `ip link`: admitting an instance spawns no process (issue 29).
 */
export async function requireEthernet(device: string): Promise<void> {
  if (device.includes('/') || device.startsWith('.')) return; // not a name sysfs has: attach names it
  const type = Number((await readFile(`/sys/class/net/${device}/type`, 'utf8').catch(() => '')).trim() || NaN);
  if (Number.isNaN(type) || ETHERNET_TYPES.has(type)) return;
  throw new ConfigError(
    `interface ${device} carries no Ethernet header (link type ${LINK_TYPES[type] ?? `ARPHRD ${type}`}, as wireguard and tun devices are), so doze's tc programs cannot count its packets: ` +
      "give the instance the Ethernet interface its traffic crosses (the host side of its veth, or a tap), or leave the interface out for a host-port instance",
  );
}

/**
 * The way before issue 29, for bench/ only (and tests of pins it made): `tc filter replace … bpf
 * obj` per hook, a process and a verifier pass each. The agent loads the programs once and
 * attaches them by fd instead (agent/sources/tc-programs.ts). `replace` makes this idempotent,
 * and the pinned maps are reused because the programs pin them by name.
 */
export async function attachByTcCommand(device: string, objectPath: string, bpffs: string, programs: ProgramSet = OWN_INTERFACE): Promise<void> {
  if (!(await hasClsact(device))) {
    const added = await run('tc', ['qdisc', 'add', 'dev', device, 'clsact'], { allowFailure: true });
    if (added.code !== 0 && !(await hasClsact(device))) {
      throw new DozeError('E_COMMAND', `cannot add a clsact qdisc to ${device}: ${added.stderr.trim()}`);
    }
  }
  for (const hook of ['egress', 'ingress'] as const) {
    const section = programs[hook];
    if (section === undefined) continue;
    // TC_BPF_MNT points tc at the bpffs whose tc/globals holds the pinned maps.
    const args = ['filter', 'replace', 'dev', device, hook, 'pref', String(DOZE_TC_PREF), 'handle', DOZE_TC_HANDLE, 'bpf', 'da', 'obj', objectPath, 'sec', `tc/${section}`];
    const result = await run('tc', args, { env: { ...process.env, TC_BPF_MNT: bpffs }, allowFailure: true });
    if (result.code === 0) continue;
    // libbpf reuses a pinned map only if its type, key and value sizes match the object's.
    const stale = /couldn't reuse pinned map at '([^']+)'/.exec(result.stderr);
    if (stale) throw staleMaps(stale[1]!.replace(/\/\/+/g, '/'));
    throw new DozeError('E_COMMAND', `tc ${args.join(' ')} failed (exit ${result.code}): ${result.stderr.trim()}`);
  }
}

/**
 * Maps pinned by another doze version (after a crash: a clean exit removes them) whose layout is
 * not this one's. What to do is the operator's call, so the error says it.
 */
export function staleMaps(path: string): DozeError {
  const dir = path.slice(0, path.lastIndexOf('/'));
  return new DozeError(
    'E_STALE_PINS',
    `the pinned map ${path} was made by another doze version (its layout differs from this agent's): ` +
      `stop every doze agent on this node, remove the old maps (rm ${dir}/doze_*) and start the agent again; ` +
      'it adopts workloads the old agent left asleep',
  );
}

/**
 * Removes doze's filters with `tc`; removes the clsact qdisc too when nothing else uses it. The
 * agent detaches through doze-maps (TcPrograms.detach), without a process; this is for bench/ and tests.
 */
export async function detach(device: string): Promise<void> {
  if (!(await linkExists(device))) return; // the interface left with its instance
  for (const hook of ['egress', 'ingress'] as const) {
    await run('tc', ['filter', 'del', 'dev', device, hook, 'pref', String(DOZE_TC_PREF), 'handle', DOZE_TC_HANDLE, 'bpf'], { allowFailure: true });
  }
  const remaining = await listFilters(device);
  if (remaining.length === 0 && (await hasClsact(device))) {
    await run('tc', ['qdisc', 'del', 'dev', device, 'clsact'], { allowFailure: true });
  }
}

export async function isAttached(device: string, programs: ProgramSet = OWN_INTERFACE): Promise<boolean> {
  const filters = await listFilters(device);
  return (['egress', 'ingress'] as const).every((hook) => {
    const section = programs[hook];
    return section === undefined || filters.some((f) => f.hook === hook && f.pref === DOZE_TC_PREF && f.programName === `doze_${section}`);
  });
}
