import { BpfInstanceState, ConnFlag, type Connection, type InstanceCounters, type Talker, type WakeEvent } from '../../agent/sources/bpf-records.js';
import { monotonicNs } from '../../agent/shared/clock.js';
import type { EarlyThawControl, TrafficSource } from '../../agent/sources/traffic-source.js';
import type { EarlyThaw } from '../../agent/sources/wake-events.js';

/** The wake-event reader's early thaws as doze-maps keeps them (one-shot arms, a room count). */
export class FakeEarlyThaw implements EarlyThawControl {
  readonly armed = new Map<string, EarlyThaw>();
  room = 0;
  /** Keys thawed at their event, in order. */
  readonly thawed: string[] = [];
  arm(key: string, thaw: EarlyThaw): boolean {
    this.armed.set(key, thaw);
    return true;
  }
  disarm(key: string): void {
    this.armed.delete(key);
  }
  setRoom(room: number): void {
    this.room = room;
  }
  /**
   * As doze-maps on a wake record: the arm of that sleep ends, and it is thawed if there is room;
   * the thaw the event carries. (Lines here arrive at once: nothing to take off the room.)
   */
  fire(key: string, tsNs: bigint): WakeEvent['thaw'] {
    const thaw = this.armed.get(key);
    if (!thaw || tsNs < thaw.sinceNs) return undefined;
    this.armed.delete(key);
    if (this.room === 0) return undefined;
    if (this.room > 0) this.room--;
    this.thawed.push(key);
    return { kind: 'thawed', atNs: monotonicNs() };
  }
}

/**
 * A traffic source with no kernel behind it (no root): keeps the state map and
 * scripted counters and connections, and raises wake events as
 * agent/bpf/doze.bpf.c does. With fake timers, monotonicNs() (process.hrtime)
 * follows the fake clock, so scripted packets land at the test's "now".
 */
