import test from 'ava';
import { instanceId } from '../../agent/nomad/instance-id.js';
import { ConfigError } from '../../agent/shared/errors.js';
import { createLogger } from '../../agent/shared/log.js';
import { FakeRuntime } from '../../agent/runtimes/fake.js';
import { AgentRegistration, peerAddress, registrationDraft, validateRegistration } from '../../agent/runtimes/qemu/vm-registration.js';
import { startRegistryApp } from '../helpers/registry-app.js';
import { until } from '../helpers/until.js';

/*
 * doze vm run --register: the instance it builds, and its PUT / refresh /
 * DELETE against a real status API (agent/instances/registry.ts over a fake traffic
 * source; the runtime is swapped for a fake one, since no owner runs here).
 */

const silent = createLogger('silent');
// Below /run/doze, a root the agent's registrations may name by default (agent/instances/registration-policy.ts).
const CONTROL = '/run/doze/vm/web/control.sock';
const NOMAD_ENV = { NOMAD_JOB_ID: 'vm', NOMAD_GROUP_NAME: 'vm', NOMAD_ALLOC_ID: '3f2a9c1d-1111-4000-8000-000000000001' };

test('the draft: flags over --instance-json, the snapshot runtime on this owner, the id Nomad discovery would give', (t) => {
  const draft = registrationDraft({
    instanceJson: JSON.stringify({ idleTimeout: 300_000, wake: 'hold', interface: 'ignored0', memory: 256, runtime: { kind: 'freezer', cgroup: 'x' } }),
    interface: 'dzvm0t',
    address: '10.213.7.2:80',
    control: CONTROL,
    env: NOMAD_ENV,
  });
  t.deepEqual(draft, {
    id: instanceId('vm', 'vm', NOMAD_ENV.NOMAD_ALLOC_ID),
    idleTimeout: 300_000,
    wake: 'hold',
    interface: 'dzvm0t',
    address: '10.213.7.2:80',
    memory: 256,
    runtime: { kind: 'qemu', mode: 'snapshot', control: CONTROL },
  });
  t.is(draft.id, 'vm.vm.3f2a9c1d');
  const config = validateRegistration(draft);
  t.like(config, { idleTimeout: 300_000, wake: 'hold', idlePolicy: 'requests', runtime: { kind: 'qemu', mode: 'snapshot', control: CONTROL } });
  t.is(registrationDraft({ id: 'mine', interface: 't', address: '10.0.0.2:1', control: CONTROL, env: NOMAD_ENV }).id, 'mine');
});

test('without --interface, the tap comes from the QEMU command line', (t) => {
  const qemuArgv = ['qemu-system-x86_64', '-netdev', 'tap,id=n0,ifname=dzvm7t,script=no', '-device', 'virtio-net-pci,netdev=n0'];
  t.is(registrationDraft({ id: 'x', guestPort: 80, qemuArgv, control: CONTROL, env: {} }).interface, 'dzvm7t');
  t.is(registrationDraft({ id: 'x', interface: 'given', guestPort: 80, qemuArgv, control: CONTROL, env: {} }).interface, 'given');
  t.is(registrationDraft({ id: 'x', instanceJson: '{"interface":"json0"}', guestPort: 80, qemuArgv, control: CONTROL, env: {} }).interface, 'json0');
});

