import test from 'ava';
import { isVmOwnerTask } from '../../agent/discovery/allocation-instance.js';
import { checkJob } from '../../plugin/check-job.js';
import { MIN_KILL_TIMEOUT_MS, OWNER_MEMORY_MB, renderVmTasks, tapOf } from '../../plugin/render-vm-task.js';
import { jobFile, runJob } from './run-job-command.js';

/*
 * doze job render/run: a qemu task with doze.mode = "snapshot" becomes a
 * raw_exec task running `doze vm run --register … -- qemu-system-x86_64 <the
 * qemu driver's command line>` (plugin/render-vm-task.ts, docs/qemu.md); one
 * with doze.mode = "pause" stays a qemu task and gains the agent's QMP socket
 * and file-backed RAM in its args (plugin/qemu-pause-args.ts).
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

test('doze.tap_address becomes --tap-address (Nomad interpolation left for the node); a bad one is refused', (t) => {
  const meta = { 'doze.enabled': 'true', 'doze.mode': 'snapshot', 'doze.tap_address': '10.213.${NOMAD_ALLOC_INDEX}.1/30' };
  const raw = qemuJob({ image_path: 'local/a.img', port_map: [{ ssh: 22 }], args: TAP_ARGS }, meta);
  const check = checkJob(raw);
  t.deepEqual(check.problems, []);
  const args = (renderVmTasks(raw, check).job.TaskGroups as { Tasks: Task[] }[])[0]!.Tasks[0]!.Config.args;
  t.deepEqual(args.slice(args.indexOf('--tap-address'), args.indexOf('--tap-address') + 2), ['--tap-address', '10.213.${NOMAD_ALLOC_INDEX}.1/30']);
  const bad = checkJob(qemuJob({ image_path: 'local/a.img', port_map: [{ ssh: 22 }], args: TAP_ARGS }, { ...meta, 'doze.tap_address': '10.213.7.1/24' }));
  t.true(bad.problems.some((p) => /doze\.tap_address: "10\.213\.7\.1\/24" is not the host end of a \/30 or \/31/.test(p)), bad.problems.join('\n'));
});

test('unmanaged qemu tasks are left as they are', (t) => {
  const unmanaged = qemuJob({ image_path: 'local/a.img' }, { 'doze.mode': 'snapshot' });
  t.deepEqual(renderVmTasks(unmanaged, checkJob(unmanaged)).job, unmanaged);
  const off = qemuJob({ image_path: 'local/a.img', args: ['-smp', '2'] }, { 'doze.enabled': 'false' });
  t.deepEqual(renderVmTasks(off, checkJob(off)).job, off);
});

/*
 * Pause mode on Nomad's qemu driver: QEMU stays the task; its args gain the
 * agent's QMP socket and (doze.reclaim) file-backed guest RAM, relative to the
 * task directory (plugin/qemu-pause-args.ts, docs/qemu.md).
 */

const PAUSE = { 'doze.enabled': 'true' }; // doze.mode defaults to "pause"
const QMP_ARGS = ['-qmp', 'unix:local/doze-qmp.sock,server=on,wait=off'];
const ramArgs = (mb: number) => ['-object', `memory-backend-file,id=doze-ram,size=${mb}M,mem-path=local/doze-ram,share=on`, '-machine', 'memory-backend=doze-ram'];

function argsOf(job: Record<string, unknown>): string[] {
  return ((job.TaskGroups as { Tasks: Task[] }[])[0]!.Tasks[0]!).Config.args;
}

test('a pause-mode qemu task keeps its driver and gets the QMP socket and file-backed RAM after its own args', (t) => {
  const raw = qemuJob({ image_path: 'local/a.img', port_map: [{ ssh: 22 }], args: ['-smp', '2', '-netdev', 'user,id=u0'] }, PAUSE);
  const result = renderVmTasks(raw, checkJob(raw));
  t.deepEqual(result.problems, []);
  const task = (result.job.TaskGroups as { Tasks: Task[] }[])[0]!.Tasks[0]!;
  t.is(task.Driver, 'qemu');
  t.deepEqual(task.Config.args, ['-smp', '2', '-netdev', 'user,id=u0', ...QMP_ARGS, ...ramArgs(512)]);
  t.deepEqual(task.Resources, { CPU: 100, MemoryMB: 512 }, 'resources unchanged');
  t.is(task.KillTimeout, 30e9);
  t.like(task.Config, { image_path: 'local/a.img', port_map: [{ ssh: 22 }] });
  t.deepEqual(result.rendered, []);
  t.deepEqual(result.qemuPause, [{ group: 'g', task: 'vm', qmp: 'local/doze-qmp.sock', ram: { file: 'local/doze-ram', memoryMb: 512 } }]);
  t.deepEqual(argsOf(raw), ['-smp', '2', '-netdev', 'user,id=u0'], 'the input job is not modified');
});

