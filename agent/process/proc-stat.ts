import { readFile } from 'node:fs/promises';

/**
 * The fields of /proc/PID/stat after the command name, which may hold spaces and parentheses
 * (so it is cut at the last ')'). Index 0 is the state (field 3 in proc(5)), 1 the parent pid,
 * 11 and 12 utime and stime, 19 the start time.
 */
export function statFieldsAfterName(text: string): string[] {
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/** A process's stat fields after its name, or undefined once it is gone. */
export async function readStatFields(pid: number): Promise<string[] | undefined> {
  try {
    return statFieldsAfterName(await readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}