export class FakeTrafficSource implements TrafficSource {
  readonly attached = new Map<string, number>();
  readonly tracked = new Set<string>();
  readonly states_ = new Map<string, BpfInstanceState>();
  /** Per instance key: what doze_counters would hold. */
  readonly counters = new Map<string, InstanceCounters>();
  /** What doze_conns would hold (each key's connections). */
  readonly conns: Connection[] = [];
  /** What doze_talkers would hold (each tracked key's table, most recent first). */
  readonly talkers = new Map<string, Talker[]>();
  /** Knob: the next this many reads of the connections fail, as a doze-maps error answer would. */
  failConnections = 0;
  /** How many times the detector read counters / connections (cost follows active instances). */
  reads = { counters: 0, connections: 0 };
  /** The reader's early thaws: a wake event fires an armed one first, as doze-maps does. */
  readonly earlyThaw = new FakeEarlyThaw();
  private readonly wakeListeners: ((event: WakeEvent) => void)[] = [];
  private readonly gapListeners: ((reason: string) => void)[] = [];

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
    if (!this.states_.has(address)) this.states_.set(address, BpfInstanceState.awake);
    if (!this.counters.has(address)) this.counters.set(address, { packets: 0n, lastSeenNs: 0n, checks: 0n, outPackets: 0n });
    if (!this.talkers.has(address)) this.talkers.set(address, []);
  }
  async untrack(address: string): Promise<void> {
    this.tracked.delete(address);
    this.states_.delete(address);
    this.counters.delete(address);
    this.talkers.delete(address);
  }
  async setState(address: string, state: BpfInstanceState): Promise<void> {
    this.states_.set(address, state);
  }
  async swapState(address: string, expected: BpfInstanceState, next: BpfInstanceState): Promise<BpfInstanceState | undefined> {
    const found = this.states_.get(address);
    if (found === expected) this.states_.set(address, next);
    return found;
  }
  async counter(address: string): Promise<InstanceCounters | undefined> {
    this.reads.counters++;
    const c = this.counters.get(address);
    return c && { ...c };
  }
  async countersOf(addresses: string[]): Promise<Map<string, InstanceCounters>> {
    this.reads.counters++;
    const found = new Map<string, InstanceCounters>();
    for (const address of addresses) {
      const c = this.counters.get(address);
      if (c) found.set(address, { ...c });
    }
    return found;
  }
  async state(address: string): Promise<BpfInstanceState | undefined> {
    return this.states_.get(address);
  }
  async states(): Promise<Map<string, BpfInstanceState>> {
    return new Map(this.states_);
  }
  async connections(): Promise<Connection[]> {
    this.reads.connections++;
    if (this.failConnections > 0) {
      this.failConnections--;
      throw new Error('doze-maps dump: dump doze_conns: Input/output error');
    }
    return this.conns.map((c) => ({ ...c }));
  }
  /** Knob: the next this many reads of the talkers fail, as a doze-maps error answer would. */
  failTalkers = 0;
  async talkersOf(addresses: string[]): Promise<Map<string, Talker[]>> {
    if (this.failTalkers > 0) {
      this.failTalkers--;
      throw new Error('doze-maps lookupn: lookupn doze_talkers: Input/output error');
    }
    const found = new Map<string, Talker[]>();
    for (const address of addresses) {
      const list = this.talkers.get(address);
      if (list) found.set(address, list.map((t) => ({ ...t })));
    }
    return found;
  }
  onWake(listener: (event: WakeEvent) => void): void {
    this.wakeListeners.push(listener);
  }
  onGap(listener: (reason: string) => void): void {
    this.gapListeners.push(listener);
  }

  /**
   * An unmarked packet to `address` now: counted, and, to a sleeper (sleeping or
   * pausing), the one wake event of its sleep (the state goes to signalled).
   */
  packet(address: string): void {
    const nowNs = monotonicNs();
    const c = this.counters.get(address);
    if (c) {
      c.packets++;
      c.lastSeenNs = nowNs;
    }
    const state = this.states_.get(address);
    if (state === BpfInstanceState.sleeping || state === BpfInstanceState.pausing) {
      this.states_.set(address, BpfInstanceState.signalled);
      this.emitWake({ instanceAddr: address, ifindex: 1, tsNs: nowNs });
    }
  }

  /**
   * One run of the program on an unmarked packet to `address`, step by step, so a test can put
   * the agent's steps between them (docs/state-handoff.md): `count` (the atomic packets++),
   * `stamp` (last_seen_ns), `read` (the state it will try to swap), `swap` (its compare-and-swap
   * to SIGNALLED, which, lost to the agent's own swap, reads again and retries, up to 3 times as
   * the program does; the winner raises the wake event). packet() is all four at once.
   */
  programRun(address: string): { count(): void; stamp(): void; read(): void; swap(): boolean } {
    let seen: BpfInstanceState | undefined;
    const sleeper = (s: BpfInstanceState | undefined) => s === BpfInstanceState.sleeping || s === BpfInstanceState.pausing;
    return {
      count: () => {
        const c = this.counters.get(address);
        if (c) c.packets++;
      },
      stamp: () => {
        const c = this.counters.get(address);
        if (c) c.lastSeenNs = monotonicNs();
      },
      read: () => {
        seen = this.states_.get(address);
      },
      swap: () => {
        for (let attempt = 0; attempt < 3; attempt++) {
          if (attempt > 0) seen = this.states_.get(address);
          if (!sleeper(seen)) return false;
          if (this.states_.get(address) === seen) {
            this.states_.set(address, BpfInstanceState.signalled);
            this.emitWake({ instanceAddr: address, ifindex: 1, tsNs: monotonicNs() });
            return true;
          }
        }
        return false;
      },
    };
  }

  /** A health check's packet (marked): counted as a check, never activity, never a wake. */
  check(address: string): void {
    const c = this.counters.get(address);
    if (c) c.checks++;
  }

  /**
   * A tracked connection to `address` from client port `clientPort`, created on first use:
   * `request` (client payload not answered yet), `answer`, `close` (both FINs), or a
   * health check's request (`check`).
   */
  connection(address: string, clientPort: number, event: 'request' | 'answer' | 'close' | 'check'): void {
    const nowNs = monotonicNs();
    let conn = this.conns.find((c) => c.instanceAddr === address && c.clientPort === clientPort);
    if (!conn) {
      conn = { clientAddr: '10.213.0.1', instanceAddr: address, clientPort, instancePort: 8080, lastNs: nowNs, clientPayloadNs: 0n, serverPayloadNs: 0n, flags: 0 };
      this.conns.push(conn);
    }
    conn.lastNs = nowNs;
    if (event === 'request' || event === 'check') conn.clientPayloadNs = nowNs;
    if (event === 'check') conn.flags |= ConnFlag.check;
    if (event === 'answer') conn.serverPayloadNs = nowNs;
    if (event === 'close') conn.flags |= ConnFlag.finClient | ConnFlag.finServer;
  }

  /**
   * `client` opens a connection to `address` now (`udp`: sends it a datagram), as the program
   * notes it in the instance's top talkers: its slot by address, the least recent taken for a new
   * one (8 slots). Counts as a packet too.
   */
  talk(address: string, client: string, clientPort: number, kind: 'connection' | 'udp' = 'connection'): void {
    const nowNs = monotonicNs();
    const table = this.talkers.get(address);
    if (!table) return;
    let slot = table.find((t) => t.address === client);
    if (!slot) {
      if (table.length === 8) table.splice(table.reduce((oldest, t, i) => (t.lastNs < table[oldest]!.lastNs ? i : oldest), 0), 1);
      slot = { address: client, protocol: 'tcp', connections: 0, packets: 0, firstNs: nowNs, lastNs: nowNs };
      table.push(slot);
    }
    slot.lastNs = nowNs;
    slot.port = clientPort;
    slot.protocol = kind === 'udp' ? 'udp' : 'tcp';
    if (kind === 'udp') slot.packets++;
    else slot.connections++;
    table.sort((a, b) => Number(b.lastNs - a.lastNs));
    this.packet(address);
  }

  /** What the kernel would push when a packet reaches a sleeper. */
  emitWake(event: WakeEvent): void {
    if (event.answersWakeNs === undefined && !event.thaw) {
      const thaw = this.earlyThaw.fire(event.instanceAddr, event.tsNs);
      if (thaw) event = { ...event, thaw };
    }
    for (const listener of this.wakeListeners) listener(event);
  }
  /** Wake events were lost (perf buffer overrun): the detector rescans the state map. */
  emitGap(reason: string): void {
    for (const listener of this.gapListeners) listener(reason);
  }
  async close(): Promise<void> {}
}
