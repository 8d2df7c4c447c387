import { isIPv6 } from 'node:net';
import { iptables, removeChain, ensureJump, resetChain, type Family } from '../net/iptables.js';

export interface CheckIdentity {
  /** Mark bits that identify health-check connections (never 0x2000: CNI portmap). */
  mark: number;
  /** Checks run by a local user (Consul agent on the host: `User=consul`). */
  fromUid?: number;
  /** Checks from these sources (Consul in a container, or a remote checker). */
  fromSources: string[];
  /** Local connections of this uid from these source ports (the agent's own metrics fetch: metrics-snapshot.ts). */
  fromLocalPorts?: { uid: number; first: number; last: number };
  /**
   * Mark every packet from `fromSources`, not only a connection's first: a connection the source
   * opened before the rules existed (a scraper's keep-alive one, older than the agent) is then
   * marked from its next packet on.
   */
  everyPacketFromSources?: boolean;
  /** What the marked connections are, in the rules' comments. */
  label?: 'health checks' | 'observers';
}

/** Whether a source (address or CIDR) is of this family. */
export function sourceFamily(source: string): Family {
  return isIPv6(source.split('/')[0]!.trim()) ? 6 : 4;
}

/**
 * Marks every packet of a health-check connection. The first packet is
 * recognised by identity (uid or source) and the mark saved on the
 * connection; every later packet, including those the kernel sends with no
 * socket owner (ACK/RST after close), gets the mark restored from it.
 * Two chains, because the owner match is only valid on OUTPUT. The same chains in
 * ip6tables for IPv6 checks (`families`), each with its family's sources.
 */
export class CheckMarking {
  readonly outChain: string;
  readonly inChain: string;

  constructor(private readonly identity: CheckIdentity, prefix = 'DOZE', private readonly families: Family[] = [4]) {
    this.outChain = `${prefix}-MARK-OUT`;
    this.inChain = `${prefix}-MARK-IN`;
  }

  async install(): Promise<void> {
    for (const family of this.families) await this.installFamily(family);
  }

  private async installFamily(family: Family): Promise<void> {
    const hex = `0x${this.identity.mark.toString(16)}`;
    const setMark = ['-m', 'conntrack', '--ctstate', 'NEW', '-j', 'CONNMARK', '--set-xmark', `${hex}/${hex}`];
    // Only our bits move between packet and connection; other marks are untouched.
    const restore = ['-m', 'comment', '--comment', 'doze: restore check mark', '-j', 'CONNMARK', '--restore-mark', '--nfmask', hex, '--ctmask', hex];
    const sourceMark = this.identity.everyPacketFromSources ? ['-j', 'CONNMARK', '--set-xmark', `${hex}/${hex}`] : setMark;
    const bySource = (chain: string) =>
      this.identity.fromSources.filter((source) => sourceFamily(source) === family).map((source) => ['-A', chain, '-s', source, '-m', 'comment', '--comment', `doze: ${this.identity.label ?? 'health checks'} by source`, ...sourceMark]);

    await resetChain('mangle', this.outChain, family);
    if (this.identity.fromUid !== undefined) {
      await iptables('mangle', ['-A', this.outChain, '-m', 'owner', '--uid-owner', String(this.identity.fromUid), '-m', 'comment', '--comment', 'doze: health checks by uid', ...setMark], family);
    }
    for (const rule of bySource(this.outChain)) await iptables('mangle', rule, family);
    const local = this.identity.fromLocalPorts;
    if (local !== undefined) {
      await iptables('mangle', ['-A', this.outChain, '-p', 'tcp', '--sport', `${local.first}:${local.last}`, '-m', 'owner', '--uid-owner', String(local.uid), '-m', 'comment', '--comment', "doze: the agent's own fetch", ...setMark], family);
    }
    await iptables('mangle', ['-A', this.outChain, ...restore], family);

    await resetChain('mangle', this.inChain, family);
    for (const rule of bySource(this.inChain)) await iptables('mangle', rule, family);
    await iptables('mangle', ['-A', this.inChain, ...restore], family);

    await ensureJump('mangle', 'OUTPUT', this.outChain, 'doze', family);
    await ensureJump('mangle', 'PREROUTING', this.inChain, 'doze', family);
  }

  async remove(): Promise<void> {
    for (const family of this.families) {
      await removeChain('mangle', ['OUTPUT'], this.outChain, family);
      await removeChain('mangle', ['PREROUTING'], this.inChain, family);
    }
  }
}
