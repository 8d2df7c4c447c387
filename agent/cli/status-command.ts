import axios from 'axios';
import { z } from 'zod';
import { messageOf } from '../shared/errors.js';
import { EXIT } from './exit-codes.js';
import { parseCommandLine } from './command-line.js';

export const STATUS_HELP = `Usage: doze status [--addr ADDR] [--json] [--why ID]

Shows the instances a running agent manages.

Options:
      --addr ADDR  agent status address, host:port or URL (default 127.0.0.1:7070, env DOZE_ADDR)
      --json       print the JSON the API returns
      --why ID     why instance ID is awake right now, each reason with its evidence
                   (client address and port and the request's age, the top talkers behind
                   recent traffic, CPU figure, minAwake left)
  -h, --help       show this help

Exit codes: 0 ok, 1 agent unreachable or bad answer, 2 usage error.`;

const awakeView = z.looseObject({
  id: z.string(),
  state: z.string(),
  stateSince: z.string().optional(),
  idleForMs: z.number(),
  dryRun: z.boolean().optional(),
  whyAwake: z.array(z.looseObject({ kind: z.string() })).nullable().optional(),
  whyAwakeText: z.array(z.string()).nullable().optional(),
});

/** `doze status --why ID`: the instance's reasons to be awake, one a line, its kind beside it. */
export function formatWhy(view: { id: string; state: string; stateSince?: string; idleForMs: number; dryRun?: boolean; whyAwake?: ReadonlyArray<{ kind: string }> | null; whyAwakeText?: readonly string[] | null }): string {
  if (view.state !== 'running' && view.state !== 'waking') return `${view.id} is ${view.state}${view.stateSince ? ` since ${view.stateSince.slice(11, 19)}` : ''}: not awake\n`;
  const kinds = view.whyAwake ?? [];
  const texts = view.whyAwakeText ?? [];
  const head = `${view.id} is awake (idle ${(view.idleForMs / 1000).toFixed(1)}s)${view.dryRun ? ', dry run' : ''}`;
  if (texts.length === 0) return `${head}: nothing holds it awake; it sleeps at its next idle check\n`;
  return `${head} because:\n${formatTable(texts.map((text, n) => [`  ${kinds[n]?.kind ?? ''}`, text]))}\n`;
}

const nodeStatus = z.looseObject({
  instances: z.looseObject({ total: z.number() }),
  budget: z.looseObject({ maxActive: z.number().nullable(), maxActiveMemory: z.number().nullable(), active: z.number(), activeMemory: z.number(), freedMemory: z.number() }),
  savings: z.looseObject({ lastDay: z.looseObject({ asleepShare: z.number() }), lastHour: z.looseObject({ asleepShare: z.number() }) }).nullable().optional(),
});
export type NodeGlance = z.infer<typeof nodeStatus>;

const BAR_WIDTH = 20;

/** A terminal bar for `share` (0..1; over 1 is drawn full and said in the figure beside it). */
export function bar(share: number): string {
  const filled = Math.max(0, Math.min(BAR_WIDTH, Math.round(share * BAR_WIDTH)));
  return `${'█'.repeat(filled)}${'░'.repeat(BAR_WIDTH - filled)} ${String(Math.round(share * 100)).padStart(3)}%`;
}

/** The node at a glance, as `kraft cloud quotas` shows an account: awake of budget, instances, awake memory of budget, memory freed, asleep share today. */
export function formatGlance(node: NodeGlance): string {
  const b = node.budget;
  const rows: string[][] = [
    b.maxActive === null ? ['Awake', `${b.active} (no budget)`, ''] : ['Awake', `${b.active} of ${b.maxActive}`, bar(b.active / b.maxActive)],
    ['Instances', String(node.instances.total), ''],
    b.maxActiveMemory === null ? ['Awake memory', `${b.activeMemory} MiB (no budget)`, ''] : ['Awake memory', `${b.activeMemory} of ${b.maxActiveMemory} MiB`, bar(b.activeMemory / b.maxActiveMemory)],
    ['Memory freed', `${b.freedMemory} MiB now`, ''],
  ];
  if (node.savings) rows.push(['Asleep today', `${Math.round(node.savings.lastDay.asleepShare * 100)}% (this hour ${Math.round(node.savings.lastHour.asleepShare * 100)}%)`, bar(node.savings.lastDay.asleepShare)]);
  return formatTable(rows);
}

const instanceList = z.array(
  z.looseObject({
    id: z.string(),
    state: z.string(),
    sleeps: z.number(),
    wakes: z.number(),
    lastWakeMs: z.number().nullable(),
    lastFirstResponseMs: z.number().nullable().optional(),
    idleForMs: z.number(),
    checksAnswered: z.number(),
    failure: z.string().nullable().optional(),
    heldBy: z.string().nullable().optional(),
  }),
);

