import { DozeError } from '../shared/errors.js';
import { BpfInstanceState, encodeState } from './bpf-records.js';
import { bytesToIpv4, ipv4ToBytes } from './ipv4.js';
import type { MapClient } from './map-client.js';

/** Entries of doze_slots and doze_state (DOZE_SLOTS in doze.bpf.c). */
export const STATE_SLOTS = 16384;

function slotKey(slot: number): Buffer {
  const key = Buffer.alloc(4);
  key.writeUInt32LE(slot);
  return key;
}

/**
 * Each tracked instance's state word, kept where the tc program and the agent both change it in
 * place (docs/state-handoff.md): a slot of the doze_state array, found through doze_slots
 * (instance key → slot). The agent is the one writer of doze_slots; the mapping is cached here.
 */
export class StateSlots {
  private readonly slots = new Map<string, number>();

  constructor(private readonly maps: MapClient, private readonly paths: { slots: string; state: string }) {}

  /** Gives `address` a slot, AWAKE; keeps the one (and the state) an earlier agent left: a SIGNALLED is evidence. */
  async claim(address: string): Promise<void> {
    const key = ipv4ToBytes(address);
    const found = await this.maps.lookup(this.paths.slots, key);
    if (found) {
      this.slots.set(address, found.readUInt32LE(0));
      return;
    }
    // The lowest free slot, set awake before the program can find it (the mapping goes in last).
    const taken = new Set((await this.maps.dump(this.paths.slots)).map((e) => e.value.readUInt32LE(0)));
    let slot = 0;
    while (taken.has(slot)) slot++;
    if (slot >= STATE_SLOTS) throw new DozeError('E_MAPS', `no free slot in doze_state for ${address}: ${STATE_SLOTS} instances are tracked on this node`);
    await this.maps.update(this.paths.state, slotKey(slot), encodeState(BpfInstanceState.awake));
    await this.maps.update(this.paths.slots, key, slotKey(slot));
    this.slots.set(address, slot);
  }

  /** The mapping goes: from here no packet finds the slot, and it may be given out again. */
  async release(address: string): Promise<void> {
    await this.maps.delete(this.paths.slots, ipv4ToBytes(address));
    this.slots.delete(address);
  }

  /** Writes the state outright: only to say the instance is awake. */
  async set(address: string, state: BpfInstanceState): Promise<void> {
    const slot = await this.slotOf(address);
    if (slot === undefined) throw new DozeError('E_MAPS', `${address} has no slot in doze_state (not tracked)`);
    await this.maps.update(this.paths.state, slotKey(slot), encodeState(state));
  }

  /** Compare-and-swap in place (doze-maps cas); the state found, or undefined without a slot. */
  async swap(address: string, expected: BpfInstanceState, next: BpfInstanceState): Promise<BpfInstanceState | undefined> {
    const slot = await this.slotOf(address);
    if (slot === undefined) return undefined;
    const found = await this.maps.compareAndSwap(this.paths.state, slotKey(slot), encodeState(expected), encodeState(next));
    return found.readUInt32LE(0) as BpfInstanceState;
  }

  async get(address: string): Promise<BpfInstanceState | undefined> {
    const slot = await this.slotOf(address);
    if (slot === undefined) return undefined;
    const value = await this.maps.lookup(this.paths.state, slotKey(slot));
    return value ? (value.readUInt32LE(0) as BpfInstanceState) : undefined;
  }

  /** Every mapped instance's state (by address), in two reads. */
  async all(): Promise<Map<string, BpfInstanceState>> {
    const mapped = await this.maps.dump(this.paths.slots);
    const values = await this.maps.lookupMany(this.paths.state, mapped.map((e) => e.value));
    const bySlot = new Map(values.map((e) => [e.key.readUInt32LE(0), e.value.readUInt32LE(0) as BpfInstanceState]));
    const states = new Map<string, BpfInstanceState>();
    for (const e of mapped) {
      const state = bySlot.get(e.value.readUInt32LE(0));
      if (state !== undefined) states.set(bytesToIpv4(e.key), state);
    }
    return states;
  }

  private async slotOf(address: string): Promise<number | undefined> {
    const cached = this.slots.get(address);
    if (cached !== undefined) return cached;
    const found = await this.maps.lookup(this.paths.slots, ipv4ToBytes(address));
    return found?.readUInt32LE(0);
  }
}
