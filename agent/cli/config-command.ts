import { configJsonSchema, configReferenceMarkdown } from '../config/reference.js';
import { EXIT } from './exit-codes.js';

export const CONFIG_HELP = `Usage: doze config schema|reference

Prints the reference of the agent's config file (doze agent --config FILE), generated
from the schema the agent validates it with.

Commands:
  schema     the JSON Schema (draft 2020-12) of the file, for editors and CI checks
  reference  the README's Configuration table, as Markdown (make docs writes it there)

Exit codes: 0 ok, 2 usage error.`;

const PRINTERS = new Map<string, () => string>([
  ['schema', () => JSON.stringify(configJsonSchema(), null, 2)],
  ['reference', configReferenceMarkdown],
]);

export async function configCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '--help' || sub === '-h' || sub === 'help') {
    process.stdout.write(`${CONFIG_HELP}\n`);
    return sub ? EXIT.ok : EXIT.usage;
  }
  const print = PRINTERS.get(sub);
  if (!print) {
    process.stderr.write(`doze config: unknown subcommand ${JSON.stringify(sub)}\n\n${CONFIG_HELP}\n`);
    return EXIT.usage;
  }
  if (rest.length > 0) {
    process.stderr.write(`doze config ${sub}: takes no arguments (got ${JSON.stringify(rest.join(' '))})\n\n${CONFIG_HELP}\n`);
    return EXIT.usage;
  }
  process.stdout.write(`${print()}\n`);
  return EXIT.ok;
}
