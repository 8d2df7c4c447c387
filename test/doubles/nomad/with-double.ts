import type { ExecutionContext } from 'ava';
import { NomadDouble, type NomadDoubleOptions } from './nomad-double.js';

/** Starts a Nomad double for one test and closes it in the same call's teardown. */
export async function startNomadDouble(t: ExecutionContext, options: NomadDoubleOptions = {}): Promise<NomadDouble> {
  const double = await NomadDouble.start(options);
  t.teardown(() => double.close());
  return double;
}
