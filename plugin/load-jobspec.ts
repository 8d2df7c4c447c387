import { readFile } from 'node:fs/promises';
import { DozeError } from '../agent/shared/errors.js';
import { NomadError, type NomadClient } from '../agent/nomad/nomad-client.js';
import { hclJsonToApiJob } from './hcl-to-api-job.js';
import { parseHclOffline } from './parse-hcl-offline.js';

export interface LoadedJob {
  /** Nomad API job JSON (PascalCase), not yet validated. */
  job: Record<string, unknown>;
  parsedBy: 'json' | 'nomad' | 'offline';
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Reads a jobspec: API JSON (`{"Job": …}` as `nomad job run -output` writes
 * it, or a bare job), HCL's JSON syntax (`{"job": {…}}`), or HCL. HCL goes to
 * Nomad's parser when a client is given, else to the offline parser.
 * E_USAGE: the file cannot be read; E_JOB_PARSE: it is not a jobspec;
 * NomadError: Nomad could not be asked.
 */
export async function loadJobspec(file: string, nomad?: NomadClient, variables?: string): Promise<LoadedJob> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new DozeError('E_USAGE', `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { cause: error });
  }
  if (file.endsWith('.json') || text.trimStart().startsWith('{')) return { job: fromJson(file, text), parsedBy: 'json' };
  if (!nomad) return { job: await parseHclOffline(file, text), parsedBy: 'offline' };
  try {
    return { job: await nomad.parseJob(text, variables), parsedBy: 'nomad' };
  } catch (error) {
    // Nomad answers a jobspec it cannot parse with 400 or 500 and its diagnostics.
    if (error instanceof NomadError && error.code === 'E_NOMAD_HTTP' && (error.status === 400 || error.status === 500)) {
      throw new DozeError('E_JOB_PARSE', error.message.replace(/^Nomad POST \/v1\/jobs\/parse failed with HTTP \d+: /, 'Nomad: '), { cause: error });
    }
    throw error;
  }
}

function fromJson(file: string, text: string): Record<string, unknown> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new DozeError('E_JOB_PARSE', `${file} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  if (!isObject(raw)) throw new DozeError('E_JOB_PARSE', `${file}: expected a JSON object`);
  if (isObject(raw.Job)) return raw.Job;
  if (isObject(raw.job)) return hclJsonToApiJob(raw, file);
  if ('ID' in raw || 'TaskGroups' in raw) return raw;
  throw new DozeError('E_JOB_PARSE', `${file}: expected a Nomad job ({"Job": {…}}, a job object with ID and TaskGroups, or HCL JSON syntax {"job": {…}})`);
}
