import test from 'ava';
import { isVmOwnerTask } from '../../agent/discovery/allocation-instance.js';
import { checkJob } from '../../plugin/check-job.js';
import { MIN_KILL_TIMEOUT_MS, OWNER_MEMORY_MB, renderVmTasks, tapOf } from '../../plugin/render-vm-task.js';
import { jobFile, runJob } from './run-job-command.js';

/*
 * doze job render/run: a qemu task with doze.mode = "snapshot" becomes a
 * raw_exec task running `doze vm run --register … -- qemu-system-x86_64 <the
 * qemu driver's command line>` (plugin/render-vm-task.ts, docs/qemu.md).
 */

type Task = { Name: string; Driver: string; Config: { command?: string; args: string[] }; Resources: { MemoryMB: number; CPU: number }; KillTimeout?: number; Artifacts?: unknown[] };

function taskOf(rendered: { Job: { TaskGroups: { Tasks: Task[] }[] } }): Task {
  return rendered.Job.TaskGroups[0]!.Tasks[0]!;
}

test('the example VM job renders into doze vm run with the qemu driver\'s command line', async (t) => {
  const run = await runJob(['render', 'jobs/vm-snapshot.nomad.hcl']);
  t.is(run.code, 0, run.stderr);
  t.is(run.stderr, '');
  const task = taskOf(JSON.parse(run.stdout));
  t.is(task.Driver, 'raw_exec');
  t.is(task.Config.command, 'doze');
  const args = task.Config.args;
  const split = args.indexOf('--');
  t.deepEqual(args.slice(0, split), [
    'vm', 'run',
    '--state-dir', '${NOMAD_ALLOC_DIR}/doze-vm',
    '--shutdown', 'powerdown',
    '--register', 'http://127.0.0.1:7070',
    '--interface', 'dzvm0t',
    '--guest-port', '80',
    '--instance-json', JSON.stringify({ idleTimeout: 300_000, idlePolicy: 'connections', wake: 'hold', maxAwake: 3_600_000, memory: 256 }),
  ]);
  t.deepEqual(args.slice(split + 1), [
    'qemu-system-x86_64',
    '-machine', 'type=pc,accel=kvm',
    '-name', 'guest.qcow2',
    '-m', '256M',
    '-drive', 'file=local/guest.qcow2',
    '-nographic',
    '-netdev', 'tap,id=net0,ifname=dzvm0t,script=no,downscript=no',
    '-device', 'virtio-net-pci,netdev=net0',
    '-enable-kvm', '-cpu', 'host',
  ]);
  t.deepEqual(task.Resources, { CPU: 500, MemoryMB: 256 + OWNER_MEMORY_MB });
  t.is(task.KillTimeout, MIN_KILL_TIMEOUT_MS * 1_000_000);
  t.is(task.Artifacts?.length, 1, 'the image artifact is kept');
  t.true(isVmOwnerTask(task), 'discovery recognises the rendered task');

  // Rendering the rendered job changes nothing (it is no qemu task any more).
  const again = await runJob(['render', await jobFile(t, 'rendered.json', run.stdout)]);
  t.is(again.code, 0, again.stderr);
  t.deepEqual(JSON.parse(again.stdout), JSON.parse(run.stdout));
});

test('validate says the task will run under doze vm', async (t) => {
  const run = await runJob(['validate', 'jobs/vm-snapshot.nomad.hcl']);
  t.is(run.code, 0, run.stderr);
  t.regex(run.stdout, /task "guest" runs under doze vm run \(raw_exec\), tap "dzvm0t", guest port 80/);
});

/** A qemu job in API JSON with a service on a port label and the driver's port_map. */
function qemuJob(config: Record<string, unknown>, meta: Record<string, string> = { 'doze.enabled': 'true', 'doze.mode': 'snapshot' }, resources: Record<string, unknown> = { CPU: 100, MemoryMB: 512 }) {
  return {
    ID: 'vm', Name: 'vm', Type: 'service',
    TaskGroups: [{
      Name: 'g',
      Meta: meta,
      Networks: [{ DynamicPorts: [{ Label: 'ssh', Value: 0, To: 0 }] }],
      Services: [{ Name: 'vm-ssh', PortLabel: 'ssh', Checks: [{ Type: 'tcp', Interval: 10e9, Timeout: 2e9 }] }],
      Tasks: [{ Name: 'vm', Driver: 'qemu', Config: config, Resources: resources, KillTimeout: 30e9 }],
    }],
  };
}

const TAP_ARGS = ['-netdev', 'tap,id=n0,ifname=tap-g,script=no,downscript=no', '-device', 'virtio-net-pci,netdev=n0'];

