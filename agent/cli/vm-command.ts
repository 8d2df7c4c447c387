import { resolve } from 'node:path';
import { parseDuration } from '../config/duration.js';
import { ConfigError, messageOf } from '../shared/errors.js';
import { createLogger, LOG_LEVELS, type LogLevel } from '../shared/log.js';
import { vmLayout } from '../runtimes/qemu/vm-command-line.js';
import { OwnedTap, planTap, type TapPlan } from '../runtimes/qemu/vm-tap.js';
import { VmOwner } from '../runtimes/qemu/vm-owner.js';
import { AgentRegistration, registrationDraft, validateRegistration } from '../runtimes/qemu/vm-registration.js';
import { EXIT } from './exit-codes.js';
import { parseCommandLine } from './command-line.js';

export const VM_HELP = `Usage: doze vm run [options] -- qemu-system-x86_64 ARGS...

Runs a QEMU VM under a long-lived owner process (what Nomad runs as the task), so the
VM can sleep as a snapshot: QEMU exits, its device state and guest RAM stay on disk,
and a wake restores it behind the same owner.

doze vm adds to the QEMU command line a QMP socket and guest RAM as a shared file in
the state directory, and opens a control socket there for the agent
(runtime { "kind": "qemu", "mode": "snapshot", "control": "<state dir>/control.sock" }).

Options:
      --state-dir DIR       where the RAM file, sockets, snapshot and handle (vm.json) live;
                            on disk, not tmpfs (default: $NOMAD_TASK_DIR/doze-vm)
      --memory-cgroup CG    start QEMU in this existing memory cgroup (relative to the v1
                            memory hierarchy or cgroup2, or absolute)
      --snapshot KIND       what a sleep saves: device (default: device state only, guest RAM
                            in a shared file in the state directory, faulted back lazily on
                            wake) or full (everything, RAM included, in one migration stream:
                            for VMs whose RAM cannot be file-backed; larger, slower to wake)
      --readahead           device snapshots: on wake, read the pages the guest had in memory
                            back ahead of its faults (off by default: measured slower under
                            TCG, see docs/qemu.md)
      --prespawn            while asleep, keep a QEMU waiting with -incoming defer
                            (faster wakes; holds about 50 MiB while asleep)
      --tap-address CIDR    create the -netdev tap (ifname=) if it is missing, with this host end
                            of a /30 or /31 (e.g. 10.213.7.1/30) and a neighbour entry for the
                            guest (mac= of its -device); removed on stop if doze vm made it
      --shutdown MODE       how a running VM is stopped on SIGTERM/SIGINT: powerdown
                            (ACPI, then quit at the deadline; default) or quit
      --stop-timeout DUR    bound for a stop (default 4s; keep it below the task's kill_timeout)
      --log-level LEVEL     ${LOG_LEVELS.join('|')} (default info; logs go to stderr)

Registration with the node's agent (PUT /api/instances/{id} once the VM runs, repeated
every 10s; DELETE, which wakes and releases it, when doze vm stops):
      --register URL        the agent's status API, e.g. http://127.0.0.1:7070
      --token TOKEN         the agent's bearer token (default: $DOZE_TOKEN)
      --instance-json JSON  instance fields (idleTimeout, idlePolicy, wake, memory, ...);
                            the flags below override them, the runtime is always this
                            owner's snapshot runtime
      --id ID               default: <job>.<group>.<alloc id prefix> from NOMAD_* (as
                            Nomad discovery names the allocation)
      --interface TAP       the VM's tap (created outside QEMU, so it survives sleeps);
                            default: the ifname= of a -netdev tap on the QEMU command line
      --address IP:PORT     the guest's address, or:
      --guest-port PORT     the guest is the other host of the tap's /30 (or /31)
  -h, --help                show this help

Exit codes: 0 stopped by a signal or the guest powered off, 1 QEMU failed, 2 usage error.`;

