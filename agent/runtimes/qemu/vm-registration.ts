import { describeIssues } from '../../shared/zod-issues.js';
import { instanceSchema, type InstanceConfig } from '../../config/schema.js';
import { instanceId } from '../../nomad/instance-id.js';
import { ConfigError, messageOf } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { ipv4Addresses } from '../../net/ip.js';

/*
 * `doze vm run --register URL`: the owner hands its VM to the node's agent
 * (PUT /api/instances/{id}, agent/instances/registry.ts) once the VM runs, repeats the
 * PUT every `refreshMs` (a no-op while the agent has it; a new registration
 * after an agent restart), and removes it (DELETE, which wakes and releases
 * the instance) when it stops. The instance is built here from
 * --instance-json plus the flags, validated with the agent's own schema
 * before the VM starts, and always gets the snapshot runtime on this owner's
 * control socket.
 */

export interface RegistrationInput {
  /** A partial instance (any instanceSchema field); flags below override it. */
  instanceJson?: string;
  id?: string;
  address?: string;
  interface?: string;
  /** The guest is the other address of the interface's /30 or /31 (resolved at registration). */
  guestPort?: number;
  /** QEMU's command line: without --interface, the tap of its `-netdev tap,ifname=…`. */
  qemuArgv?: string[];
  /** The owner's control socket (absolute). */
  control: string;
  env?: NodeJS.ProcessEnv;
}

/**
 * The raw instance (before schema defaults), or a usage error. The id defaults
 * to the one Nomad discovery gives the allocation (`<job>.<group>.<alloc prefix>`),
 * so the agent can tell the registration belongs to it.
 */
export function registrationDraft(input: RegistrationInput): Record<string, unknown> {
  let base: Record<string, unknown> = {};
  if (input.instanceJson !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(input.instanceJson);
    } catch (error) {
      throw new ConfigError(`--instance-json is not JSON: ${messageOf(error)}`);
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError('--instance-json must be a JSON object (an instance)');
    base = parsed as Record<string, unknown>;
  }
  const env = input.env ?? process.env;
  const nomadId = env.NOMAD_ALLOC_ID && env.NOMAD_JOB_ID && env.NOMAD_GROUP_NAME ? instanceId(env.NOMAD_JOB_ID, env.NOMAD_GROUP_NAME, env.NOMAD_ALLOC_ID) : undefined;
  const draft: Record<string, unknown> = {
    ...base,
    id: input.id ?? base.id ?? nomadId,
    ...(input.address !== undefined ? { address: input.address } : {}),
    ...(input.interface !== undefined ? { interface: input.interface } : base.interface === undefined && input.qemuArgv && tapOf(input.qemuArgv) ? { interface: tapOf(input.qemuArgv) } : {}),
    runtime: { kind: 'qemu', mode: 'snapshot', control: input.control },
  };
  if (draft.id === undefined) throw new ConfigError('--register needs the instance id: --id, "id" in --instance-json, or the NOMAD_JOB_ID, NOMAD_GROUP_NAME and NOMAD_ALLOC_ID of a Nomad task');
  if (input.guestPort !== undefined && input.address !== undefined) throw new ConfigError('give --address or --guest-port, not both');
  if (draft.interface === undefined) throw new ConfigError('--register needs the VM\'s tap: --interface, "interface" in --instance-json, or a -netdev tap,ifname=NAME on the QEMU command line');
  if (draft.address === undefined && input.guestPort === undefined) throw new ConfigError('--register needs the guest\'s address: --address IP:PORT, --guest-port PORT, or "address" in --instance-json');
  return draft;
}

/** The tap a `-netdev tap,…,ifname=NAME` (or `-nic tap,…`) on a QEMU command line attaches the VM to. */
export function tapOf(args: string[]): string | undefined {
  for (let i = 0; i < args.length - 1; i++) {
    if (args[i] !== '-netdev' && args[i] !== '-nic') continue;
    const [type, ...options] = args[i + 1]!.split(',');
    if (type !== 'tap') continue;
    const ifname = options.find((o) => o.startsWith('ifname='))?.slice('ifname='.length);
    if (ifname) return ifname;
  }
  return undefined;
}

/** Validates a draft with the agent's instance schema; a usage error names each bad field. */
export function validateRegistration(draft: Record<string, unknown>): InstanceConfig {
  const parsed = instanceSchema.safeParse(draft);
  if (!parsed.success) throw new ConfigError(`the instance to register is invalid:\n${describeIssues(parsed.error.issues, draft)}`);
  return parsed.data;
}

/** The other host of a point-to-point /30 or /31 ("10.213.7.1/30" → "10.213.7.2"). */
export function peerAddress(cidr: string): string {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  const octets = match?.slice(1, 5).map(Number);
  const prefix = Number(match?.[5]);
  if (!octets || octets.some((o) => o > 255) || (prefix !== 30 && prefix !== 31)) {
    throw new ConfigError(`--guest-port needs the tap's address to be a /30 or /31 (host and guest), not ${JSON.stringify(cidr)}`);
  }
  const ip = ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0;
  const size = prefix === 31 ? 2 : 4;
  const net = ip - (ip % size);
  const hosts = prefix === 31 ? [net, net + 1] : [net + 1, net + 2];
  if (!hosts.includes(ip)) throw new ConfigError(`${cidr}: the tap's address must be one of the two hosts of its /30`);
  const peer = hosts.find((h) => h !== ip)!;
  return [peer >>> 24, (peer >>> 16) & 255, (peer >>> 8) & 255, peer & 255].join('.');
}

