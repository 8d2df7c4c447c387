import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ConfigError, DozeError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { readStatFields } from '../process/proc-stat.js';
import { defaultHelperPath } from './map-client.js';

/** Where each agent says who it is, so a second one can name it (best effort: /run may not be shared). */
export const OWNER_INFO_DIR = '/run/doze';
const LOCK_ANSWER_MS = 3000;
const BUSY_RETRIES = 10;
const BUSY_RETRY_MS = 50;

const ownerInfoSchema = z.looseObject({ pid: z.number(), listen: z.string(), bpffs: z.string(), chainPrefix: z.string() });
export type OwnerInfo = z.infer<typeof ownerInfoSchema>;

/**
 * One agent per bpffs: the pinned maps and the wake-event slots in `<bpffs>/tc/globals` are
 * shared by every program attached from there, so a second agent would steal the first one's
 * wake events and remove its pins on exit, stranding its sleepers. The lock is an flock(2) on
 * that directory, held by a `doze-maps lock` child: the kernel releases it when the agent dies
 * (the child dies with it: PR_SET_PDEATHSIG and stdin EOF), so a restarted agent takes it again
 * and adopts what the crashed one left, while a live one is never shared.
 */
export class BpffsLock {
  private released = false;
  private constructor(
    private child: ChildProcessWithoutNullStreams,
    private readonly dir: string,
    private info: OwnerInfo,
    private readonly log: Logger,
    private readonly helperPath: string,
    private readonly infoDir: string,
  ) {
    this.watch(child);
  }

  /** Takes the lock before the agent touches anything; a ConfigError naming the running agent when another holds it. */
  static async acquire(options: { bpffs: string; listen: string; chainPrefix: string; log: Logger; helperPath?: string; infoDir?: string }): Promise<BpffsLock> {
    const dir = join(options.bpffs, 'tc', 'globals');
    const helperPath = options.helperPath ?? defaultHelperPath();
    const infoDir = options.infoDir ?? OWNER_INFO_DIR;
    try {
      await mkdir(dir, { recursive: true });
    } catch (error) {
      throw new ConfigError(`bpffs ${options.bpffs}: cannot create ${dir}: ${(error as NodeJS.ErrnoException).code ?? String(error)} (is a bpf filesystem mounted there? mount -t bpf bpf ${options.bpffs})`, { cause: error });
    }
    // A SIGKILLed agent's holder dies a moment after it (its death signal): give it that moment.
    let { child, answer } = await takeLock(helperPath, dir);
    for (let tries = 0; answer === 'busy' && tries < BUSY_RETRIES; tries++) {
      await new Promise((resolve) => setTimeout(resolve, BUSY_RETRY_MS));
      ({ child, answer } = await takeLock(helperPath, dir));
    }
    if (answer === 'busy') {
      const holder = await describeHolder(dir, infoDir);
      throw new ConfigError(
        `another doze agent (${holder}) owns the pinned maps in ${dir}: two agents on one bpffs would take each other's wake events. ` +
          `Stop that agent first, or run this one beside it on its own bpffs mount and chain prefix ` +
          `(mount -t bpf bpf /run/doze-2/bpffs; then --bpffs /run/doze-2/bpffs --chain-prefix DOZE2, or "bpffs" and "netfilter.chainPrefix" in the config)`,
      );
    }
    const info: OwnerInfo = { pid: process.pid, listen: options.listen, bpffs: options.bpffs, chainPrefix: options.chainPrefix };
    const lock = new BpffsLock(child, dir, info, options.log, helperPath, infoDir);
    await lock.writeInfo();
    return lock;
  }

  /** Records the address the status API really listens on (known once it is up). */
  async setListen(listen: string): Promise<void> {
    this.info = { ...this.info, listen };
    await this.writeInfo();
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    const exited = new Promise((resolve) => (this.child.exitCode !== null || this.child.signalCode !== null ? resolve(undefined) : this.child.once('exit', resolve)));
    this.child.stdin.end();
    await exited;
    await rm(this.infoPath, { force: true });
  }

  private get infoPath(): string {
    return join(this.infoDir, `agent-${process.pid}.json`);
  }

