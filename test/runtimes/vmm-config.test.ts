import test from 'ava';
import { parseConfig } from '../../agent/config/load.js';
import { CloudHypervisorRuntime } from '../../agent/runtimes/cloud-hypervisor.js';
import { createRuntime } from '../../agent/runtimes/create-runtime.js';
import { FirecrackerRuntime } from '../../agent/runtimes/firecracker.js';
import { NomadScaleRuntime } from '../../agent/runtimes/nomad-scale.js';

const instance = (runtime: Record<string, unknown>) => ({ id: 'vm', address: '10.213.200.2:8080', interface: 'dzvm0t', runtime });
const runtimeOf = (runtime: Record<string, unknown>) => parseConfig({ instances: [instance(runtime)] }).instances[0]!.runtime;

test('cloud-hypervisor: parsed and built, keeps its process', (t) => {
  const config = runtimeOf({ kind: 'cloud-hypervisor', socket: '/run/doze/vm/ch.sock', snapshotDir: '/var/lib/doze/vm/snap' });
  t.like(config, { kind: 'cloud-hypervisor', socket: '/run/doze/vm/ch.sock' });
  const built = createRuntime(config);
  t.true(built instanceof CloudHypervisorRuntime);
  t.deepEqual(built.capabilities, { keepsProcess: true, freesMemory: false });
});

test('firecracker: pause mode by default; snapshot mode frees memory and needs a launcher, a directory and (for Diff) snapshot-editor', (t) => {
  const pause = runtimeOf({ kind: 'firecracker', socket: '/run/fc.sock' });
  t.like(pause, { kind: 'firecracker', mode: 'pause', diffSnapshots: true, networkOverrides: [] });
  t.deepEqual(createRuntime(pause).capabilities, { keepsProcess: true, freesMemory: false });

  const error = t.throws(() => runtimeOf({ kind: 'firecracker', socket: '/run/fc.sock', mode: 'snapshot' }));
  t.regex(error.message, /runtime\.snapshotDir: snapshot mode needs a snapshot directory/);
  t.regex(error.message, /runtime\.launcher: snapshot mode needs launcher\.binary/);
  t.regex(error.message, /runtime\.snapshotEditor: Diff snapshots are merged with Firecracker's snapshot-editor/);

  const snapshot = runtimeOf({
    kind: 'firecracker',
    socket: '/run/fc.sock',
    mode: 'snapshot',
    snapshotDir: '/var/lib/doze/fc',
    launcher: { binary: '/usr/local/bin/firecracker' },
    diffSnapshots: false,
    networkOverrides: [{ iface_id: 'eth0', host_dev_name: 'tap-web0' }],
  });
  const built = createRuntime(snapshot);
  t.true(built instanceof FirecrackerRuntime);
  t.deepEqual(built.capabilities, { keepsProcess: false, freesMemory: true, dropsFirstSyn: true });
  t.regex(t.throws(() => runtimeOf({ kind: 'firecracker', socket: '/run/fc.sock', networkOverrides: [{ iface_id: 'eth0', host_dev_name: 'a-tap-name-that-is-too-long' }] })).message, /at most 15 characters/);
});

test('VMM sockets longer than a unix socket allows are refused at config load', (t) => {
  for (const kind of ['cloud-hypervisor', 'firecracker']) {
    const long = `/var/lib/nomad/alloc/${'a'.repeat(80)}/api.sock`;
    t.regex(t.throws(() => runtimeOf({ kind, socket: long })).message, /instances\[0\]\.runtime\.socket: a unix socket path has at most 107 bytes/, kind);
    t.notThrows(() => runtimeOf({ kind, socket: `/${'a'.repeat(106)}` }));
    t.throws(() => runtimeOf({ kind, socket: `/${'a'.repeat(107)}` }));
    t.regex(t.throws(() => runtimeOf({ kind, socket: 'api.sock' })).message, /must be an absolute path/);
  }
});

test('nomad-scale: job and group required; built with its own Nomad client', (t) => {
  t.regex(t.throws(() => runtimeOf({ kind: 'nomad-scale', job: 'web' })).message, /runtime\.group/);
  const config = runtimeOf({ kind: 'nomad-scale', job: 'web', group: 'web', port: 'http', nomad: { address: 'http://127.0.0.1:4646' } });
  const built = createRuntime(config);
  t.true(built instanceof NomadScaleRuntime);
  t.deepEqual(built.capabilities, { keepsProcess: false, freesMemory: true });
  t.regex(t.throws(() => runtimeOf({ kind: 'nomad-scale', job: 'web', group: 'web', nomad: { address: 'localhost:4646' } })).message, /http\(s\) URL/);
});
