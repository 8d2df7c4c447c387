import test from 'ava';
import { parseConfig } from '../../agent/config/load.js';
import { createRuntime } from '../../agent/runtimes/create-runtime.js';
import { QemuPauseRuntime } from '../../agent/runtimes/qemu/qemu-pause.js';

const instance = (runtime: Record<string, unknown>) => ({ id: 'vm', address: '10.213.200.2:8080', interface: 'dzvm0t', runtime: { kind: 'qemu', ...runtime } });

test('a qemu runtime gets pause mode and reclaim by default, and createRuntime builds it', (t) => {
  const config = parseConfig({ instances: [instance({ qmp: '/run/doze/vm/qmp.sock', memoryCgroup: 'nomad/vm' })] });
  const runtime = config.instances[0]!.runtime;
  t.like(runtime, { kind: 'qemu', mode: 'pause', reclaim: true, memoryCgroup: 'nomad/vm' });
  const built = createRuntime(runtime);
  t.true(built instanceof QemuPauseRuntime);
  t.deepEqual(built.capabilities, { keepsProcess: true, freesMemory: true });
});

test('a QMP socket path longer than a unix socket allows is refused at config load', (t) => {
  const long = `/var/lib/nomad/alloc/${'a'.repeat(80)}/qmp.sock`;
  const error = t.throws(() => parseConfig({ instances: [instance({ qmp: long })] }));
  t.regex(error.message, /instances\[0\]\.runtime\.qmp: a unix socket path has at most 107 bytes/);
  t.notThrows(() => parseConfig({ instances: [instance({ qmp: `/${'a'.repeat(106)}` })] }));
  t.throws(() => parseConfig({ instances: [instance({ qmp: `/${'a'.repeat(107)}` })] }));
});

test('a relative QMP path and an unsupported mode are refused with the reason', (t) => {
  t.regex(t.throws(() => parseConfig({ instances: [instance({ qmp: 'qmp.sock' })] })).message, /runtime\.qmp: must be an absolute path/);
  t.regex(t.throws(() => parseConfig({ instances: [instance({ qmp: '/q.sock', mode: 'hibernate' })] })).message, /runtime\.mode: mode is "pause" \(QMP stop\/cont\) or "snapshot"/);
});
