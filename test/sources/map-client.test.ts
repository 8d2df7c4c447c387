import { join } from 'node:path';
import { MapClient, MAX_KEYS_PER_LOOKUP } from '../../agent/sources/map-client.js';
import { DozeError } from '../../agent/shared/errors.js';
import { createBpffs } from '../helpers/bpffs.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';

/*
 * doze-maps (agent/bpf/doze-maps.c) answers every command completely or with an error. It read
 * commands into a 64 KiB buffer: a longer line was cut in two, the second half drew an answer of
 * its own, and from then on every answer went to the request before it. A dump whose second batch
 * failed answered "ok" with the first batch's rows: the agent took part of doze_conns for all of it.
 */

const key = (i: number) => {
  const k = Buffer.alloc(4);
  k.writeUInt32LE(i);
  return k;
};

async function hashMap(bpffs: string, name: string, entries: number): Promise<string> {
  const path = join(bpffs, name);
  await sh('bpftool', ['map', 'create', path, 'type', 'hash', 'key', '4', 'value', '8', 'entries', String(entries), 'name', name]);
  return path;
}

rootTest('a command line over 64 KiB is one command: its answer and the next ones stay in step', async (t) => {
  const bpffs = await createBpffs(t);
  const path = await hashMap(bpffs, 'dz_long_line', 16384);
  const maps = new MapClient();
  t.teardown(() => maps.close());
  const n = MAX_KEYS_PER_LOOKUP;
  for (let i = 0; i < n; i++) await maps.update(path, key(i), Buffer.alloc(8, i % 251));
  // One lookupn of 8192 keys: "lookupn PATH " + 8192 × 9 characters, about 74 KiB.
  const line = `lookupn ${path} ${Array.from({ length: n }, (_, i) => key(i).toString('hex')).join(' ')}`;
  t.true(line.length > 65536, `the command is ${line.length} bytes`);
  const found = await maps.lookupMany(path, Array.from({ length: n }, (_, i) => key(i)));
  t.is(found.length, n, 'every key found, in one answer');
  t.true(found.every((e) => e.value.equals(Buffer.alloc(8, e.key.readUInt32LE(0) % 251))), 'each value is its own key\'s');
  // The next answers belong to their own requests.
  t.deepEqual(await maps.lookup(path, key(7)), Buffer.alloc(8, 7));
  t.is(await maps.lookup(path, key(n + 5)), undefined);
  t.is((await maps.dump(path)).length, n);
});

rootTest('a dump that fails part way answers an error, never the rows read so far; the next answer is in step', async (t) => {
  const bpffs = await createBpffs(t);
  const path = await hashMap(bpffs, 'dz_dump_fails', 4096);
  const writer = new MapClient();
  t.teardown(() => writer.close());
  for (let i = 0; i < 1000; i++) await writer.update(path, key(i), Buffer.alloc(8, 1));
  t.is((await writer.dump(path)).length, 1000, 'a dump without the knob is whole');
  // The second batch (rows 257 on) fails with EIO: the first 256 rows must not come back as the map.
  const reader = new MapClient();
  t.teardown(() => reader.close());
  process.env.DOZE_MAPS_FAIL_DUMP = 'dz_dump_fails:2';
  try {
    await reader.lookup(path, key(0)); // starts the helper, which keeps the environment it started with
  } finally {
    delete process.env.DOZE_MAPS_FAIL_DUMP;
  }
  const error = await t.throwsAsync(reader.dump(path), { instanceOf: DozeError });
  t.regex(error!.message, /doze-maps dump: dump .*dz_dump_fails: Input\/output error/);
  t.deepEqual(await reader.lookup(path, key(3)), Buffer.alloc(8, 1), 'the next answer is its own');
  const error2 = await t.throwsAsync(reader.dump(path));
  t.regex(error2!.message, /Input\/output error/, 'every dump of that map fails the same way');
});
