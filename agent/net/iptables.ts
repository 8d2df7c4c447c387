import { DozeError } from '../shared/errors.js';
import { run } from '../process/exec.js';

export type Table = 'mangle' | 'nat' | 'filter';

/** `iptables -w` waits for the xtables lock instead of failing when another tool holds it. */
export async function iptables(table: Table, args: string[]): Promise<void> {
  await run('iptables', ['-w', '5', '-t', table, ...args]);
}

export async function iptablesSucceeds(table: Table, args: string[]): Promise<boolean> {
  const { code } = await run('iptables', ['-w', '5', '-t', table, ...args], { allowFailure: true });
  return code === 0;
}

/**
 * Lines of `iptables -S` for a table (or one chain): policies (-P), chains (-N) and rules (-A).
 * None when the chain does not exist. Comment lines (iptables-nft's warnings) are left out; any
 * other line is not what the callers parse, so it is an error naming it.
 */
export async function listRules(table: Table, chain?: string): Promise<string[]> {
  const args = ['-w', '5', '-t', table, '-S', ...(chain ? [chain] : [])];
  const { stdout, code } = await run('iptables', args, { allowFailure: true });
  if (code !== 0) return [];
  const lines = stdout.split('\n').filter((line) => line !== '' && !line.startsWith('#'));
  const odd = lines.find((line) => !/^-[PNA] \S/.test(line));
  if (odd !== undefined) throw new DozeError('E_COMMAND', `iptables ${args.join(' ')} printed a line that is not a policy, chain or rule: ${JSON.stringify(odd)}`);
  return lines;
}

/** Creates the chain if needed and empties it: the agent rebuilds its own chains from scratch. */
export async function resetChain(table: Table, chain: string): Promise<void> {
  if (!(await iptablesSucceeds(table, ['-N', chain]))) await iptables(table, ['-F', chain]);
}

/** Adds `parent -> chain` at the top of `parent`, once, tagged with a comment naming the owner. */
export async function ensureJump(table: Table, parent: string, chain: string, comment: string): Promise<void> {
  const rule = ['-m', 'comment', '--comment', comment, '-j', chain];
  if (!(await iptablesSucceeds(table, ['-C', parent, ...rule]))) await iptables(table, ['-I', parent, '1', ...rule]);
}

/** Removes every jump to `chain` (however many a crash left), then the chain itself. */
export async function removeChain(table: Table, parents: string[], chain: string): Promise<void> {
  for (const parent of parents) {
    for (const line of await listRules(table, parent)) {
      if (line.startsWith(`-A ${parent} `) && line.endsWith(`-j ${chain}`)) {
        await iptables(table, ['-D', ...splitRule(line.slice(3))]).catch(() => undefined);
      }
    }
  }
  if (await iptablesSucceeds(table, ['-F', chain])) await iptablesSucceeds(table, ['-X', chain]);
}

/** Splits an `iptables -S` rule into argv, honouring the double quotes iptables prints around comments. */
export function splitRule(rule: string): string[] {
  const args: string[] = [];
  const pattern = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (const match of rule.matchAll(pattern)) args.push(match[1] !== undefined ? match[1].replace(/\\(.)/g, '$1') : match[2]!);
  return args;
}
