import { EventEmitter } from 'node:events';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { ConfigError, messageOf } from '../../shared/errors.js';
import { withDeadline } from '../../shared/deadline.js';
import type { Logger } from '../../shared/log.js';
import { inMemoryFilesystem, loadWorkingSet, locateMemoryCgroup, pageoutFile, saveWorkingSet } from './memory-reclaim.js';
import { OwnerControlServer } from './owner-control-server.js';
import { OwnerError, type OwnerState, type OwnerStatus, type SleepTimings, type WakeTimings } from './owner-protocol.js';
import { PrespawnedReceiver, type ReceiverStarter } from './prespawned-receiver.js';
import { BOOT_QMP_MS, QMP_MS, QUIT_MS, QemuLauncher, type QemuProcess } from './qemu-process.js';
import { commandLineInputFiles, composeCommandLine, vmLayout, type SnapshotKind, type VmLayout } from './vm-command-line.js';
import { adoptPreviousOwner, removeStateDir, writeVmHandle } from './vm-handle.js';
import { commitSnapshot, incomingDone, prepareReceiver, resumeAfterFailedSave, saveFailureDetail, saveSnapshot, startIncoming } from './vm-migration.js';
import { SerialQueue } from '../../shared/serial-queue.js';

export interface VmOwnerOptions {
  stateDir: string;
  /** The user's QEMU command line, binary first. */
  qemuArgv: string[];
  /** A memory cgroup every QEMU process is started in (relative to the v1 memory hierarchy or cgroup2, or absolute). */
  memoryCgroup?: string;
  /** What a sleep saves (vm-command-line.ts SnapshotKind); default `device`. */
  snapshot?: SnapshotKind;
  /**
   * Device snapshots: on wake, read the pages that were in memory at the sleep back into the page
   * cache (in the VM's cgroup) while QEMU starts, instead of faulting each in from disk. Off by
   * default: under TCG here it slowed QEMU's start and brought back the whole working set for the
   * same answer time (docs/qemu.md); with KVM, where faults dominate a wake, it may pay.
   */
  readahead?: boolean;
  /** While asleep, keep a receiving QEMU waiting with `-incoming defer`: faster wakes, ~50 MiB held. */
  prespawn?: boolean;
  /** How a running VM is stopped on SIGTERM: ACPI `system_powerdown` (then `quit` at the deadline) or `quit` at once. */
  shutdown?: 'powerdown' | 'quit';
  /** Upper bound for a stop (Nomad's kill_timeout is 5 s by default). */
  stopTimeoutMs?: number;
  log: Logger;
  pageoutHelper?: string;
  workingSetHelper?: string;
}

export interface VmOwnerEvents {
  /** QEMU went away on its own while the VM was running (guest poweroff: code 0; crash: non-zero). */
  exit: [code: number];
}

/**
 * The long-lived owner of one QEMU VM (`doze vm run`): what Nomad runs as the task,
 * so QEMU may exit while the VM sleeps and be restored behind it (docs/design.md,
 * "Nomad supervises a task's process").
 *
 * Sleep (snapshot, device state only): QMP `stop`, capability `x-ignore-shared`,
 * `migrate` to `exec:cat > <state dir>/device.state.part` (QEMU 7.2 has no `file:`
 * URI), QEMU quits, the device state is made durable and renamed, and the RAM
 * file (guest RAM, shared, on disk) is written back and dropped from the page
 * cache (doze-pageout), so no memory stays behind. Wake: a QEMU with the same
 * command line plus `-incoming defer` (or one pre-spawned while asleep),
 * `migrate-incoming exec:cat <device.state>`, `cont`; guest RAM faults back
 * lazily from the file. The tap device and its neighbour entry live outside
 * QEMU and survive.
 */
export class VmOwner extends EventEmitter<VmOwnerEvents> {
  readonly layout: VmLayout;
  readonly argv: string[];
  readonly ramBytes: number;
  readonly snapshot: SnapshotKind;
  private currentState: OwnerState = 'starting';
  private qemu: QemuProcess | undefined;
  private readonly launcher: QemuLauncher;
  private readonly receivers: ReceiverStarter;
  /** Only with `--prespawn`. */
  private readonly prespawned: PrespawnedReceiver | undefined;
  private control: OwnerControlServer | undefined;
  private readonly queue = new SerialQueue();
  private stopping: Promise<void> | undefined;
  lastSleep: SleepTimings | undefined;
  lastWake: WakeTimings | undefined;

