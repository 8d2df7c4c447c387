import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { jobCommand } from '../../plugin/job-command.js';

export interface JobRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `doze job ARGS` in-process with its own environment (none of the caller's NOMAD_*). */
export async function runJob(args: string[], env: NodeJS.ProcessEnv = {}): Promise<JobRun> {
  let stdout = '';
  let stderr = '';
  const code = await jobCommand(args, { stdout: (s) => (stdout += s), stderr: (s) => (stderr += s), env });
  return { code, stdout, stderr };
}

/** Writes a jobspec into a per-test directory removed in teardown; returns its path. */
export async function jobFile(t: ExecutionContext, name: string, content: string | object): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dz-job-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, name);
  await writeFile(path, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  return path;
}
