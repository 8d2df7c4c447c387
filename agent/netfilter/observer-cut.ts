import { iptables, iptablesSucceeds, listRules, removeChain, ensureJump, resetChain, splitRule, type Family } from '../net/iptables.js';
import { tagOf } from './dnat-chain.js';

/**
 * While an instance sleeps, an observer's keep-alive connection opened while it was awake (a
 * Prometheus server keeps one per target) would carry the next scrape to the frozen app, where it
 * hangs until the scrape times out: a nat redirect only takes new connections. Its packets are
 * answered with a TCP reset instead (filter FORWARD for remote observers, OUTPUT for local ones),
 * so the scraper's HTTP client retries at once on a new connection, which the observer redirect
 * takes (Go's http.Transport, Prometheus's, retries an idempotent request on a reused connection
 * that failed before any answer). A chain of per-instance rules tagged `doze:<id>`, as DnatChain.
 */
export class ObserverCut {
  constructor(
    readonly chain: string,
    private readonly mark: number,
    readonly family: Family = 4,
  ) {}

  async install(): Promise<void> {
    await resetChain('filter', this.chain, this.family);
    for (const parent of ['FORWARD', 'OUTPUT']) await ensureJump('filter', parent, this.chain, 'doze', this.family);
  }

  async add(id: string, target: { ip?: string; port: number }): Promise<void> {
    const hex = `0x${this.mark.toString(16)}`;
    const rule = [
      ...(target.ip === undefined ? ['-m', 'addrtype', '--dst-type', 'LOCAL'] : ['-d', `${target.ip}/${this.family === 6 ? 128 : 32}`]),
      '-p', 'tcp', '--dport', String(target.port),
      '-m', 'mark', '--mark', `${hex}/${hex}`, '-m', 'conntrack', '--ctstate', 'ESTABLISHED',
      '-m', 'comment', '--comment', `doze:${id}`,
      '-j', 'REJECT', '--reject-with', 'tcp-reset',
    ];
    if (!(await iptablesSucceeds('filter', ['-C', this.chain, ...rule], this.family))) await iptables('filter', ['-A', this.chain, ...rule], this.family);
  }

  async remove(id: string): Promise<void> {
    for (const line of await listRules('filter', this.chain, this.family)) {
      if (line.startsWith(`-A ${this.chain} `) && tagOf(line) === `doze:${id}`) await iptables('filter', ['-D', ...splitRule(line.slice(3))], this.family);
    }
  }

  async uninstall(): Promise<void> {
    await removeChain('filter', ['FORWARD', 'OUTPUT'], this.chain, this.family);
  }
}