  constructor(private readonly options: VmOwnerOptions) {
    super();
    this.layout = vmLayout(options.stateDir);
    this.snapshot = options.snapshot ?? 'device';
    const composed = composeCommandLine(options.qemuArgv, this.layout, this.snapshot);
    this.argv = composed.argv;
    this.ramBytes = composed.ramBytes;
    this.launcher = new QemuLauncher(this.argv, this.layout.qmp);
    this.receivers = {
      spawn: () => this.launcher.receiver(),
      prepare: (proc, deadlineMs) => prepareReceiver(proc, this.layout.qmp, this.snapshot, deadlineMs),
    };
    if (options.prespawn) this.prespawned = new PrespawnedReceiver(this.receivers, options.log);
  }

  get state(): OwnerState {
    return this.currentState;
  }

  get isStopping(): boolean {
    return this.stopping !== undefined;
  }

  status(): OwnerStatus {
    return {
      state: this.currentState,
      qemuPid: this.qemu?.alive ? this.qemu.pid : null,
      receiverPid: this.prespawned?.readyPid ?? null,
      prespawn: this.options.prespawn === true,
      lastSleep: this.lastSleep ?? null,
      lastWake: this.lastWake ?? null,
    };
  }

  /**
   * Prepares the state directory, opens the control socket and boots the VM, or,
   * when the directory holds a snapshot a previous owner left asleep for the same
   * command line, comes up sleeping (the next wake restores it).
   */
  async start(): Promise<void> {
    const { stateDir } = this.layout;
    try {
      await stat(stateDir);
    } catch {
      await mkdir(stateDir, { recursive: true, mode: 0o700 });
    }
    const fs = await inMemoryFilesystem(stateDir);
    if (fs) throw new ConfigError(`state directory ${stateDir} is on ${fs}: guest RAM there would never leave memory; use a directory on disk`);
    if (this.options.memoryCgroup) {
      const cg = await locateMemoryCgroup(this.options.memoryCgroup);
      if (!cg) throw new ConfigError(`memory cgroup ${JSON.stringify(this.options.memoryCgroup)} not found (looked under the v1 memory hierarchy and cgroup2)`);
      this.launcher.cgroupProcs = join(cg.dir, 'cgroup.procs');
    }
    const adopted = await adoptPreviousOwner(this.layout, { argv: this.argv, snapshot: this.snapshot, ramBytes: this.ramBytes, log: this.options.log });
    this.control = await OwnerControlServer.listen(this.layout.control, this);
    if (adopted) {
      this.currentState = 'sleeping';
      this.options.log.info({ stateDir }, 'found the snapshot a previous owner left asleep: the next wake restores it');
      await this.writeHandle();
      this.prespawned?.spawn();
      return;
    }
    const proc = await this.launcher.boot();
    this.qemu = proc;
    this.watch(proc);
    await proc.connect(this.layout.qmp, BOOT_QMP_MS);
    this.currentState = 'running';
    await this.writeHandle();
    this.options.log.info({ qemuPid: proc.pid, stateDir }, 'VM started');
  }

  /** Puts the VM to sleep (idempotent); serialized with wakes. */
  sleep(deadlineMs: number): Promise<OwnerStatus> {
    return this.serial('doze vm sleep', deadlineMs, () => this.doSleep());
  }

  /** Wakes the VM (idempotent); serialized with sleeps. */
  wake(deadlineMs: number): Promise<OwnerStatus> {
    return this.serial('doze vm wake', deadlineMs, () => this.doWake(deadlineMs));
  }

  /**
   * Nomad's stop: a running VM is shut down gracefully within the deadline, a
   * sleeping one is discarded; no QEMU process and none of the owner's files stay.
   */
  shutdown(reason: string): Promise<void> {
    this.stopping ??= this.doShutdown(reason);
    return this.stopping;
  }