test('the draft refuses what cannot become an instance, naming the flag', (t) => {
  const refuse = (input: Parameters<typeof registrationDraft>[0]) => t.throws(() => registrationDraft(input), { instanceOf: ConfigError }).message;
  t.regex(refuse({ interface: 't', address: '10.0.0.2:1', control: CONTROL, env: {} }), /needs the instance id/);
  t.regex(refuse({ id: 'x', address: '10.0.0.2:1', control: CONTROL, env: {} }), /needs the VM's tap: --interface/);
  t.regex(refuse({ id: 'x', interface: 't', control: CONTROL, env: {} }), /--address IP:PORT, --guest-port PORT/);
  t.regex(refuse({ id: 'x', interface: 't', address: '10.0.0.2:1', guestPort: 80, control: CONTROL, env: {} }), /--address or --guest-port, not both/);
  t.regex(refuse({ instanceJson: '{"id": ', control: CONTROL, env: {} }), /--instance-json is not JSON/);
  t.regex(refuse({ instanceJson: '[]', control: CONTROL, env: {} }), /must be a JSON object/);
  const invalid = t.throws(() => validateRegistration(registrationDraft({ id: 'x', interface: 't', address: '10.0.0.2', instanceJson: '{"idlePolicy":"sometimes"}', control: CONTROL, env: {} })), { instanceOf: ConfigError }).message;
  t.regex(invalid, /address: expected "IPv4:port"/);
  t.regex(invalid, /idlePolicy/);
});

test('--guest-port: the guest is the other host of the tap\'s /30 or /31', (t) => {
  t.is(peerAddress('10.213.7.1/30'), '10.213.7.2');
  t.is(peerAddress('10.213.7.2/30'), '10.213.7.1');
  t.is(peerAddress('10.213.7.5/30'), '10.213.7.6');
  t.is(peerAddress('192.168.255.254/31'), '192.168.255.255');
  t.is(peerAddress('192.168.255.255/31'), '192.168.255.254');
  t.throws(() => peerAddress('10.213.7.1/24'), { message: /a \/30 or \/31/ });
  t.throws(() => peerAddress('10.213.7.0/30'), { message: /one of the two hosts/ });
  t.throws(() => peerAddress('10.213.7.3/30'), { message: /one of the two hosts/ });
});

/** The status app, with every registered runtime a fake one (no owner answers on the control socket here). */
function agentWithFakeRuntimes(t: Parameters<typeof startRegistryApp>[0], token?: string) {
  return startRegistryApp(t, { registrations: true, token, createRuntime: () => new FakeRuntime({ pauseMs: 0, resumeMs: 0, failResume: false }) });
}

test('start registers the VM (tap address from --guest-port), stop unregisters it: woken, then released', async (t) => {
  const app = await agentWithFakeRuntimes(t, 'tok-tok-tok');
  const draft = registrationDraft({ interface: 'dzvm0t', guestPort: 8080, control: CONTROL, env: NOMAD_ENV, instanceJson: '{"idleTimeout": 2000}' });
  const registration = new AgentRegistration({ url: `${app.url}/`, token: 'tok-tok-tok', draft, guestPort: 8080, log: silent, refreshMs: 60_000, cidrOf: async () => '10.213.7.1/30' });
  await registration.start();
  t.is(registration.state, 'registered', registration.lastError);
  const instance = app.detector.get('vm.vm.3f2a9c1d');
  t.truthy(instance);
  t.like(instance!.config, { address: '10.213.7.2:8080', interface: 'dzvm0t', idleTimeout: 2000, runtime: { kind: 'qemu', mode: 'snapshot', control: CONTROL } });
  t.is(instance!.source, 'api');

  t.true(await app.detector.sleepNow(instance!.id));
  await registration.stop();
  t.is(registration.state, 'stopped');
  t.is(app.detector.get(instance!.id), undefined);
  t.is(await instance!.runtime.inspect(), 'running', 'the agent woke the VM before letting it go');
  t.deepEqual(app.released, [instance!.id]);
});

test('a refused registration is logged and retried; the refresh re-registers after the agent lost it', async (t) => {
  const app = await agentWithFakeRuntimes(t);
  await app.addStatic({ id: 'squatter', address: '10.213.7.2:22', interface: 'other0', runtime: { kind: 'fake' } });
  const draft = registrationDraft({ id: 'vm1', interface: 'dzvm0t', address: '10.213.7.2:80', control: CONTROL, env: {} });
  const registration = new AgentRegistration({ url: app.url, draft, log: silent, refreshMs: 30 });
  t.teardown(() => registration.stop());
  await registration.start();
  t.is(registration.state, 'refused');
  t.regex(registration.lastError!, /^409: address 10\.213\.7\.2 is already managed as "squatter"/);

  await app.detector.remove('squatter', { wake: false });
  await until('the registration', () => registration.state === 'registered');
  t.truthy(app.detector.get('vm1'));

  // The agent restarted (it forgot the instance): the next refresh registers it again.
  await app.registry.unregister('vm1');
  t.is(app.detector.get('vm1'), undefined);
  t.truthy(await until('the instance registered again', () => app.detector.get('vm1')));
});

test('a stop that comes while the first PUT is in flight still unregisters', async (t) => {
  const app = await agentWithFakeRuntimes(t);
  const draft = registrationDraft({ id: 'vm1', interface: 'dzvm0t', address: '10.213.7.2:80', control: CONTROL, env: {} });
  const registration = new AgentRegistration({ url: app.url, draft, log: silent, refreshMs: 60_000 });
  const started = registration.start();
  await registration.stop();
  await started;
  t.is(registration.state, 'stopped');
  t.is(app.detector.get('vm1'), undefined);
});

test('an unreachable agent: start does not throw, stop does not hang', async (t) => {
  const draft = registrationDraft({ id: 'vm1', interface: 'dzvm0t', address: '10.213.7.2:80', control: CONTROL, env: {} });
  const registration = new AgentRegistration({ url: 'http://127.0.0.1:9', draft, log: silent, refreshMs: 60_000, requestTimeoutMs: 500 });
  await registration.start();
  t.is(registration.state, 'unreachable');
  await registration.stop(500);
  t.is(registration.state, 'stopped');
});

test('doze vm run: registration flags are checked before any VM starts', async (t) => {
  const { vmCommand } = await import('../../agent/cli/vm-command.js');
  const write = process.stderr.write.bind(process.stderr);
  let stderr = '';
  process.stderr.write = ((chunk: string) => ((stderr += chunk), true)) as typeof process.stderr.write;
  try {
    const run = async (args: string[]) => {
      stderr = '';
      return { code: await vmCommand(['run', '--state-dir', '/tmp/dz-never-created', ...args, '--', 'qemu-system-x86_64']), stderr };
    };
    t.like(await run(['--interface', 'dzvm0t']), { code: 2, stderr: 'doze vm run: --interface needs --register URL\n' });
    t.like(await run(['--register', 'localhost:7070', '--interface', 't', '--address', '10.0.0.2:80', '--id', 'x']), { code: 2 });
    t.regex((await run(['--register', 'http://127.0.0.1:7070', '--address', '10.0.0.2:80', '--id', 'x'])).stderr, /needs the VM's tap: --interface/);
    t.regex((await run(['--register', 'http://127.0.0.1:7070', '--interface', 't', '--guest-port', '0', '--id', 'x'])).stderr, /--guest-port is a port number/);
    const invalid = await run(['--register', 'http://127.0.0.1:7070', '--interface', 't', '--guest-port', '80', '--id', 'x', '--instance-json', '{"idleTimeout":"soon"}']);
    t.is(invalid.code, 2);
    t.regex(invalid.stderr, /idleTimeout: "soon" is not a duration/);
  } finally {
    process.stderr.write = write;
  }
});
