import { execFile, type ExecFileException } from 'node:child_process';
import type { z } from 'zod';
import { DeadlineError, DozeError } from '../shared/errors.js';
import { summarizeIssues } from '../shared/zod-issues.js';

/*
 * The one way doze runs a short command (ip, tc, iptables, getent, bpftool...): always with a
 * deadline, and every failure names the command. A command that outlives its deadline is killed,
 * so a wedged tool can never hold up a sleep, a wake or the agent's exit.
 * Long-running children (doze-maps, QEMU, the reclaim helpers) are spawned where they are owned.
 */

/** The deadline of a command whose caller names none: the tools doze runs answer in milliseconds. */
export const DEFAULT_DEADLINE_MS = 10_000;

export interface RunOptions {
  /** How long the command may run before it is killed; positive and finite (there is no "no deadline"). */
  timeoutMs?: number;
  /** Resolve with the exit code instead of rejecting on a non-zero exit. A missing tool or a missed deadline still rejects. */
  allowFailure?: boolean;
  env?: NodeJS.ProcessEnv;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** The exit code; -1 when the command did not exit on its own (a signal, output over the buffer). */
  code: number;
}

/** Runs a command with a deadline; the error names the command, its exit and its stderr. */
export function run(file: string, args: string[], options: RunOptions = {}): Promise<ExecResult> {
  const deadlineMs = options.timeoutMs ?? DEFAULT_DEADLINE_MS;
  const command = [file, ...args].join(' ');
  if (!Number.isFinite(deadlineMs) || deadlineMs <= 0) {
    return Promise.reject(new RangeError(`${command}: a command's deadline must be a positive number of ms, not ${deadlineMs}`));
  }
  return new Promise((resolve, reject) => {
    // SIGKILL: a tool stuck in the kernel or on a lock may ignore SIGTERM, and the deadline must hold.
    const execOptions = { timeout: deadlineMs, killSignal: 'SIGKILL' as const, maxBuffer: 64 * 1024 * 1024, env: options.env };
    execFile(file, args, execOptions, (error, stdout, stderr) => {
      if (!error) {
        resolve({ stdout, stderr, code: 0 });
        return;
      }
      if (error.code === 'ENOENT') {
        reject(new DozeError('E_MISSING_TOOL', `${file} is not installed (${PACKAGE_OF[file] ? `Debian package ${PACKAGE_OF[file]}` : 'not on PATH'})`, { cause: error }));
      } else if (error.killed && error.signal === 'SIGKILL') {
        reject(new DeadlineError(command, deadlineMs));
      } else if (options.allowFailure) {
        resolve({ stdout, stderr, code: exitCode(error) });
      } else {
        const how = typeof error.code === 'number' ? `exit ${error.code}` : error.signal ? `killed by ${error.signal}` : 'exit -1';
        reject(new DozeError('E_COMMAND', `${command} failed (${how}): ${stderr.trim() || error.message}`, { cause: error }));
      }
    });
  });
}

function exitCode(error: ExecFileException): number {
  return typeof error.code === 'number' ? error.code : -1;
}

export interface RunJsonOptions extends Omit<RunOptions, 'allowFailure'> {
  /** What an empty output stands for (older iproute2 prints nothing, not "[]", for an empty list); without it, empty output is an error. */
  emptyOutput?: unknown;
}

/**
 * Runs a command that prints JSON (`ip -j`, `tc -j`) and validates it with `schema`: what the
 * caller gets is what the schema says, never a cast. Output that is not JSON, or not the expected
 * JSON, rejects naming the command and what was expected. With `allowFailure`, a non-zero exit
 * resolves to undefined (e.g. `tc filter show` on a device without clsact).
 */
export async function runJson<S extends z.ZodType>(file: string, args: string[], schema: S, options: RunJsonOptions & { allowFailure: true }): Promise<z.output<S> | undefined>;
export async function runJson<S extends z.ZodType>(file: string, args: string[], schema: S, options?: RunJsonOptions & { allowFailure?: false }): Promise<z.output<S>>;
export async function runJson<S extends z.ZodType>(file: string, args: string[], schema: S, options: RunOptions & RunJsonOptions = {}): Promise<z.output<S> | undefined> {
  const { stdout, code } = await run(file, args, options);
  if (code !== 0) return undefined;
  return parseJsonOutput([file, ...args].join(' '), stdout, schema, options.emptyOutput);
}

function parseJsonOutput<S extends z.ZodType>(command: string, stdout: string, schema: S, emptyOutput: unknown): z.output<S> {
  let raw: unknown = emptyOutput;
  if (stdout.trim() !== '') {
    try {
      raw = JSON.parse(stdout);
    } catch (error) {
      throw new DozeError('E_COMMAND', `${command} printed something that is not JSON: ${JSON.stringify(stdout.slice(0, 80))}`, { cause: error });
    }
  } else if (emptyOutput === undefined) {
    throw new DozeError('E_COMMAND', `${command} printed nothing; expected JSON`);
  }
  const parsed = schema.safeParse(raw);
  if (parsed.success) return parsed.data;
  throw new DozeError('E_COMMAND', `${command} printed unexpected JSON: ${summarizeIssues(parsed.error)}`);
}

/** Which Debian package provides each tool the agent shells out to. */
export const PACKAGE_OF: Record<string, string> = {
  tc: 'iproute2',
  ip: 'iproute2',
  bpftool: 'bpftool',
  stdbuf: 'coreutils',
  iptables: 'iptables',
  'iptables-save': 'iptables',
  nsenter: 'util-linux',
  getent: 'libc-bin',
};