/** The IPv4 address/prefix of an interface (`ip -j -4 addr show dev NAME`). */
export async function interfaceCidr(name: string): Promise<string> {
  const cidr = (await ipv4Addresses(name))[0];
  if (!cidr) throw new ConfigError(`tap ${name} has no IPv4 address: give it the host side of a /30 (e.g. ip addr add 10.213.7.1/30 dev ${name})`);
  return cidr;
}

export interface AgentRegistrationOptions {
  /** The agent's status API, e.g. "http://127.0.0.1:7070". */
  url: string;
  token?: string;
  draft: Record<string, unknown>;
  /** Set when the address comes from the tap (--guest-port). */
  guestPort?: number;
  log: Logger;
  refreshMs?: number;
  requestTimeoutMs?: number;
  /** How `--guest-port` finds the tap's address (tests). */
  cidrOf?: (name: string) => Promise<string>;
}

export type RegistrationState = 'idle' | 'registered' | 'refused' | 'unreachable' | 'stopped';

export class AgentRegistration {
  state: RegistrationState = 'idle';
  lastError: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private inFlight: Promise<void> | undefined;
  private instance: InstanceConfig | undefined;

  constructor(private readonly options: AgentRegistrationOptions) {}

  get id(): string {
    return String(this.options.draft.id);
  }

  private endpoint(): string {
    return `${this.options.url.replace(/\/+$/, '')}/api/instances/${encodeURIComponent(this.id)}`;
  }

  private headers(): Record<string, string> {
    return { 'content-type': 'application/json', ...(this.options.token ? { authorization: `Bearer ${this.options.token}` } : {}) };
  }

  /** Registers now and then every refreshMs; never throws (a refused or failed PUT is logged and retried). */
  async start(): Promise<void> {
    if (this.stopped) return;
    // Tracked like a refresh, so a stop that comes meanwhile waits for it and then unregisters.
    this.inFlight = this.put();
    await this.inFlight;
    this.inFlight = undefined;
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.inFlight = this.put().finally(() => {
        this.inFlight = undefined;
        this.schedule();
      });
    }, this.options.refreshMs ?? 10_000);
    this.timer.unref();
  }

  private async resolve(): Promise<InstanceConfig> {
    if (this.instance) return this.instance;
    const draft = { ...this.options.draft };
    if (this.options.guestPort !== undefined) {
      const tap = String(draft.interface);
      draft.address = `${peerAddress(await (this.options.cidrOf ?? interfaceCidr)(tap))}:${this.options.guestPort}`;
    }
    this.instance = validateRegistration(draft);
    return this.instance;
  }

  private async put(): Promise<void> {
    const { log } = this.options;
    let instance: InstanceConfig;
    try {
      instance = await this.resolve();
    } catch (error) {
      this.note('refused', messageOf(error), () => log.error({ err: messageOf(error) }, 'cannot build the instance to register; retrying'));
      return;
    }
    try {
      const response = await fetch(this.endpoint(), {
        method: 'PUT',
        headers: this.headers(),
        body: JSON.stringify(instance),
        signal: AbortSignal.timeout(this.options.requestTimeoutMs ?? 10_000),
      });
      const text = await response.text();
      if (response.status === 200 || response.status === 201) {
        if (this.state !== 'registered') log.info({ instance: this.id, agent: this.options.url, status: response.status }, 'registered the VM with the agent');
        this.state = 'registered';
        this.lastError = undefined;
        return;
      }
      const why = `${response.status}: ${errorOf(text)}`;
      this.note('refused', why, () => log.error({ instance: this.id, agent: this.options.url, err: why }, 'the agent refused the registration; the VM runs unmanaged, retrying'));
    } catch (error) {
      const why = messageOf(error);
      this.note('unreachable', why, () => log.warn({ agent: this.options.url, err: why }, 'the agent is unreachable; retrying'));
    }
  }

  /** Logs a failure once per distinct reason. */
  private note(state: RegistrationState, why: string, logIt: () => void): void {
    if (this.state !== state || this.lastError !== why) logIt();
    this.state = state;
    this.lastError = why;
  }

  /**
   * Stops refreshing and removes the registration (the agent wakes the VM, then
   * releases its rules and programs), within `deadlineMs`. Never throws.
   */
  async stop(deadlineMs = 3000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    await this.inFlight?.catch(() => undefined);
    if (this.state !== 'registered') {
      this.state = 'stopped';
      return;
    }
    try {
      const response = await fetch(this.endpoint(), { method: 'DELETE', headers: this.headers(), signal: AbortSignal.timeout(deadlineMs) });
      const text = await response.text();
      if (response.ok || response.status === 404) this.options.log.info({ instance: this.id }, 'unregistered the VM from the agent');
      else this.options.log.warn({ instance: this.id, err: `${response.status}: ${errorOf(text)}` }, 'the agent refused to unregister the VM');
    } catch (error) {
      this.options.log.warn({ instance: this.id, err: messageOf(error) }, 'could not unregister the VM; the agent removes it when its allocation stops');
    }
    this.state = 'stopped';
  }
}

function errorOf(text: string): string {
  try {
    const body = JSON.parse(text) as { error?: unknown };
    if (typeof body.error === 'string') return body.error;
  } catch {
    // not JSON
  }
  return text.slice(0, 300);
}
