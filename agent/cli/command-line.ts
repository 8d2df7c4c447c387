import { parseArgs, type ParseArgsConfig } from 'node:util';
import { messageOf } from '../shared/errors.js';
import { EXIT } from './exit-codes.js';

type Parsed<T extends ParseArgsConfig> = ReturnType<typeof parseArgs<T>>;

/**
 * A command's flags, parsed the one way every doze command does: a flag it does not know (or a
 * missing value) prints the error and the usage and gives exit 2; `--help` prints the usage and
 * gives exit 0. A number back is the exit code to return; anything else is the parse.
 */
export function parseCommandLine<T extends ParseArgsConfig>(command: string, help: string, config: T): Parsed<T> | number {
  let parsed: Parsed<T>;
  try {
    parsed = parseArgs(config);
  } catch (error) {
    process.stderr.write(`${command}: ${messageOf(error)}\n\n${help}\n`);
    return EXIT.usage;
  }
  if ((parsed.values as { help?: boolean }).help) {
    process.stdout.write(`${help}\n`);
    return EXIT.ok;
  }
  return parsed;
}
