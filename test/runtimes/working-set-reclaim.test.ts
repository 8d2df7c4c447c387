import test from 'ava';
import { parseColdBytes, workingSetRequest } from '../../agent/runtimes/working-set-reclaim.js';

const KiB = 1024;
// Two mappings as /proc/PID/smaps shows them: the node binary's text (file pages, charged to
// whoever read them first) and a heap of which 1 MiB of 100 was referenced since clear_refs.
const smaps = `55d0c0000000-55d0c5000000 r-xp 00000000 08:01 1234  /usr/bin/node
Size:              81920 kB
Rss:               40960 kB
Referenced:        40960 kB
Anonymous:             0 kB
7f0000000000-7f0006400000 rw-p 00000000 00:00 0
Size:             102400 kB
Rss:              102400 kB
Referenced:         1024 kB
Anonymous:        102400 kB
`;

test("cold = the anonymous pages not referenced since the bits were cleared; the runtime's mapped code never counts", (t) => {
  t.is(parseColdBytes(smaps), 101376 * KiB);
  t.is(parseColdBytes(''), 0);
});

test('v2 reclaims the cold amount; v1 lowers the limit to resident − cold and puts the old limit back; too little cold: nothing to do', (t) => {
  t.deepEqual(workingSetRequest({ version: 2, dir: '/sys/fs/cgroup/web' }, 110 << 20, 100 << 20), { request: { file: '/sys/fs/cgroup/web/memory.reclaim', value: String(100 << 20) }, restore: [] });
  t.is(workingSetRequest({ version: 2, dir: '/sys/fs/cgroup/web' }, 110 << 20, 512 * KiB), null);
});
