import { execFile } from 'node:child_process';
import { DozeError } from '../errors.js';

export interface ExecResult {
  stdout: string;
  stderr: string;
}

/** Runs a command with a deadline; the error names the command, its exit and its stderr. */
export function run(file: string, args: string[], options: { timeoutMs?: number; allowFailure?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<ExecResult & { code: number }> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: options.timeoutMs ?? 10_000, maxBuffer: 64 * 1024 * 1024, env: options.env }, (error, stdout, stderr) => {
      if (error) {
        const errno = (error as NodeJS.ErrnoException).code;
        if (errno === 'ENOENT') {
          reject(new DozeError('E_MISSING_TOOL', `${file} is not installed (${PACKAGE_OF[file] ? `Debian package ${PACKAGE_OF[file]}` : 'not on PATH'})`, { cause: error }));
          return;
        }
        const code = typeof error.code === 'number' ? error.code : -1;
        if (options.allowFailure) {
          resolve({ stdout, stderr, code });
          return;
        }
        reject(new DozeError('E_COMMAND', `${file} ${args.join(' ')} failed (exit ${code}): ${stderr.trim() || error.message}`, { cause: error }));
        return;
      }
      resolve({ stdout, stderr, code: 0 });
    });
  });
}

/** Which Debian package provides each tool the agent shells out to. */
export const PACKAGE_OF: Record<string, string> = {
  tc: 'iproute2',
  ip: 'iproute2',
  bpftool: 'bpftool',
  stdbuf: 'coreutils',
  iptables: 'iptables',
  'iptables-save': 'iptables',
  getent: 'libc-bin',
};
