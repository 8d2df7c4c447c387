import test from 'ava';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DozeError } from '../../agent/shared/errors.js';
import { defaultObjectPath } from '../../agent/sources/ebpf-source.js';
import { attach, detach } from '../../agent/net/tc.js';
import { createBpffs } from '../helpers/bpffs.js';
import { createNetns } from '../helpers/netns.js';
import { isRoot } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';

// Needs root: a namespace, a private bpffs and tc.
(isRoot ? test : test.skip)('maps pinned by another doze version are named, with what to do, not a raw tc error', async (t) => {
  const bpffs = await createBpffs(t);
  const ns = await createNetns(t);
  t.teardown(() => detach(ns.hostIf));
  // What an older agent that crashed leaves: doze_counters with another value size (32 bytes before first-response stamps).
  const globals = join(bpffs, 'tc', 'globals');
  await mkdir(globals, { recursive: true });
  await sh('bpftool', ['map', 'create', join(globals, 'doze_counters'), 'type', 'hash', 'key', '4', 'value', '32', 'entries', '16384', 'name', 'doze_counters']);
  const error = await t.throwsAsync(attach(ns.hostIf, defaultObjectPath(), bpffs), { instanceOf: DozeError });
  t.is((error as DozeError).code, 'E_STALE_PINS');
  t.regex(error!.message, new RegExp(`the pinned map ${globals}/doze_counters was made by another doze version`));
  t.regex(error!.message, new RegExp(`rm ${globals}/doze_\\*`));
});
