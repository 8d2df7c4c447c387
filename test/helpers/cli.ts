import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));

/** Spawns the doze CLI from source (tsx), so tests do not depend on a prior build. */
export function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', 'cli.ts', ...args], {
    cwd: REPO,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 20_000): Promise<CliResult> {
  const child = spawnCli(args, env);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`doze ${args.join(' ')} did not exit within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Resolves when the agent's JSON log shows `pattern` (in what it writes from now on). */
export function logShows(agent: ChildProcess, pattern: RegExp, timeoutMs = 20_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const stdout = agent.stdout!.setEncoding('utf8');
    const onData = (chunk: string) => {
      buffered += chunk;
      if (pattern.test(buffered)) {
        clearTimeout(timer);
        stdout.off('data', onData);
        resolve();
      }
    };
    const timer = setTimeout(() => {
      stdout.off('data', onData);
      reject(new Error(`agent log never matched ${pattern}:\n${buffered.slice(-2000)}`));
    }, timeoutMs);
    stdout.on('data', onData);
  });
}

/** An agent started from `config` (spawnCli), SIGKILLed once it has put something to sleep: a crash with a sleeper left behind. */
export async function agentCrashedAsleep(teardown: { teardown(fn: () => void): void }, config: string): Promise<void> {
  const agent = spawnCli(['agent', '--config', config]);
  teardown.teardown(() => agent.kill('SIGKILL'));
  await logShows(agent, /"to":"sleeping"/);
  const killed = new Promise((resolve) => agent.on('exit', resolve));
  agent.kill('SIGKILL');
  await killed;
}

/** The exit code of an agent asked to stop with SIGTERM (0: it woke everything and removed what it made). */
export function stopAgent(agent: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((resolve) => agent.on('exit', resolve));
  agent.kill('SIGTERM');
  return exited;
}
