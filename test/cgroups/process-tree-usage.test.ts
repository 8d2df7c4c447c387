import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ProcessTreeUsage } from '../../agent/cgroups/process-tree-usage.js';
import { createFreezerCgroup } from '../helpers/cgroup.js';
import { tempDir } from '../helpers/temp-dir.js';
import { rootTest } from '../helpers/root.js';

/** A fake /proc and cgroup: processes with (ppid, own + reaped ticks, io), as the kernel reports them. */
function fakeProc(dir: string) {
  const proc = join(dir, 'proc');
  const cgroup = join(dir, 'cgroup');
  mkdirSync(cgroup, { recursive: true });
  const procs = new Set<number>();
  writeFileSync(join(cgroup, 'cgroup.procs'), '');
  const sync = () => writeFileSync(join(cgroup, 'cgroup.procs'), [...procs].map((p) => `${p}\n`).join(''));
  const write = (pid: number, p: { ppid: number; utime: number; cutime?: number; io?: number; state?: string; start?: number }) => {
    mkdirSync(join(proc, String(pid)), { recursive: true });
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime prio nice threads itreal starttime
    writeFileSync(join(proc, String(pid), 'stat'), `${pid} (a b) ${p.state ?? 'S'} ${p.ppid} 0 0 0 0 0 0 0 0 0 ${p.utime} 0 ${p.cutime ?? 0} 0 20 0 1 0 ${p.start ?? pid}\n`);
    writeFileSync(join(proc, String(pid), 'io'), `rchar: 0\nread_bytes: ${p.io ?? 0}\nwrite_bytes: 0\n`);
  };
  return {
    tracker: new ProcessTreeUsage(cgroup, proc),
    run(pid: number, p: Parameters<typeof write>[1]) {
      write(pid, p);
      procs.add(pid);
      sync();
    },
    /** Exited: out of cgroup.procs, its /proc entry a zombie until reaped. */
    exit(pid: number, p: Parameters<typeof write>[1]) {
      write(pid, { ...p, state: 'Z' });
      procs.delete(pid);
      sync();
    },
    reap(pid: number) {
      rmSync(join(proc, String(pid)), { recursive: true });
      procs.delete(pid);
      sync();
    },
  };
}

const ticksMs = (r: ReturnType<ProcessTreeUsage['read']>) => (r.ok ? r.cpuUs / 1000 : NaN);

test('sums its processes from the first reading on, counting only what they use after it', async (t) => {
  const f = fakeProc(await tempDir(t, 'proc'));
  f.run(10, { ppid: 1, utime: 500 });
  f.run(11, { ppid: 10, utime: 300 });
  t.is(ticksMs(f.tracker.read()), 0, 'the first reading is the baseline');
  f.run(10, { ppid: 1, utime: 510 });
  f.run(11, { ppid: 10, utime: 305 });
  const r = f.tracker.read();
  t.like(r, { ok: true, processes: 2 });
  t.is(ticksMs(r), 150, '15 ticks = 150 ms');
});

test('a child forked inside counts whole; a process moved in from outside counts from when it was seen', async (t) => {
  const f = fakeProc(await tempDir(t, 'proc'));
  f.run(10, { ppid: 1, utime: 0 });
  f.tracker.read();
  f.run(12, { ppid: 10, utime: 7 }); // forked by 10 since the last read
  f.run(20, { ppid: 999, utime: 4000 }); // `nomad alloc exec`: its parent is the executor, outside
  t.is(ticksMs(f.tracker.read()), 70);
  f.run(20, { ppid: 999, utime: 4002 });
  t.is(ticksMs(f.tracker.read()), 90);
});

test('a child that exits and is reaped by its parent is counted once, and the total never goes backwards', async (t) => {
  const f = fakeProc(await tempDir(t, 'proc'));
  f.run(10, { ppid: 1, utime: 0 });
  f.run(11, { ppid: 10, utime: 0 });
  f.tracker.read();
  f.run(11, { ppid: 10, utime: 100 });
  t.is(ticksMs(f.tracker.read()), 1000);
  // It used 20 more ticks, exited (a zombie, gone from cgroup.procs), not yet waited for.
  f.exit(11, { ppid: 10, utime: 120 });
  t.is(ticksMs(f.tracker.read()), 1200, 'a zombie is still read');
  // Its parent waits: the child's whole 120 ticks move into the parent's cutime.
  f.reap(11);
  f.run(10, { ppid: 1, utime: 0, cutime: 120 });
  t.is(ticksMs(f.tracker.read()), 1200, 'not counted twice');
  f.run(10, { ppid: 1, utime: 30, cutime: 120 });
  t.is(ticksMs(f.tracker.read()), 1500, 'the parent\'s own work counts again');
});

