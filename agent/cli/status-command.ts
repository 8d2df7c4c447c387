import axios from 'axios';
import { z } from 'zod';
import { messageOf } from '../shared/errors.js';
import { EXIT } from './exit-codes.js';
import { parseCommandLine } from './command-line.js';

export const STATUS_HELP = `Usage: doze status [--addr ADDR] [--json]

Shows the instances a running agent manages.

Options:
      --addr ADDR  agent status address, host:port or URL (default 127.0.0.1:7070, env DOZE_ADDR)
      --json       print the JSON the API returns
  -h, --help       show this help

Exit codes: 0 ok, 1 agent unreachable or bad answer, 2 usage error.`;

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
  const command = parseCommandLine('doze status', STATUS_HELP, { args: argv, options: { addr: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (typeof command === 'number') return command;
  const { values } = command;
  const addr = values.addr ?? process.env.DOZE_ADDR ?? 'http://127.0.0.1:7070';
  const base = agentBaseUrl(addr);
  if (base === undefined) {
    const from = values.addr !== undefined ? '--addr' : 'DOZE_ADDR';
    process.stderr.write(`doze status: ${from} ${JSON.stringify(addr)} is not an address: write host:port (127.0.0.1:7070) or a URL (http://127.0.0.1:7070)\n`);
    return EXIT.usage;
  }
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
