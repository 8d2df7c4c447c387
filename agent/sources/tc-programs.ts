import { DozeError } from '../shared/errors.js';
import { OWN_INTERFACE, staleMaps, type ProgramSet } from '../net/tc.js';
import type { MapClient } from './map-client.js';

/**
 * doze's tc programs, loaded once per agent and attached to each interface by fd (issue 29).
 *
 * Decision: the agent's long-lived `doze-maps serve` co-process loads doze.bpf.o once at start
 * (libbpf, pin_root_path = <bpffs>/tc/globals, so the maps pinned by name are the ones `tc … bpf
 * obj` made and makes) and keeps the program fds; attaching an instance's interface is one line
 * to it, and one netlink request (bpf_tc_attach): no process and no verifier pass per interface,
 * where `tc filter replace … obj` per hook cost two of each. The filters are classic clsact ones
 * at the same pref (100), handle (0xd0) and direct-action flag as tc's, not tcx links: `tc filter
 * show`, listFilters/isAttached, other tools' filters and the hand-over (filters left attached
 * across an agent restart, then replaced) behave exactly as before. docs/design.md says so for users.
 */
export class TcPrograms {
  constructor(private readonly maps: MapClient) {}

  /** Loads the object; its maps are pinned in (or reused from) `pinDir`. */
  async load(objectPath: string, pinDir: string): Promise<void> {
    try {
      await this.maps.loadPrograms(objectPath, pinDir);
    } catch (error) {
      throw loadFailure(objectPath, error);
    }
  }

  /** The programs on the device's hooks; again on the same device replaces them (idempotent). */
  /** Both hooks or neither: a hook that fails takes the other's filter off again. */
  async attach(device: string, programs: ProgramSet = OWN_INTERFACE): Promise<void> {
    let attached = false;
    for (const hook of ['egress', 'ingress'] as const) {
      const section = programs[hook];
      if (section === undefined) continue;
      try {
        await this.maps.attachProgram(device, hook, section);
        attached = true;
      } catch (error) {
        if (attached) await this.detach(device).catch(() => undefined);
        throw attachFailure(device, error);
      }
    }
  }

  /** doze's filters off the device (the clsact qdisc too when nobody's are left); a gone device is fine. */
  async detach(device: string): Promise<void> {
    await this.maps.detachPrograms(device);
  }
}

/** What doze-maps said after its command word ("doze-maps load: load OBJ: REASON" → "REASON"). */
function helperReason(error: unknown): string | undefined {
  if (!(error instanceof DozeError) || error.code !== 'E_MAPS') return undefined;
  return /^doze-maps \w+: \w+ [^:]*: (.*)$/.exec(error.message)?.[1];
}

function loadFailure(objectPath: string, error: unknown): unknown {
  const reason = helperReason(error);
  if (reason === undefined) return error; // the helper is missing, died or timed out: that error says so
  // libbpf reuses a pinned map only if its type, key and value sizes match the object's.
  const stale = /couldn't reuse pinned map at '([^']+)'/.exec(reason);
  if (stale) return staleMaps(stale[1]!.replace(/\/\/+/g, '/'));
  return new DozeError(
    'E_BPF_LOAD',
    `cannot load doze's tc programs from ${objectPath}: ${reason}. ` +
      'If the object comes from another build, run "make build" (or reinstall the release); if the kernel refused it, ' +
      'doze needs Linux 5.15 or later with BPF (CONFIG_BPF_SYSCALL, CONFIG_NET_CLS_BPF, CONFIG_NET_SCH_INGRESS) and a bpffs mounted at the configured bpffs',
    { cause: error },
  );
}

function attachFailure(device: string, error: unknown): unknown {
  const reason = helperReason(error);
  if (reason === undefined) return error;
  const fix = /no such interface/.test(reason)
    ? `: there is no interface ${device} in the agent's network namespace; give the instance the host side of its veth or tap, by the name \`ip link\` shows`
    : '';
  return new DozeError('E_TC_ATTACH', `cannot attach doze's tc programs to ${device}: ${reason}${fix}`, { cause: error });
}