test('a child reaped between two reads: its last stretch comes in through its parent, what was counted is not counted twice', async (t) => {
  const f = fakeProc(await tempDir(t, 'proc'));
  f.run(10, { ppid: 1, utime: 0 });
  f.run(11, { ppid: 10, utime: 0 });
  f.tracker.read();
  f.run(11, { ppid: 10, utime: 50, io: 1000 });
  t.is(ticksMs(f.tracker.read()), 500);
  f.reap(11); // ran to 80 ticks, 3000 bytes, and was waited for before the next read
  f.run(10, { ppid: 1, utime: 0, cutime: 80, io: 3000 });
  const r = f.tracker.read();
  t.is(ticksMs(r), 800);
  t.like(r, { ioBytes: 3000 });
});

test('a child and its parent both reaped between two reads (timeout → command): the grandparent\'s growth is not counted twice', async (t) => {
  const f = fakeProc(await tempDir(t, 'proc'));
  f.run(10, { ppid: 1, utime: 0 });
  f.run(11, { ppid: 10, utime: 0 });
  f.run(12, { ppid: 11, utime: 0 });
  f.tracker.read();
  f.run(11, { ppid: 10, utime: 1 });
  f.run(12, { ppid: 11, utime: 25 });
  t.is(ticksMs(f.tracker.read()), 260);
  f.reap(12);
  f.reap(11); // 12 ran to 30 and 11 to 2: 11 waited for 12, 10 waited for 11
  f.run(10, { ppid: 1, utime: 0, cutime: 32 });
  t.is(ticksMs(f.tracker.read()), 320);
});

test('a child whose parent is outside the cgroup keeps what was counted when it goes', async (t) => {
  const f = fakeProc(await tempDir(t, 'proc'));
  f.run(10, { ppid: 1, utime: 0 });
  f.run(20, { ppid: 999, utime: 0 });
  f.tracker.read();
  f.run(20, { ppid: 999, utime: 40 });
  t.is(ticksMs(f.tracker.read()), 400);
  f.reap(20);
  t.is(ticksMs(f.tracker.read()), 400, 'never backwards');
});

test('an empty cgroup reads as no processes; a missing one as gone', async (t) => {
  const f = fakeProc(await tempDir(t, 'proc'));
  t.deepEqual(f.tracker.read(), { ok: false, reason: 'no-processes' });
  t.deepEqual(new ProcessTreeUsage('/nonexistent/dz-cgroup').read(), { ok: false, reason: 'cgroup-gone' });
});

rootTest.serial('real processes in a freezer cgroup: a shell whose children compute is counted once (what the shell reaped, exactly), never backwards', async (t) => {
  const cg = await createFreezerCgroup(t);
  // Two children compute ~300 ms of wall time each (less CPU under load) and are waited for.
  const child = spawn('sh', ['-c', `echo $$ > ${cg.procsFile}; read go; for i in 1 2; do timeout 0.3 sh -c 'while :; do :; done'; done; echo done; sleep 30`], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => child.kill('SIGKILL'));
  const tracker = new ProcessTreeUsage(cg.dir);
  const until = Date.now() + 2000;
  while (!tracker.read().ok && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10));
  // The truth: the shell's own figure (utime + stime + what it reaped), from the tracker's baseline on.
  const shellTicks = () => {
    const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  };
  const before = shellTicks();
  child.stdin!.write('go\n');
  const readings: number[] = [];
  let finished = false;
  child.stdout!.once('data', () => (finished = true));
  const deadline = Date.now() + 5000;
  while (!finished && Date.now() < deadline) {
    const r = tracker.read();
    if (r.ok) readings.push(r.cpuUs / 1000);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  t.true(finished, 'the children finished');
  const last = tracker.read();
  t.true(last.ok);
  const total = last.ok ? last.cpuUs / 1000 : 0;
  const truth = (shellTicks() - before) * 10;
  t.true(readings.every((v, i) => i === 0 || v >= readings[i - 1]!), `never backwards: ${readings.join(' ')}`);
  t.true(truth >= 50, `the children computed (${truth} ms)`);
  t.true(Math.abs(total - truth) <= 20, `counted ${total} ms, the shell reaped ${truth} ms: once, not twice`);
});
