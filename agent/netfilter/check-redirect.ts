import { iptables, iptablesSucceeds, listRules, removeChain, ensureJump, resetChain, splitRule } from './iptables.js';

export interface RedirectTarget {
  /** Instance address the checks are sent to. */
  ip: string;
  port: number;
  /** Where the instance's stub listener is. */
  stubHost: string;
  stubPort: number;
}

/**
 * Sends marked (health-check) connections for sleeping instances to their
 * stub listener: one DNAT rule per sleeping instance in an agent-owned nat
 * chain, jumped to from OUTPUT (checks by local processes, before Nomad's
 * CNI port-map jump, so host-port checks are caught pre-DNAT too).
 * nat rules only see a connection's first packet, so a check connection is
 * answered wholly by the stub or wholly by the instance, never split.
 * Unmarked traffic never matches.
 */
export class CheckRedirect {
  readonly chain: string;

  constructor(private readonly mark: number, prefix = 'DOZE') {
    this.chain = `${prefix}-STUB`;
  }

  /** Builds the chain empty: a restarted agent re-adds rules for what it finds asleep. */
  async install(): Promise<void> {
    await resetChain('nat', this.chain);
    await ensureJump('nat', 'OUTPUT', this.chain, 'doze');
  }

  async add(id: string, target: RedirectTarget): Promise<void> {
    const rule = this.rule(id, target);
    if (!(await iptablesSucceeds('nat', ['-C', this.chain, ...rule]))) await iptables('nat', ['-A', this.chain, ...rule]);
  }

  /** Removes every rule tagged for this instance (whatever port it had). */
  async remove(id: string): Promise<void> {
    for (const line of await listRules('nat', this.chain)) {
      if (line.startsWith(`-A ${this.chain} `) && line.includes(`doze:${id}`)) {
        await iptables('nat', ['-D', ...splitRule(line.slice(3))]);
      }
    }
  }

  async active(): Promise<string[]> {
    return (await listRules('nat', this.chain)).filter((l) => l.startsWith(`-A ${this.chain} `));
  }

  async uninstall(): Promise<void> {
    await removeChain('nat', ['OUTPUT'], this.chain);
  }

  private rule(id: string, t: RedirectTarget): string[] {
    const hex = `0x${this.mark.toString(16)}`;
    return [
      '-d', `${t.ip}/32`, '-p', 'tcp', '--dport', String(t.port),
      '-m', 'mark', '--mark', `${hex}/${hex}`,
      '-m', 'comment', '--comment', `doze:${id}`,
      '-j', 'DNAT', '--to-destination', `${t.stubHost}:${t.stubPort}`,
    ];
  }
}