test('without config.args or resources.memory: args are created, RAM is Nomad\'s default 300 MB', (t) => {
  const raw = qemuJob({ image_path: 'local/a.img', port_map: [{ ssh: 22 }] }, PAUSE, { CPU: 100 });
  const result = renderVmTasks(raw, checkJob(raw));
  t.deepEqual(result.problems, []);
  t.deepEqual(argsOf(result.job), [...QMP_ARGS, ...ramArgs(300)]);
});

test('rendering a rendered pause task changes nothing; a changed memory size is picked up', async (t) => {
  const raw = qemuJob({ image_path: 'local/a.img', port_map: [{ ssh: 22 }], args: TAP_ARGS }, PAUSE);
  const once = renderVmTasks(raw, checkJob(raw)).job;
  const twice = renderVmTasks(once, checkJob(once));
  t.deepEqual(twice.problems, []);
  t.deepEqual(twice.job, once);
  t.deepEqual(argsOf(twice.job), [...TAP_ARGS, ...QMP_ARGS, ...ramArgs(512)], 'a -netdev tap is fine');

  // Through the command: render, render the output again.
  const run = await runJob(['render', await jobFile(t, 'vm.json', { Job: raw })]);
  t.is(run.code, 0, run.stderr);
  const again = await runJob(['render', await jobFile(t, 'rendered.json', run.stdout)]);
  t.is(again.code, 0, again.stderr);
  t.deepEqual(JSON.parse(again.stdout), JSON.parse(run.stdout));

  const grown = structuredClone(once) as ReturnType<typeof qemuJob>;
  grown.TaskGroups[0]!.Tasks[0]!.Resources = { CPU: 100, MemoryMB: 1024 };
  t.deepEqual(argsOf(renderVmTasks(grown, checkJob(grown)).job), [...TAP_ARGS, ...QMP_ARGS, ...ramArgs(1024)]);
});

test('doze.reclaim = "false" adds only the QMP socket, and leaves a memory backend of the user\'s alone', (t) => {
  const raw = qemuJob({ image_path: 'local/a.img', port_map: [{ ssh: 22 }], args: ['-smp', '2'] }, { ...PAUSE, 'doze.reclaim': 'false' });
  const result = renderVmTasks(raw, checkJob(raw));
  t.deepEqual(result.problems, []);
  t.deepEqual(argsOf(result.job), ['-smp', '2', ...QMP_ARGS]);
  t.deepEqual(result.qemuPause, [{ group: 'g', task: 'vm', qmp: 'local/doze-qmp.sock', ram: undefined }]);
  t.true(result.warnings.some((w) => w.includes('args_allowlist = ["-qmp", …]')), result.warnings.join('\n'));

  const own = ['-object', 'memory-backend-memfd,id=m0,size=512M', '-machine', 'memory-backend=m0'];
  const ownBackend = qemuJob({ image_path: 'local/a.img', port_map: [{ ssh: 22 }], args: own }, { ...PAUSE, 'doze.reclaim': 'false' });
  const kept = renderVmTasks(ownBackend, checkJob(ownBackend));
  t.deepEqual(kept.problems, []);
  t.deepEqual(argsOf(kept.job), [...own, ...QMP_ARGS]);

  // Turning reclaim off after a render takes doze's RAM args out again.
  const reclaiming = qemuJob({ image_path: 'local/a.img', port_map: [{ ssh: 22 }] }, PAUSE);
  const rendered = renderVmTasks(reclaiming, checkJob(reclaiming)).job as ReturnType<typeof qemuJob>;
  t.deepEqual(argsOf(rendered), [...QMP_ARGS, ...ramArgs(512)]);
  rendered.TaskGroups[0]!.Meta = { ...PAUSE, 'doze.reclaim': 'false' };
  t.deepEqual(argsOf(renderVmTasks(rendered, checkJob(rendered)).job), QMP_ARGS);
});

