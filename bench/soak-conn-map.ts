/**
 * The soak's look at doze_conns (bench/soak.ts): how many entries the map holds and how long one
 * whole dump through doze-maps takes, the read every sleep decision of a `requests` or
 * `connections` instance makes (EbpfSource.connections()). Its own doze-maps process, so the
 * agent's helper is not slowed by the sampling more than the kernel's map lock does.
 */
import { join } from 'node:path';
import { MapClient } from '../agent/sources/map-client.js';

export interface ConnMapSample {
  atS: number;
  entries: number;
  dumpMs: number;
}

export class ConnMapSampler {
  private readonly maps = new MapClient();
  private readonly path: string;
  readonly samples: ConnMapSample[] = [];

  constructor(bpffs: string) {
    this.path = join(bpffs, 'tc', 'globals', 'doze_conns');
  }

  /** One dump, kept with its time since `startedAt` (epoch ms); a failed dump is skipped. */
  async sample(startedAt: number): Promise<void> {
    const began = performance.now();
    const entries = await this.maps.dump(this.path).catch(() => undefined);
    if (entries) this.samples.push({ atS: (Date.now() - startedAt) / 1000, entries: entries.length, dumpMs: performance.now() - began });
  }

  close(): void {
    this.maps.close();
  }
}
