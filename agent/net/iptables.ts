import { DozeError } from '../shared/errors.js';
import { run } from '../process/exec.js';

export type Table = 'mangle' | 'nat' | 'filter';
/** Which tool: iptables (4) or ip6tables (6). Same tables, chains and rule syntax otherwise. */
export type Family = 4 | 6;

const tool = (family: Family) => (family === 6 ? 'ip6tables' : 'iptables');

/** `iptables -w` waits for the xtables lock instead of failing when another tool holds it. */
export async function iptables(table: Table, args: string[], family: Family = 4): Promise<void> {
  await run(tool(family), ['-w', '5', '-t', table, ...args]);
}

export async function iptablesSucceeds(table: Table, args: string[], family: Family = 4): Promise<boolean> {
  const { code } = await run(tool(family), ['-w', '5', '-t', table, ...args], { allowFailure: true });
  return code === 0;
}

/** Whether ip6tables runs here (a node may have IPv6 filtering compiled out or the tool missing). */
export async function ip6tablesWorks(): Promise<boolean> {
  return iptablesSucceeds('mangle', ['-S', 'OUTPUT'], 6).catch(() => false);
}

/**
 * Lines of `iptables -S` for a table (or one chain): policies (-P), chains (-N) and rules (-A).
 * None when the chain does not exist. Comment lines (iptables-nft's warnings) are left out; any
 * other line is not what the callers parse, so it is an error naming it.
 */
export async function listRules(table: Table, chain?: string, family: Family = 4): Promise<string[]> {
  const args = ['-w', '5', '-t', table, '-S', ...(chain ? [chain] : [])];
  const { stdout, code } = await run(tool(family), args, { allowFailure: true });
  if (code !== 0) return [];
  const lines = stdout.split('\n').filter((line) => line !== '' && !line.startsWith('#'));
  const odd = lines.find((line) => !/^-[PNA] \S/.test(line));
  if (odd !== undefined) throw new DozeError('E_COMMAND', `${tool(family)} ${args.join(' ')} printed a line that is not a policy, chain or rule: ${JSON.stringify(odd)}`);
  return lines;
}

/** Creates the chain if needed and empties it: the agent rebuilds its own chains from scratch. */
export async function resetChain(table: Table, chain: string, family: Family = 4): Promise<void> {
  if (!(await iptablesSucceeds(table, ['-N', chain], family))) await iptables(table, ['-F', chain], family);
}

/** Adds `parent -> chain` at the top of `parent`, once, tagged with a comment naming the owner. */
export async function ensureJump(table: Table, parent: string, chain: string, comment: string, family: Family = 4): Promise<void> {
  const rule = ['-m', 'comment', '--comment', comment, '-j', chain];
  if (!(await iptablesSucceeds(table, ['-C', parent, ...rule], family))) await iptables(table, ['-I', parent, '1', ...rule], family);
}

/** Removes every jump to `chain` (however many a crash left), then the chain itself. */
export async function removeChain(table: Table, parents: string[], chain: string, family: Family = 4): Promise<void> {
  for (const parent of parents) {
    for (const line of await listRules(table, parent, family)) {
      if (line.startsWith(`-A ${parent} `) && line.endsWith(`-j ${chain}`)) {
        await iptables(table, ['-D', ...splitRule(line.slice(3))], family).catch(() => undefined);
      }
    }
  }
  if (await iptablesSucceeds(table, ['-F', chain], family)) await iptablesSucceeds(table, ['-X', chain], family);
}

/** Splits an `iptables -S` rule into argv, honouring the double quotes iptables prints around comments. */
export function splitRule(rule: string): string[] {
  const args: string[] = [];
  const pattern = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (const match of rule.matchAll(pattern)) args.push(match[1] !== undefined ? match[1].replace(/\\(.)/g, '$1') : match[2]!);
  return args;
}