test('a QMP monitor of the user\'s own is refused by render and validate, naming the task and what to remove', async (t) => {
  const file = await jobFile(t, 'vm.json', { Job: qemuJob({ image_path: 'local/a.img', port_map: [{ ssh: 22 }], args: ['-smp', '2', '-qmp', 'unix:/tmp/mine.sock,server,nowait'] }, PAUSE) });
  for (const sub of ['render', 'validate', 'run']) {
    const run = await runJob(sub === 'run' ? [sub, file, '--nomad-addr', 'http://127.0.0.1:1'] : [sub, file]);
    t.is(run.code, 1, sub);
    t.is(run.stdout, '', sub);
    t.regex(run.stderr, /is invalid:\n {2}group "g" task "vm": args "-qmp" "unix:\/tmp\/mine.sock,server,nowait": doze.mode "pause" stops and resumes this VM through the QMP socket doze job render adds \(local\/doze-qmp.sock.*remove "-qmp" and its value from args\n$/, sub);
  }
  const mon = qemuJob({ image_path: 'local/a.img', port_map: [{ ssh: 22 }], args: ['-chardev', 'socket,id=c0,path=/tmp/q.sock,server=on,wait=off', '-mon', 'chardev=c0,mode=control'] }, PAUSE);
  t.deepEqual(renderVmTasks(mon, checkJob(mon)).problems, [
    'group "g" task "vm": args "-mon" "chardev=c0,mode=control" is a QMP monitor: doze.mode "pause" stops and resumes this VM through the QMP socket doze job render adds (local/doze-qmp.sock); remove this -mon (and its -chardev) from args',
  ]);
  // The driver's own human monitor (graceful_shutdown) and an HMP -monitor are not QMP.
  const hmp = qemuJob({ image_path: 'local/a.img', port_map: [{ ssh: 22 }], graceful_shutdown: true, args: ['-monitor', 'unix:/tmp/hmp.sock,server,nowait'] }, PAUSE);
  t.deepEqual(renderVmTasks(hmp, checkJob(hmp)).problems, []);
});

test('a memory backend, -mem-path, -numa memdev or -m of the user\'s own conflicts with doze\'s RAM file', (t) => {
  const problemsOf = (args: string[]) => {
    const raw = qemuJob({ image_path: 'local/a.img', port_map: [{ ssh: 22 }], args }, PAUSE);
    return renderVmTasks(raw, checkJob(raw)).problems;
  };
  const [backend, ...more] = problemsOf(['-object', 'memory-backend-ram,id=m0,size=512M', '-machine', 'type=q35,memory-backend=m0']);
  t.deepEqual(more, []);
  t.regex(backend!, /^group "g" task "vm": args "-machine" "type=q35,memory-backend=m0" sets a memory backend, .*: remove memory-backend=… from "-machine" \(and its -object\), or set doze.reclaim = "false"/);
  t.regex(problemsOf(['-M', 'pc,memory-backend=m0'])[0]!, /args "-M" "pc,memory-backend=m0" sets a memory backend/);
  t.regex(problemsOf(['-mem-path', '/dev/hugepages'])[0]!, /args "-mem-path" "\/dev\/hugepages": .*QEMU refuses beside -mem-path: remove -mem-path, or set doze.reclaim = "false"/);
  t.regex(problemsOf(['-numa', 'node,memdev=m0'])[0]!, /args "-numa" "node,memdev=m0": .*remove memdev from -numa/);
  t.regex(problemsOf(['-m', '1G'])[0]!, /args "-m" "1G": the qemu driver already passes -m 512M \(resources.memory\).*remove -m from args/);
  t.regex(problemsOf(['-object', 'memory-backend-ram,id=doze-ram,size=1M'])[0]!, /the object id "doze-ram" is doze's/);
  t.deepEqual(problemsOf(['-machine', 'type=q35', '-object', 'rng-random,id=rng0,filename=/dev/urandom', '-numa', 'node,nodeid=0']), [], 'other -machine, -object and -numa options are fine');
});

test('render warns that args_allowlist must allow the added flags; validate says what the task gets', async (t) => {
  const run = await runJob(['render', 'jobs/vm-pause.nomad.hcl']);
  t.is(run.code, 0, run.stderr);
  t.is(
    run.stderr,
    'warning: group "vm" task "guest": the qemu args gain -qmp, -object, -machine (doze.mode "pause": the agent\'s QMP socket and file-backed guest RAM); ' +
      'on clients whose qemu plugin sets args_allowlist, those flags must be in it, or the task fails to start: plugin "qemu" { config { args_allowlist = ["-qmp", "-object", "-machine", …] } }\n',
  );
  const task = taskOf(JSON.parse(run.stdout));
  t.is(task.Driver, 'qemu');
  t.deepEqual(task.Config.args, ['-smp', '2', ...QMP_ARGS, ...ramArgs(512)]);

  const validate = await runJob(['validate', 'jobs/vm-pause.nomad.hcl']);
  t.is(validate.code, 0, validate.stderr);
  t.regex(validate.stdout, /\n {4}task "guest" \(qemu driver\) gets QMP socket local\/doze-qmp.sock and guest RAM \(512 MiB\) in local\/doze-ram, in its task directory\n$/);
});

test('snapshot-mode qemu tasks and other drivers get none of the pause args', async (t) => {
  const snapshot = await runJob(['render', 'jobs/vm-snapshot.nomad.hcl']);
  t.is(snapshot.code, 0, snapshot.stderr);
  const args = taskOf(JSON.parse(snapshot.stdout)).Config.args;
  t.false(args.some((a) => a.includes('doze-qmp.sock') || a.includes('doze-ram')), args.join(' '));

  const docker = qemuJob({ image: 'nginx:1.27', args: ['-g', 'daemon off;'] }, PAUSE);
  docker.TaskGroups[0]!.Tasks[0]!.Driver = 'docker';
  const result = renderVmTasks(docker, checkJob(docker));
  t.deepEqual(result.job, docker);
  t.deepEqual(result.qemuPause, []);
  t.deepEqual(result.warnings, []);
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