test('tcg by default, quit without graceful_shutdown, drive_interface, port_map as a map, a longer kill_timeout kept', (t) => {
  const raw = qemuJob({ image_path: '/images/deb.img', args: ['-smp', '2', ...TAP_ARGS], port_map: { ssh: 22 }, drive_interface: 'virtio' });
  const check = checkJob(raw);
  t.deepEqual(check.problems, []);
  const result = renderVmTasks(raw, check, { agentUrl: 'http://10.0.0.5:7070', command: '/usr/local/bin/doze' });
  t.deepEqual(result.problems, []);
  t.deepEqual(result.rendered, [{ group: 'g', task: 'vm', tap: 'tap-g', guestPort: 22 }]);
  const task = (result.job.TaskGroups as { Tasks: Task[] }[])[0]!.Tasks[0]!;
  t.is(task.Config.command, '/usr/local/bin/doze');
  const args = task.Config.args;
  t.deepEqual(args.slice(args.indexOf('--shutdown'), args.indexOf('--shutdown') + 4), ['--shutdown', 'quit', '--register', 'http://10.0.0.5:7070']);
  t.deepEqual(args.slice(args.indexOf('--') + 1), ['qemu-system-x86_64', '-machine', 'type=pc,accel=tcg', '-name', 'deb.img', '-m', '512M', '-drive', 'file=/images/deb.img,if=virtio', '-nographic', '-smp', '2', ...TAP_ARGS]);
  t.is(task.KillTimeout, 30e9);
  t.is(JSON.parse(args[args.indexOf('--instance-json') + 1]!).idleTimeout, 300_000, 'doze.idle_timeout default (5m)');
  t.is((raw.TaskGroups[0]!.Tasks[0]!).Driver, 'qemu', 'the input job is not modified');
});

test('a snapshot qemu task without a tap, or without a guest port, is refused with the fix', async (t) => {
  const noTap = await runJob(['render', await jobFile(t, 'vm.json', { Job: qemuJob({ image_path: 'local/a.img', port_map: [{ ssh: 22 }], args: ['-netdev', 'user,id=u0'] }) })]);
  t.is(noTap.code, 1);
  t.regex(noTap.stderr, /group "g" task "vm": doze.mode "snapshot" runs the VM under doze vm, which needs it on a tap .*ifname=<tap>/);
  const noPort = await runJob(['validate', await jobFile(t, 'vm.json', { Job: qemuJob({ image_path: 'local/a.img', args: TAP_ARGS }) })]);
  t.is(noPort.code, 1);
  t.regex(noPort.stderr, /port_map has no guest port for service port "ssh"/);
});

test('pause-mode qemu tasks and other drivers are left as they are', (t) => {
  const pause = qemuJob({ image_path: 'local/a.img', port_map: [{ ssh: 22 }] }, { 'doze.enabled': 'true' });
  const result = renderVmTasks(pause, checkJob(pause));
  t.deepEqual(result.job, pause);
  t.deepEqual(result.rendered, []);
  const unmanaged = qemuJob({ image_path: 'local/a.img' }, { 'doze.mode': 'snapshot' });
  t.deepEqual(renderVmTasks(unmanaged, checkJob(unmanaged)).job, unmanaged);
});

test('options the owner does not take are reported as warnings', async (t) => {
  const run = await runJob(['render', await jobFile(t, 'vm.json', { Job: qemuJob({ image_path: 'local/a.img', port_map: [{ ssh: 22 }], args: TAP_ARGS, guest_agent: true, emulator: 'qemu-system-aarch64' }) })]);
  t.is(run.code, 0, run.stderr);
  t.regex(run.stderr, /warning: group "g" task "vm": guest_agent is not carried over/);
  t.regex(run.stderr, /warning: group "g" task "vm": qemu option "emulator" is not carried over/);
});

test('tapOf reads -netdev and -nic tap options', (t) => {
  t.is(tapOf(['-netdev', 'tap,id=a,ifname=t0,script=no']), 't0');
  t.is(tapOf(['-nic', 'tap,ifname=t1,model=virtio']), 't1');
  t.is(tapOf(['-netdev', 'user,id=u', '-netdev', 'tap,id=b']), undefined, 'a tap QEMU would create itself does not count');
  t.is(tapOf(['-netdev']), undefined);
});

test('--agent-url must be a URL', async (t) => {
  const run = await runJob(['render', 'jobs/vm-snapshot.nomad.hcl', '--agent-url', 'localhost:7070']);
  t.is(run.code, 2);
  t.regex(run.stderr, /--agent-url "localhost:7070": expected a URL/);
});
