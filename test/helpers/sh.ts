import { execFile } from 'node:child_process';

/** Runs a command, rejecting with its stderr; for test setup and teardown. */
export function sh(file: string, args: string[], timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${file} ${args.join(' ')}: ${stderr.trim() || error.message}`));
      else resolve(stdout);
    });
  });
}

export async function shQuiet(file: string, args: string[]): Promise<void> {
  await sh(file, args).catch(() => undefined);
}
