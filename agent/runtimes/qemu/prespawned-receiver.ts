import { messageOf } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { BOOT_QMP_MS, type QemuProcess } from './qemu-process.js';

/** How a receiving QEMU (`-incoming defer`) is started and made ready for a snapshot. */
export interface ReceiverStarter {
  spawn(): QemuProcess;
  prepare(proc: QemuProcess, deadlineMs: number): Promise<void>;
}

/**
 * `--prespawn`: while the VM sleeps, a receiving QEMU is started and waits with
 * `-incoming defer`, so a wake skips QEMU's start (and the tap has a reader, so no
 * SYN is lost) for about 50 MiB held. One at a time; a wake takes it, and a
 * receiver that failed or died is simply not there: the wake starts its own.
 */
export class PrespawnedReceiver {
  private proc: QemuProcess | undefined;
  private ready: Promise<QemuProcess | undefined> | undefined;
  /** The receiver answered QMP and waits for a device state. */
  private isReady = false;

  constructor(private readonly starter: ReceiverStarter, private readonly log: Logger) {}

  /** The waiting receiver's pid once it is ready, else null (status). */
  get readyPid(): number | null {
    return this.proc?.alive && this.isReady ? this.proc.pid : null;
  }

  /** Starts a receiver in the background; failures are logged, never thrown. */
  spawn(): void {
    const proc = this.starter.spawn();
    this.proc = proc;
    void proc.exited.then(() => {
      if (this.proc !== proc) return;
      this.forget();
      if (!proc.expectedExit) this.log.warn({ qemuPid: proc.pid }, `the pre-spawned QEMU went away; the next wake starts a new one: ${proc.describeExit()}`);
    });
    this.isReady = false;
    this.ready = this.starter.prepare(proc, BOOT_QMP_MS).then(
      () => {
        if (this.proc === proc) this.isReady = true;
        return proc;
      },
      async (error: unknown) => {
        this.log.warn({ err: messageOf(error) }, 'pre-spawning a QEMU failed; the next wake starts a new one');
        await proc.kill();
        return undefined;
      },
    );
  }

  /** Hands the receiver over (waiting for it to be ready), or undefined when there is none that can take a snapshot. */
  async take(): Promise<QemuProcess | undefined> {
    const ready = this.ready;
    this.forget();
    const proc = ready ? await ready : undefined;
    return proc?.alive && proc.qmp?.isOpen ? proc : undefined;
  }

  /** Kills the waiting receiver, if any (the owner stops). */
  async discard(): Promise<void> {
    const proc = this.proc;
    this.forget();
    await proc?.kill();
  }

  private forget(): void {
    this.proc = undefined;
    this.ready = undefined;
  }
}
