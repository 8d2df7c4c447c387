import type { BpfInstanceState, Connection, InstanceCounters, WakeEvent } from '../../agent/sources/bpf-records.js';
import type { TrafficSource } from '../../agent/sources/traffic-source.js';

/** A traffic source with no kernel behind it: keeps the state map, for tests of plumbing and adoption (no root). */
export class FakeTrafficSource implements TrafficSource {
  readonly attached = new Map<string, number>();
  readonly tracked = new Set<string>();
  readonly states_ = new Map<string, BpfInstanceState>();
  private readonly wakeListeners: ((event: WakeEvent) => void)[] = [];

  async start(): Promise<void> {}
  async attach(device: string): Promise<void> {
    this.attached.set(device, (this.attached.get(device) ?? 0) + 1);
  }
  async detach(device: string): Promise<void> {
    const n = (this.attached.get(device) ?? 0) - 1;
    if (n > 0) this.attached.set(device, n);
    else this.attached.delete(device);
  }
  async attachHost(_address: string): Promise<void> {
    await this.attach('<host>');
  }
  async detachHost(): Promise<void> {
    await this.detach('<host>');
  }
  async track(address: string): Promise<void> {
    this.tracked.add(address);
  }
  async untrack(address: string): Promise<void> {
    this.tracked.delete(address);
    this.states_.delete(address);
  }
  async setState(address: string, state: BpfInstanceState): Promise<void> {
    this.states_.set(address, state);
  }
  async counter(): Promise<InstanceCounters | undefined> {
    return undefined;
  }
  async countersOf(): Promise<Map<string, InstanceCounters>> {
    return new Map();
  }
  async state(address: string): Promise<BpfInstanceState | undefined> {
    return this.states_.get(address);
  }
  async states(): Promise<Map<string, BpfInstanceState>> {
    return new Map(this.states_);
  }
  async connections(): Promise<Connection[]> {
    return [];
  }
  onWake(listener: (event: WakeEvent) => void): void {
    this.wakeListeners.push(listener);
  }
  onGap(): void {}
  /** What the kernel would push when a packet reaches a sleeper. */
  emitWake(event: WakeEvent): void {
    for (const listener of this.wakeListeners) listener(event);
  }
  async close(): Promise<void> {}
}
