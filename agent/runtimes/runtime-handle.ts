import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { z } from 'zod';
import { RuntimeError } from '../shared/errors.js';
import { summarizeIssues } from '../shared/zod-issues.js';

/*
 * A runtime's handle: a small versioned JSON record of what it needs to wake
 * what it put to sleep (a group's previous count, which snapshot is current),
 * kept in a file so a restarted agent can still wake it. Written atomically
 * (temporary file + rename): a crash leaves the old handle or the new one.
 */

export async function readHandle<T>(file: string, schema: z.ZodType<T>): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new RuntimeError('E_HANDLE', `cannot read runtime handle ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new RuntimeError('E_HANDLE', `runtime handle ${file} is not JSON`, { cause: error });
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    throw new RuntimeError('E_HANDLE', `runtime handle ${file} does not fit this runtime (${summarizeIssues(parsed.error)}): remove it only if nothing is asleep`, { cause: parsed.error });
  }
  return parsed.data;
}

export async function writeHandle(file: string, value: unknown): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    await mkdir(dirname(file), { recursive: true });
    // Synced before the rename: after a power loss the new name never points at an empty file.
    const handle = await open(tmp, 'w', 0o600);
    try {
      await handle.writeFile(`${JSON.stringify(value, null, 2)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, file);
  } catch (error) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw new RuntimeError('E_HANDLE', `cannot write runtime handle ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
  }
}

/**
 * A runtime's handle in memory, read from its file once (on first use, so a
 * constructor does no I/O) and written through on every change. Without a
 * file it is kept in memory only. `check` refuses a saved handle that belongs
 * to something else.
 */
export class HandleFile<T extends object> {
  private current: T;
  private loaded = false;

  constructor(
    private readonly file: string | undefined,
    private readonly schema: z.ZodType<T>,
    initial: T,
    private readonly check: (saved: T) => void = () => {},
  ) {
    this.current = initial;
  }

  get value(): T {
    return this.current;
  }

  async load(): Promise<T> {
    if (!this.loaded && this.file) {
      const saved = await readHandle(this.file, this.schema);
      if (saved) {
        this.check(saved);
        this.current = saved;
      }
    }
    this.loaded = true;
    return this.current;
  }

  async save(change: Partial<T>): Promise<void> {
    this.current = { ...this.current, ...change };
    if (this.file) await writeHandle(this.file, this.current);
  }
}
