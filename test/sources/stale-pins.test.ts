import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DozeError } from '../../agent/shared/errors.js';
import { createLogger } from '../../agent/shared/log.js';
import { EbpfSource } from '../../agent/sources/ebpf-source.js';
import { listFilters } from '../../agent/net/tc.js';
import { createBpffs } from '../helpers/bpffs.js';
import { createNetns } from '../helpers/netns.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';

/** What an older agent that crashed leaves: one map with the layout of its day. */
const OLD_LAYOUTS = [
  // doze_state when it was a hash map keyed by address (a state the tc program swapped could land on a replaced element).
  { name: 'doze_state', args: ['type', 'hash', 'key', '4', 'value', '4', 'entries', '16384'] },
  // doze_counters before the first-response stamps: 32-byte values.
  { name: 'doze_counters', args: ['type', 'hash', 'key', '4', 'value', '32', 'entries', '16384'] },
  // doze_conns before the keepalive bookkeeping (client_next_seq, server_next_seq): 32-byte values.
  { name: 'doze_conns', args: ['type', 'lru_hash', 'key', '12', 'value', '32', 'entries', '65536'] },
  // doze_conns before IPv6: 12-byte keys (an IPv4 client address only), 40-byte values.
  { name: 'doze_conns', args: ['type', 'lru_hash', 'key', '12', 'value', '40', 'entries', '65536'] },
];

for (const old of OLD_LAYOUTS) {
  rootTest(`${old.name} (key ${old.args[3]}, value ${old.args[5]} bytes) pinned by another doze version is named, with what to do, not a raw libbpf error`, async (t) => {
    const bpffs = await createBpffs(t);
    const ns = await createNetns(t);
    const source = new EbpfSource({ bpffs, checkMark: 1, log: createLogger('silent') });
    t.teardown(() => source.close({ removePins: false }));
    const globals = join(bpffs, 'tc', 'globals');
    await mkdir(globals, { recursive: true });
    await sh('bpftool', ['map', 'create', join(globals, old.name), ...old.args, 'name', old.name]);
    // Loading at start meets the pins, and so does an attach (which loads when start did not).
    for (const step of [() => source.start(), () => source.attach(ns.hostIf)]) {
      const error = await t.throwsAsync(step(), { instanceOf: DozeError });
      t.is((error as DozeError).code, 'E_STALE_PINS');
      t.regex(error!.message, new RegExp(`the pinned map ${globals}/${old.name} was made by another doze version`));
      t.regex(error!.message, new RegExp(`rm ${globals}/doze_\\*`));
    }
    t.deepEqual(await listFilters(ns.hostIf), [], 'nothing attached');
  });
}