  private async writeInfo(): Promise<void> {
    try {
      await mkdir(this.infoDir, { recursive: true, mode: 0o755 });
      await writeFile(this.infoPath, `${JSON.stringify(this.info)}\n`, { mode: 0o644 });
    } catch (error) {
      this.log.debug({ err: String(error) }, 'could not write the owner info file (a second agent will name only the pid)');
    }
  }

  /** Someone killed the lock holder: take the lock again at once, or say loudly that it is lost. */
  private watch(child: ChildProcessWithoutNullStreams): void {
    child.once('exit', () => {
      if (this.released) return;
      void takeLock(this.helperPath, this.dir).then(
        ({ child: next, answer }) => {
          if (answer === 'locked' && !this.released) {
            this.child = next;
            this.watch(next);
            this.log.warn({ dir: this.dir }, 'the bpffs lock holder died; lock taken again');
          } else {
            next.stdin.end();
            this.log.error({ dir: this.dir }, 'the bpffs lock holder died and another process took the lock: two agents may now share these maps');
          }
        },
        (error: unknown) => this.log.error({ dir: this.dir, err: String(error) }, 'the bpffs lock holder died and the lock could not be taken again'),
      );
    });
  }
}

async function takeLock(helperPath: string, dir: string): Promise<{ child: ChildProcessWithoutNullStreams; answer: 'locked' | 'busy' }> {
  const child = spawn(helperPath, ['lock', dir], { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin.on('error', () => {}); // a dead holder surfaces through 'exit'
  const answer = await new Promise<'locked' | 'busy'>((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new DozeError('E_LOCK', `doze-maps lock ${dir} did not answer within ${LOCK_ANSWER_MS} ms`));
    }, LOCK_ANSWER_MS);
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      const line = out.split('\n')[0];
      if (out.includes('\n') && (line === 'locked' || line === 'busy')) {
        clearTimeout(timer);
        resolve(line);
      }
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(new DozeError('E_NOT_BUILT', `cannot run ${helperPath}: ${error.message} (run "make build")`, { cause: error }));
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (code === 3) resolve('busy');
      else reject(new DozeError('E_LOCK', `doze-maps lock ${dir} failed (exit ${code}): ${err.trim() || out.trim()}`));
    });
  });
  return { child, answer };
}

/** "pid 1234, listening on 127.0.0.1:7070", from /proc/locks and the holder's info file. */
export async function describeHolder(dir: string, infoDir = OWNER_INFO_DIR): Promise<string> {
  const holderPid = await lockHolderPid(dir).catch(() => undefined);
  if (holderPid === undefined) return 'pid unknown';
  // The holder is the agent's doze-maps child: its parent is the agent.
  const agentPid = await parentPid(holderPid).catch(() => undefined);
  if (agentPid === undefined) return `lock held by pid ${holderPid}`;
  try {
    const info = ownerInfoSchema.parse(JSON.parse(await readFile(join(infoDir, `agent-${agentPid}.json`), 'utf8')));
    return `pid ${info.pid}, listening on ${info.listen}, chain prefix ${info.chainPrefix}`;
  } catch {
    return `pid ${agentPid}`;
  }
}

async function lockHolderPid(dir: string): Promise<number | undefined> {
  const s = await stat(dir);
  // /proc/locks names a file as MAJOR:MINOR:INODE, device numbers in hex (fs/locks.c lock_get_status).
  const major = Math.floor(s.dev / 256) & 0xfff;
  const minor = (s.dev & 0xff) | ((Math.floor(s.dev / 4096) & 0xfff00));
  const id = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${s.ino}`;
  for (const line of (await readFile('/proc/locks', 'utf8')).split('\n')) {
    const fields = line.trim().split(/\s+/);
    // "1: FLOCK  ADVISORY  WRITE 26218 00:28:88241 0 EOF"
    if (fields[1] === 'FLOCK' && fields[5] === id) return Number(fields[4]);
  }
  return undefined;
}

async function parentPid(pid: number): Promise<number> {
  const ppid = Number((await readStatFields(pid))?.[1]);
  if (!Number.isInteger(ppid)) throw new DozeError('E_PROC', `cannot read the parent of pid ${pid}`);
  return ppid;
}