export async function vmCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '--help' || sub === '-h' || sub === 'help') {
    process.stdout.write(`${VM_HELP}\n`);
    return sub ? EXIT.ok : EXIT.usage;
  }
  if (sub !== 'run') {
    process.stderr.write(`doze vm: unknown subcommand ${JSON.stringify(sub)}\n\n${VM_HELP}\n`);
    return EXIT.usage;
  }
  const split = rest.indexOf('--');
  const ours = split < 0 ? rest : rest.slice(0, split);
  const qemuArgv = split < 0 ? [] : rest.slice(split + 1);
  const parsed = parseCommandLine('doze vm run', VM_HELP, {
      args: ours,
      options: {
        'state-dir': { type: 'string' },
        'memory-cgroup': { type: 'string' },
        snapshot: { type: 'string' },
        'tap-address': { type: 'string' },
        prespawn: { type: 'boolean' },
        readahead: { type: 'boolean' },
        shutdown: { type: 'string' },
        'stop-timeout': { type: 'string' },
        'log-level': { type: 'string' },
        register: { type: 'string' },
        token: { type: 'string' },
        'instance-json': { type: 'string' },
        id: { type: 'string' },
        interface: { type: 'string' },
        address: { type: 'string' },
        'guest-port': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  if (typeof parsed === 'number') return parsed;
  const { values } = parsed;
  const usage = (why: string) => {
    process.stderr.write(`doze vm run: ${why}\n`);
    return EXIT.usage;
  };
  if (qemuArgv.length === 0) return usage('give the QEMU command line after "--"');
  const stateDir = values['state-dir'] ?? (process.env.NOMAD_TASK_DIR ? `${process.env.NOMAD_TASK_DIR}/doze-vm` : undefined);
  if (!stateDir) return usage('--state-dir is required outside Nomad');
  const shutdown = values.shutdown ?? 'powerdown';
  if (shutdown !== 'powerdown' && shutdown !== 'quit') return usage('--shutdown is powerdown or quit');
  const snapshot = values.snapshot ?? 'device';
  if (snapshot !== 'device' && snapshot !== 'full') return usage('--snapshot is device or full');
  const stopTimeoutMs = values['stop-timeout'] === undefined ? 4000 : parseDuration(values['stop-timeout']);
  if (stopTimeoutMs === undefined) return usage(`--stop-timeout ${JSON.stringify(values['stop-timeout'])} is not a duration`);
  const level = (values['log-level'] ?? 'info') as LogLevel;
  if (!LOG_LEVELS.includes(level)) return usage(`--log-level is one of ${LOG_LEVELS.join(', ')}`);
  const log = createLogger(level, 2);

  let registration: AgentRegistration | undefined;
  const registering = ['instance-json', 'id', 'interface', 'address', 'guest-port', 'token'] as const;
  if (values.register === undefined) {
    const stray = registering.find((flag) => values[flag] !== undefined);
    if (stray) return usage(`--${stray} needs --register URL`);
  } else {
    if (!/^https?:\/\/[^/\s]+\/?$/.test(values.register)) return usage(`--register ${JSON.stringify(values.register)}: expected the agent's URL, e.g. http://127.0.0.1:7070`);
    const guestPort = values['guest-port'] === undefined ? undefined : Number(values['guest-port']);
    if (guestPort !== undefined && !(Number.isInteger(guestPort) && guestPort > 0 && guestPort < 65536)) return usage('--guest-port is a port number');
    try {
      const draft = registrationDraft({
        instanceJson: values['instance-json'],
        id: values.id,
        address: values.address,
        interface: values.interface,
        guestPort,
        qemuArgv,
        control: vmLayout(resolve(stateDir)).control,
      });
      // Every field but a tap-derived address is checked now, before a VM starts.
      validateRegistration(guestPort === undefined ? draft : { ...draft, address: `192.0.2.1:${guestPort}` });
      registration = new AgentRegistration({ url: values.register, token: values.token ?? (process.env.DOZE_TOKEN || undefined), draft, guestPort, log });
    } catch (error) {
      if (error instanceof ConfigError) return usage(error.message);
      throw error;
    }
  }

  let tapPlan: TapPlan | undefined;
  try {
    if (values['tap-address'] !== undefined) tapPlan = planTap(qemuArgv, values['tap-address']);
  } catch (error) {
    if (error instanceof ConfigError) return usage(error.message);
    throw error;
  }

  let owner: VmOwner;
  try {
    owner = new VmOwner({ stateDir: resolve(stateDir), qemuArgv, memoryCgroup: values['memory-cgroup'], snapshot, readahead: values.readahead ?? false, prespawn: values.prespawn ?? false, shutdown, stopTimeoutMs, log });
  } catch (error) {
    if (error instanceof ConfigError) return usage(error.message);
    throw error;
  }

  return new Promise<number>((done) => {
    let signals = 0;
    let tap: OwnedTap | undefined;
    const removeTap = () => tap?.remove().catch((error: unknown) => log.warn({ err: messageOf(error) }, 'removing the tap failed'));
    const stop = (signal: string) => {
      signals++;
      if (signals > 1) {
        void owner.hurry();
        return;
      }
      const unregistered = registration ? registration.stop() : Promise.resolve();
      unregistered.then(() => owner.shutdown(`${signal} received`)).then(removeTap).then(
        () => done(EXIT.ok),
        (error: unknown) => {
          log.error({ err: messageOf(error) }, 'stopping the VM failed');
          done(EXIT.failure);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    owner.on('exit', (code) => {
      const unregistered = registration ? registration.stop() : Promise.resolve();
      void unregistered.then(() => owner.shutdown('QEMU exited')).then(removeTap).finally(() => done(code));
    });
    const tapReady = tapPlan
      ? OwnedTap.ensure(tapPlan).then((made) => {
          tap = made;
          log.info({ tap: made.plan.name, address: made.plan.address, guest: made.plan.guestIp, created: made.created }, 'tap ready');
        })
      : Promise.resolve();
    tapReady.then(() => owner.start()).then(
      () => {
        log.info({ control: owner.layout.control, state: owner.state }, 'doze vm running');
        if (registration && signals === 0) void registration.start();
      },
      (error: unknown) => {
        log.error({ err: messageOf(error) }, 'starting the VM failed');
        owner.shutdown('start failed').then(removeTap).finally(() => done(error instanceof ConfigError ? EXIT.usage : EXIT.failure));
      },
    );
  });
}