  /** A second stop signal: no more grace. */
  async hurry(): Promise<void> {
    await this.launcher.killAll();
  }

  /**
   * Runs `op` after the operations before it have really ended, within the caller's deadline. The
   * queue waits for the operation, not for its caller: a save that outlives its caller's deadline
   * still ends before the wake sent next starts (which then restores the saved VM, instead of
   * finding it half saved and refusing). An operation whose caller gave up before its turn never starts.
   */
  private serial<T>(what: string, deadlineMs: number, op: () => Promise<T>): Promise<T> {
    return withDeadline(what, deadlineMs, (signal) =>
      this.queue.run(() => {
        signal.throwIfAborted();
        return op();
      }),
    );
  }

  private async doSleep(): Promise<OwnerStatus> {
    if (this.currentState === 'sleeping') return this.status();
    if (this.currentState !== 'running' || !this.qemu?.qmp) throw new OwnerError('E_OWNER_STATE', `cannot sleep while ${this.currentState}`);
    const proc = this.qemu;
    const qmp = this.qemu.qmp;
    const part = `${this.layout.deviceState}.part`;
    const started = performance.now();
    const since = () => performance.now() - started;
    this.currentState = 'saving';
    const stderrMark = proc.stderrSeen;
    let stopMs = 0;
    let savedMs = 0;
    try {
      await qmp.execute('stop', undefined, QMP_MS);
      stopMs = since();
      await saveSnapshot(proc, this.layout, this.snapshot, part);
      savedMs = since();
    } catch (error) {
      if (this.stopping) throw error;
      if (proc.alive) {
        await resumeAfterFailedSave(qmp);
        this.currentState = 'running';
        const detail = await saveFailureDetail(proc, stderrMark, this.layout.stateDir, part, this.lastSleep?.stateBytes ?? 0);
        throw new OwnerError('E_SLEEP', `saving device state failed, the VM keeps running: ${messageOf(error)}${detail}`, { cause: error });
      }
      this.fail(proc);
      throw error;
    }
    // From here the snapshot is complete: QEMU may go.
    await proc.quit(QUIT_MS);
    this.qemu = undefined;
    const exitedMs = since();
    const stateBytes = await commitSnapshot(part, this.layout);
    if (this.readsAhead) {
      // What the guest had in memory, read back first on wake (before the cache is dropped below).
      await saveWorkingSet(this.layout.ramFile, this.layout.workingSet, 10_000).catch(async (error: unknown) => {
        this.options.log.warn({ err: messageOf(error) }, 'no working set recorded: the next wake faults guest RAM in from disk as it goes');
        await rm(this.layout.workingSet, { force: true });
      });
    }
    // No process maps these any more (PID 0): write back and drop from the page cache the guest
    // RAM, the device state and what QEMU read (kernel, initrd, disk images), all charged to the VM.
    const drops = [...(this.snapshot === 'device' ? [this.layout.ramFile] : []), this.layout.deviceState, ...commandLineInputFiles(this.argv)];
    await Promise.all(drops.map((file) => pageoutFile(file, 0, 10_000, this.options.pageoutHelper)));
    this.lastSleep = { stopMs, savedMs, exitedMs, totalMs: since(), stateBytes };
    this.currentState = 'sleeping';
    await this.writeHandle();
    this.options.log.info({ ...this.lastSleep }, 'VM asleep: QEMU exited, device state saved, guest RAM dropped from memory');
    this.prespawned?.spawn();
    return this.status();
  }

