import { readFileSync } from 'node:fs';

/** One line of /proc/PID/cgroup: `hierarchy-id:controllers:path` (cgroup2's is `0::path`). */
export interface ProcessCgroup {
  hierarchy: number;
  controllers: string[];
  path: string;
}

/** The cgroups a process is in, one per hierarchy; undefined once it is gone. */
export function cgroupsOfProcess(pid: number | string): ProcessCgroup[] | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  } catch {
    return undefined;
  }
  return text.split('\n').flatMap((line) => {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    return m ? [{ hierarchy: Number(m[1]), controllers: m[2] ? m[2].split(',') : [], path: m[3]! }] : [];
  });
}
