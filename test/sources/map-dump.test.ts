import { join } from 'node:path';
import { MapClient } from '../../agent/sources/map-client.js';
import { createBpffs } from '../helpers/bpffs.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';

const ENTRIES = 4000;
const key = (i: number) => {
  const k = Buffer.alloc(4);
  k.writeUInt32LE(i);
  return k;
};

/*
 * The tc program deletes ended connections from doze_conns all the time. A dump that walks the
 * map key by key restarts from the first bucket whenever its cursor key is deleted under it, and
 * repeats rows (inflating "requests in flight" and the dump's cost); doze-maps dumps by batch.
 */
rootTest('a dump of a hash map whose entries are deleted meanwhile repeats no row and invents none', async (t) => {
  const bpffs = await createBpffs(t);
  const path = join(bpffs, 'dz_dump_churn');
  await sh('bpftool', ['map', 'create', path, 'type', 'lru_hash', 'key', '4', 'value', '8', 'entries', String(ENTRIES * 2), 'name', 'dz_dump_churn']);
  const writer = new MapClient();
  const reader = new MapClient();
  t.teardown(() => {
    writer.close();
    reader.close();
  });
  for (let i = 0; i < ENTRIES; i++) await writer.update(path, key(i), Buffer.alloc(8, 1));
  // Delete every other entry, from the top, while the reader dumps again and again.
  let deleting = true;
  const deleter = (async () => {
    for (let i = ENTRIES - 1; i >= 0; i -= 2) await writer.delete(path, key(i));
    deleting = false;
  })();
  let dumps = 0;
  let repeated = 0;
  while (deleting && dumps < 200) {
    const entries = await reader.dump(path);
    const seen = new Set(entries.map((e) => e.key.readUInt32LE(0)));
    repeated += entries.length - seen.size;
    if ([...seen].some((k) => k >= ENTRIES)) t.fail('a dump returned a key that was never written');
    dumps++;
  }
  await deleter;
  t.true(dumps > 3, `only ${dumps} dumps overlapped the deletions: the test proved nothing`);
  t.is(repeated, 0, `${repeated} repeated rows in ${dumps} dumps`);
  t.is((await reader.dump(path)).length, ENTRIES / 2, 'every other entry is left');
});