/** "127.0.0.1:7070" or "http://…": the agent's base URL, without a trailing slash; undefined if neither. */
export function agentBaseUrl(addr: string): string | undefined {
  // The agent's own `listen` is written host:port: accept it as written there.
  const text = /^[a-z][a-z0-9+.-]*:\/\//i.test(addr) ? addr : `http://${addr}`;
  try {
    const url = new URL(text);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
    return text.replace(/\/+$/, '');
  } catch {
    return undefined;
  }
}

export function formatTable(rows: string[][]): string {
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((r) => r[col]!.length)));
  return rows.map((r) => r.map((cell, col) => cell.padEnd(widths[col]!)).join('  ').trimEnd()).join('\n');
}

export async function statusCommand(argv: string[]): Promise<number> {
  const command = parseCommandLine('doze status', STATUS_HELP, { args: argv, options: { addr: { type: 'string' }, json: { type: 'boolean' }, why: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (typeof command === 'number') return command;
  const { values } = command;
  const addr = values.addr ?? process.env.DOZE_ADDR ?? 'http://127.0.0.1:7070';
  const base = agentBaseUrl(addr);
  if (base === undefined) {
    const from = values.addr !== undefined ? '--addr' : 'DOZE_ADDR';
    process.stderr.write(`doze status: ${from} ${JSON.stringify(addr)} is not an address: write host:port (127.0.0.1:7070) or a URL (http://127.0.0.1:7070)\n`);
    return EXIT.usage;
  }
  if (values.why !== undefined) return whyCommand(base, values.why, values.json === true);
  let data: unknown;
  try {
    data = (await axios.get(`${base}/api/instances`, { timeout: 5000 })).data;
  } catch (error) {
    process.stderr.write(`doze status: agent at ${base} is unreachable: ${messageOf(error)} (is the agent running, and is this its "listen" address?)\n`);
    return EXIT.failure;
  }
  const parsed = instanceList.safeParse(data);
  if (!parsed.success) {
    process.stderr.write(`doze status: unexpected answer from ${base}/api/instances\n`);
    return EXIT.failure;
  }
  if (values.json) {
    process.stdout.write(`${JSON.stringify(parsed.data, null, 2)}\n`);
    return EXIT.ok;
  }
  // The node at a glance first; an agent without /api/status (older) gets the table alone.
  const node = await axios.get(`${base}/api/status`, { timeout: 5000 }).then((r) => nodeStatus.safeParse(r.data)).catch(() => undefined);
  if (node?.success) process.stdout.write(`${formatGlance(node.data)}\n\n`);
  const rows = [['INSTANCE', 'STATE', 'IDLE', 'LAST WAKE', 'SLEEPS', 'WAKES', 'CHECKS', 'ANSWERED', 'NOTE']];
  for (const i of parsed.data) {
    rows.push([
      i.id, i.state, `${(i.idleForMs / 1000).toFixed(1)}s`, i.lastWakeMs === null ? '-' : `${i.lastWakeMs.toFixed(2)}ms`,
      String(i.sleeps), String(i.wakes), String(i.checksAnswered),
      // The last wake's first response (first packet → first byte of the answer).
      i.lastFirstResponseMs === null || i.lastFirstResponseMs === undefined ? '-' : `${i.lastFirstResponseMs.toFixed(2)}ms`,
      i.failure ?? i.heldBy ?? '',
    ]);
  }
  process.stdout.write(`${formatTable(rows)}\n`);
  return EXIT.ok;
}

async function whyCommand(base: string, id: string, json: boolean): Promise<number> {
  let data: unknown;
  try {
    const answer = await axios.get(`${base}/api/instances/${encodeURIComponent(id)}`, { timeout: 5000, validateStatus: (s) => s === 200 || s === 404 });
    if (answer.status === 404) {
      process.stderr.write(`doze status --why: the agent at ${base} manages no instance ${JSON.stringify(id)} (doze status lists them)\n`);
      return EXIT.usage;
    }
    data = answer.data;
  } catch (error) {
    process.stderr.write(`doze status: agent at ${base} is unreachable: ${messageOf(error)} (is the agent running, and is this its "listen" address?)\n`);
    return EXIT.failure;
  }
  const parsed = awakeView.safeParse(data);
  if (!parsed.success) {
    process.stderr.write(`doze status: unexpected answer from ${base}/api/instances/${id}\n`);
    return EXIT.failure;
  }
  process.stdout.write(json ? `${JSON.stringify({ id: parsed.data.id, state: parsed.data.state, whyAwake: parsed.data.whyAwake ?? null, whyAwakeText: parsed.data.whyAwakeText ?? null }, null, 2)}\n` : formatWhy(parsed.data));
  return EXIT.ok;
}
