import { iptables, removeChain, ensureJump, resetChain } from '../net/iptables.js';

export interface CheckIdentity {
  /** Mark bits that identify health-check connections (never 0x2000: CNI portmap). */
  mark: number;
  /** Checks run by a local user (Consul agent on the host: `User=consul`). */
  fromUid?: number;
  /** Checks from these sources (Consul in a container, or a remote checker). */
  fromSources: string[];
}

/**
 * Marks every packet of a health-check connection. The first packet is
 * recognised by identity (uid or source) and the mark saved on the
 * connection; every later packet, including those the kernel sends with no
 * socket owner (ACK/RST after close), gets the mark restored from it.
 * Two chains, because the owner match is only valid on OUTPUT.
 */
export class CheckMarking {
  readonly outChain: string;
  readonly inChain: string;

  constructor(private readonly identity: CheckIdentity, prefix = 'DOZE') {
    this.outChain = `${prefix}-MARK-OUT`;
    this.inChain = `${prefix}-MARK-IN`;
  }

  async install(): Promise<void> {
    const hex = `0x${this.identity.mark.toString(16)}`;
    const setMark = ['-m', 'conntrack', '--ctstate', 'NEW', '-j', 'CONNMARK', '--set-xmark', `${hex}/${hex}`];
    // Only our bits move between packet and connection; other marks are untouched.
    const restore = ['-m', 'comment', '--comment', 'doze: restore check mark', '-j', 'CONNMARK', '--restore-mark', '--nfmask', hex, '--ctmask', hex];
    const bySource = (chain: string) =>
      this.identity.fromSources.map((source) => ['-A', chain, '-s', source, '-m', 'comment', '--comment', 'doze: health checks by source', ...setMark]);

    await resetChain('mangle', this.outChain);
    if (this.identity.fromUid !== undefined) {
      await iptables('mangle', ['-A', this.outChain, '-m', 'owner', '--uid-owner', String(this.identity.fromUid), '-m', 'comment', '--comment', 'doze: health checks by uid', ...setMark]);
    }
    for (const rule of bySource(this.outChain)) await iptables('mangle', rule);
    await iptables('mangle', ['-A', this.outChain, ...restore]);

    await resetChain('mangle', this.inChain);
    for (const rule of bySource(this.inChain)) await iptables('mangle', rule);
    await iptables('mangle', ['-A', this.inChain, ...restore]);

    await ensureJump('mangle', 'OUTPUT', this.outChain, 'doze');
    await ensureJump('mangle', 'PREROUTING', this.inChain, 'doze');
  }

  async remove(): Promise<void> {
    await removeChain('mangle', ['OUTPUT'], this.outChain);
    await removeChain('mangle', ['PREROUTING'], this.inChain);
  }
}