  private async doWake(deadlineMs: number): Promise<OwnerStatus> {
    if (this.currentState === 'running') return this.status();
    if (this.currentState !== 'sleeping') throw new OwnerError('E_OWNER_STATE', `cannot wake while ${this.currentState}`);
    const started = performance.now();
    const since = () => performance.now() - started;
    this.currentState = 'restoring';
    if (this.readsAhead) loadWorkingSet(this.layout.ramFile, this.layout.workingSet, { cgroupProcs: this.launcher.cgroupProcs, helper: this.options.workingSetHelper, log: this.options.log });
    let proc = await this.prespawned?.take();
    let prespawned = proc !== undefined;
    let qmpMs = 0;
    let loadedMs = 0;
    let contMs = 0;
    try {
      if (!proc) {
        proc = this.receivers.spawn();
        await this.receivers.prepare(proc, deadlineMs);
      }
      qmpMs = since();
      let qmp = proc.qmp!;
      try {
        await startIncoming(qmp, this.layout.deviceState);
      } catch (error) {
        // A pre-spawned QEMU can die (or lose its monitor) between the check and its use:
        // the snapshot is untouched, so start a fresh receiver once rather than fail the wake.
        if (!prespawned) throw error;
        this.options.log.warn({ err: messageOf(error) }, 'the pre-spawned QEMU did not take the snapshot; starting a new one');
        await proc.kill();
        prespawned = false;
        proc = this.receivers.spawn();
        await this.receivers.prepare(proc, deadlineMs);
        qmp = proc.qmp!;
        await startIncoming(qmp, this.layout.deviceState);
      }
      const status = await incomingDone(proc);
      loadedMs = since();
      if (status !== 'running') await qmp.execute('cont', undefined, QMP_MS);
      contMs = since();
    } catch (error) {
      if (proc) await proc.kill();
      if (!this.stopping) this.currentState = 'sleeping';
      throw new OwnerError('E_WAKE', `restoring the VM failed, the snapshot is kept: ${messageOf(error)}${proc && !proc.alive && proc.stderr ? ` (${proc.stderr.slice(-300)})` : ''}`, { cause: error });
    }
    if (this.stopping) {
      await proc.kill();
      throw new OwnerError('E_OWNER_STOPPING', 'doze vm is stopping');
    }
    this.qemu = proc;
    this.currentState = 'running';
    this.lastWake = { prespawned, qmpMs, loadedMs, contMs };
    this.watch(proc);
    // The snapshot is stale from the first instruction the guest runs: never restore it again.
    await rm(this.layout.deviceState, { force: true });
    await this.writeHandle();
    this.options.log.info({ qemuPid: proc.pid, ...this.lastWake }, 'VM restored and running');
    return this.status();
  }

  private watch(proc: QemuProcess): void {
    void proc.exited.then(({ code }) => {
      if (proc.expectedExit || this.stopping || proc !== this.qemu) return;
      this.options.log.error({ qemuPid: proc.pid, code }, `QEMU exited while the VM was ${this.currentState}: ${proc.describeExit()}`);
      if (this.currentState === 'running') this.fail(proc);
    });
  }

  /** QEMU is gone and nothing can bring the VM back: the owner exits, Nomad decides what next. */
  private fail(proc: QemuProcess): void {
    this.currentState = 'failed';
    this.emit('exit', proc.exit?.code === 0 ? 0 : 1);
  }

  private get readsAhead(): boolean {
    return this.snapshot === 'device' && this.options.readahead === true;
  }

  private async doShutdown(reason: string): Promise<void> {
    const was = this.currentState;
    this.currentState = 'stopping';
    const stopTimeoutMs = this.options.stopTimeoutMs ?? 4000;
    this.options.log.info({ reason, was }, 'stopping the VM');
    await this.prespawned?.discard();
    const proc = this.qemu;
    if (proc?.alive && was === 'running' && proc.qmp?.isOpen) {
      // Graceful: ACPI power button (a guest without a handler ignores it) or quit, then force.
      proc.expectedExit = true;
      const graceMs = Math.max(0, stopTimeoutMs - QUIT_MS - 500);
      if ((this.options.shutdown ?? 'powerdown') === 'powerdown' && graceMs > 0) {
        await proc.qmp.execute('system_powerdown', undefined, QMP_MS).catch(() => undefined);
        await Promise.race([proc.exited, delay(graceMs)]);
      }
      await proc.quit(QUIT_MS);
    }
    // Whatever else is alive (a sleep or wake under way, a receiver): no more grace.
    await this.launcher.killAll();
    await this.control?.close();
    await removeStateDir(this.layout);
  }

  private async writeHandle(): Promise<void> {
    await writeVmHandle(this.layout, { commandLine: this.argv, state: this.currentState, qemuPid: this.qemu?.alive ? this.qemu.pid : null });
  }
}
