import { readdir, readFile } from 'node:fs/promises';

/**
 * Kills `bpftool … event_pipe pinned PATH` readers left by an agent that was
 * SIGKILLed: they hold the perf buffers until their next write fails.
 * Returns how many were found.
 */
export async function reapStaleReaders(pinnedPath: string): Promise<number> {
  let reaped = 0;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    const args = cmdline.split('\0');
    if (args.some((a) => a.endsWith('bpftool')) && args.includes('event_pipe') && args.includes(pinnedPath)) {
      try {
        process.kill(Number(entry), 'SIGKILL');
        reaped++;
      } catch {
        // exited meanwhile
      }
    }
  }
  return reaped;
}
