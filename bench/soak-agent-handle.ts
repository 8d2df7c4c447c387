/**
 * The bench's side of the soak's agent process (bench/soak-agent.mjs, the built agent): spawns it on a config,
 * turns its stdout into events, keeps its stderr's warnings, and stops it (SIGTERM: it wakes
 * every sleeper and removes what it made) at teardown.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { REPO } from '../test/helpers/cli.js';
import type { Teardown } from '../test/helpers/teardown.js';
import { parseSoakEvent, type SoakEvent } from './soak-events.js';

const ENTRY = fileURLToPath(new URL('./soak-agent.mjs', import.meta.url));
const STOP_MS = 60_000;

export interface SoakAgent {
  pid: number;
  address: string;
  /** Its whole log (stderr), kept after the run: artifacts/soak-agent.log. */
  logFile: string;
  /** Warning and error log lines by message, with the last one of each. */
  warnings: Map<string, { count: number; last: string }>;
  exited: Promise<number | null>;
}

/** `onEvent` sees every event from the first (transitions start before `ready` is read). */
export async function startSoakAgent(t: Teardown, dir: string, config: Record<string, unknown>, onEvent: (event: SoakEvent) => void, startMs = 120_000): Promise<SoakAgent> {
  if (!existsSync(join(REPO, 'dist/agent/agent.js'))) throw new Error('the soak runs the built agent: run make build first');
  const path = join(dir, 'doze.json');
  await writeFile(path, JSON.stringify(config));
  const child: ChildProcess = spawn(process.execPath, [ENTRY, path], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const kill = setTimeout(() => child.kill('SIGKILL'), STOP_MS);
    await exited;
    clearTimeout(kill);
  });
  const logFile = join(REPO, 'artifacts', 'soak-agent.log');
  await mkdir(dirname(logFile), { recursive: true });
  const log = createWriteStream(logFile);
  t.teardown(() => new Promise<void>((resolve) => log.end(() => resolve())));
  const events = new EventEmitter<{ event: [SoakEvent] }>();
  const warnings = new Map<string, { count: number; last: string }>();
  let stderr = '';
  readline.createInterface({ input: child.stderr! }).on('line', (line) => {
    log.write(`${line}\n`);
    stderr = (stderr + line + '\n').slice(-4000);
    let msg = line;
    try {
      const parsed = JSON.parse(line) as { msg?: unknown; level?: unknown };
      if (typeof parsed.level === 'number' && parsed.level < 40) return; // below warn
      if (typeof parsed.msg === 'string') msg = parsed.msg;
    } catch {
      // not a log line: keep it whole
    }
    const entry = warnings.get(msg) ?? { count: 0, last: '' };
    entry.count++;
    entry.last = line.slice(0, 400);
    warnings.set(msg, entry);
  });
  readline.createInterface({ input: child.stdout! }).on('line', (line) => {
    const event = parseSoakEvent(line);
    if (!event) return;
    onEvent(event);
    events.emit('event', event);
  });
  const ready = await new Promise<Extract<SoakEvent, { type: 'ready' }>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the soak's agent did not start within ${startMs} ms:\n${stderr}`)), startMs);
    events.on('event', (e) => {
      if (e.type !== 'ready') return;
      clearTimeout(timer);
      resolve(e);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the soak's agent exited with ${code} while starting:\n${stderr}`));
    });
  });
  return { pid: ready.pid, address: ready.address, logFile, warnings, exited };
}
