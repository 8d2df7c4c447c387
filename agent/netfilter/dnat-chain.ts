import { iptables, iptablesSucceeds, listRules, removeChain, ensureJump, resetChain, splitRule, type Family } from '../net/iptables.js';

export interface DnatTarget {
  /** Address the connections are sent to; absent: any of the node's own addresses (a host port). */
  ip?: string;
  port: number;
  /** Where they go instead (a local listener of the agent). */
  toHost: string;
  toPort: number;
}

/**
 * An agent-owned nat chain of per-instance DNAT rules, tagged `doze:<id>`,
 * jumped to first from its parents (OUTPUT for local clients, PREROUTING for
 * others), so it acts before Nomad's CNI port-map DNAT. nat rules see only a
 * connection's first packet: a connection is redirected wholly or not at all.
 */
export class DnatChain {
  constructor(
    readonly chain: string,
    private readonly parents: string[],
    /** Extra match arguments every rule carries (mark, connlimit…). */
    private readonly match: string[],
    /** iptables or ip6tables: a chain holds one family's rules. */
    readonly family: Family = 4,
  ) {}

  /** Builds the chain empty: a restarted agent re-adds rules for what it finds asleep. */
  async install(): Promise<void> {
    await resetChain('nat', this.chain, this.family);
    // Measured here (iptables-nft): once the last DNAT rule leaves the nat table, replies of
    // connections it translated are no longer translated back, and those connections die. So a
    // DNAT that can never match (TCP to the broadcast address) stays for the chain's lifetime,
    // and removing an instance's rule never cuts a check or held connection in flight.
    // (IPv6: the unspecified address, which is never a destination.)
    const [never, to] = this.family === 6 ? ['::/128', '[::1]:9'] : ['255.255.255.255/32', '127.0.0.1:9'];
    await iptables('nat', ['-A', this.chain, '-d', never, '-p', 'tcp', '-m', 'comment', '--comment', 'doze anchor, keeps NAT replies translated', '-j', 'DNAT', '--to-destination', to], this.family);
    for (const parent of this.parents) await ensureJump('nat', parent, this.chain, 'doze', this.family);
  }

  async add(id: string, target: DnatTarget): Promise<void> {
    const rule = [
      ...(target.ip === undefined ? ['-m', 'addrtype', '--dst-type', 'LOCAL'] : ['-d', `${target.ip}/${this.family === 6 ? 128 : 32}`]),
      '-p', 'tcp', '--dport', String(target.port), ...this.match,
      '-m', 'comment', '--comment', `doze:${id}`,
      '-j', 'DNAT', '--to-destination', target.toHost.includes(':') ? `[${target.toHost}]:${target.toPort}` : `${target.toHost}:${target.toPort}`,
    ];
    if (!(await iptablesSucceeds('nat', ['-C', this.chain, ...rule], this.family))) await iptables('nat', ['-A', this.chain, ...rule], this.family);
  }

  /**
   * Removes every rule tagged for this instance (whatever address or port it had). The tag is
   * compared whole: `doze:s1` is not `doze:s11` (a substring match removed another instance's
   * redirect, and failed when that instance removed it at the same moment: found by bench/soak.ts).
   */
  async remove(id: string): Promise<void> {
    for (const line of await listRules('nat', this.chain, this.family)) {
      if (line.startsWith(`-A ${this.chain} `) && tagOf(line) === `doze:${id}`) {
        await iptables('nat', ['-D', ...splitRule(line.slice(3))], this.family);
      }
    }
  }

  /** The per-instance rules (the anchor is not one). */
  async active(): Promise<string[]> {
    return (await listRules('nat', this.chain, this.family)).filter((l) => l.startsWith(`-A ${this.chain} `) && tagOf(l)?.startsWith('doze:'));
  }

  async uninstall(): Promise<void> {
    await removeChain('nat', this.parents, this.chain, this.family);
  }
}

/** A rule's `--comment` (as `iptables -S` prints it, quoted or not), or undefined. */
export function tagOf(rule: string): string | undefined {
  const args = splitRule(rule);
  const at = args.indexOf('--comment');
  return at >= 0 ? args[at + 1] : undefined;
}

const hex = (mark: number) => `0x${mark.toString(16)}`;

/**
 * Health checks of sleeping instances → their stub. Only marked connections
 * match; unmarked traffic is never redirected. OUTPUT takes a local checker's
 * (marked by uid), PREROUTING a remote one's (marked by source in mangle
 * PREROUTING, which runs before nat PREROUTING).
 */
export function checkRedirect(mark: number, prefix = 'DOZE', family: Family = 4): DnatChain {
  return new DnatChain(`${prefix}-STUB`, ['OUTPUT', 'PREROUTING'], ['-m', 'mark', '--mark', `${hex(mark)}/${hex(mark)}`], family);
}

/**
 * Observers' connections (Prometheus, uptime probes) to sleeping instances → the agent's observer
 * listener, which answers with the app's last metrics. Only connections marked as an observer's.
 */
export function observerRedirect(mark: number, prefix = 'DOZE', family: Family = 4): DnatChain {
  return new DnatChain(`${prefix}-OBS`, ['OUTPUT', 'PREROUTING'], ['-m', 'mark', '--mark', `${hex(mark)}/${hex(mark)}`], family);
}

/**
 * Hold mode: the first unmarked connections to a sleeping instance → the
 * agent's hold listener, at most `maxHeld` at a time (connlimit counts live
 * connections to the instance's address); past that, connections go to the
 * instance as usual (the retry path) instead of queueing without limit.
 */
export function holdRedirect(mark: number, prefix = 'DOZE', observerMark?: number, family: Family = 4): { chain: DnatChain; forInstance: (maxHeld: number) => DnatChain } {
  const chainName = `${prefix}-HOLD`;
  // Observers are never held either: they would wake the instance (observerRedirect answers them).
  const notObserver = observerMark === undefined ? [] : ['-m', 'mark', '!', '--mark', `${hex(observerMark)}/${hex(observerMark)}`];
  const base = ['-m', 'mark', '!', '--mark', `${hex(mark)}/${hex(mark)}`, ...notObserver];
  const chain = new DnatChain(chainName, ['OUTPUT', 'PREROUTING'], base, family);
  return {
    chain,
    forInstance: (maxHeld) =>
      new DnatChain(chainName, ['OUTPUT', 'PREROUTING'], [...base, '-m', 'connlimit', '--connlimit-upto', String(maxHeld), '--connlimit-mask', family === 6 ? '128' : '32', '--connlimit-daddr'], family),
  };
}
