import { DozeError } from '../shared/errors.js';
import type { TrafficSource } from '../sources/traffic-source.js';
import { describeKey, type ManagedInstance } from './managed-instance.js';

/** What add() took in the kernel for an instance so far: its program attached, its key tracked. */
export interface Attachment {
  attached: boolean;
  tracked: boolean;
}

/**
 * Which instances the detector manages, by id and by traffic key, and what each holds in the
 * kernel (its tc program attached, its key tracked). The detector decides when they come and go;
 * this table keeps the lookups and the refusals of a second holder of an id or key.
 */
export class InstanceTable {
  private readonly byId = new Map<string, ManagedInstance>();
  private readonly byKey = new Map<string, ManagedInstance>();
  /** Ids and traffic keys add() is taking on right now (between its first await and its end). */
  private readonly addingIds = new Set<string>();
  private readonly addingKeys = new Set<string>();

  constructor(private readonly source: TrafficSource) {}

  get(id: string): ManagedInstance | undefined {
    return this.byId.get(id);
  }

  withKey(key: string): ManagedInstance | undefined {
    return this.byKey.get(key);
  }

  all(): ManagedInstance[] {
    return [...this.byId.values()];
  }

  /** Whether this very instance is listed (not one removed, nor another of its id). */
  lists(instance: ManagedInstance): boolean {
    return this.byId.get(instance.id) === instance;
  }

  /** Refuses (throws) an id or traffic key already held or being taken on; else reserves both until the returned release. */
  reserve(instance: ManagedInstance): () => void {
    const { id, key } = instance;
    if (this.byId.has(id) || this.addingIds.has(id)) throw new DozeError('E_INSTANCE_TAKEN', `instance id ${JSON.stringify(id)} is already managed`);
    if (this.byKey.has(key) || this.addingKeys.has(key)) {
      const holder = this.byKey.get(key);
      throw new DozeError('E_INSTANCE_TAKEN', `${describeKey(instance.config)} is already managed${holder ? ` as ${JSON.stringify(holder.id)}` : ''}`);
    }
    this.addingIds.add(id);
    this.addingKeys.add(key);
    return () => {
      this.addingIds.delete(id);
      this.addingKeys.delete(key);
    };
  }

  /** Attaches its program (creating the pinned maps on first use) and tracks its key, noting each in `held` as it is done. */
  async attach(instance: ManagedInstance, held: Attachment): Promise<void> {
    if (instance.config.interface === undefined) await this.source.attachHost(instance.config.address);
    else await this.source.attach(instance.config.interface);
    held.attached = true;
    await this.source.track(instance.key, instance.aliases);
    held.tracked = true;
  }

  list(instance: ManagedInstance): void {
    this.byId.set(instance.id, instance);
    this.byKey.set(instance.key, instance);
  }

  /** Takes it off the lookups; whether it was on them. */
  unlist(instance: ManagedInstance): boolean {
    if (!this.lists(instance)) return false;
    this.byId.delete(instance.id);
    this.byKey.delete(instance.key);
    return true;
  }

  /** Gives back what attach() took for an instance: its tracked key, its attached program. */
  async detach(instance: ManagedInstance, held: Attachment): Promise<void> {
    try {
      if (held.tracked) await this.source.untrack(instance.key);
    } finally {
      if (held.attached && instance.config.interface === undefined) await this.source.detachHost();
      else if (held.attached) await this.source.detach(instance.config.interface!);
    }
  }
}
