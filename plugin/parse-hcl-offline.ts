import { DozeError, messageOf } from '../agent/shared/errors.js';
import { hclJsonToApiJob } from './hcl-to-api-job.js';

type Hcl2Json = { parse(filename: string, contents: string): Promise<Record<string, unknown>> };

let parser: Promise<Hcl2Json> | undefined;

/**
 * Loads @cdktf/hcl2json (HashiCorp's HCL parser compiled to WebAssembly) on
 * first use only: it starts its WASM runtime at import, which costs seconds
 * that no other doze command should pay. The specifier is a variable so
 * TypeScript does not pull the package's DOM-lib typings into the project.
 */
function loadParser(): Promise<Hcl2Json> {
  const specifier = '@cdktf/hcl2json';
  parser ??= import(specifier).then((mod: { parse?: Hcl2Json['parse']; default?: Hcl2Json }) => {
    const parse = mod.parse ?? mod.default?.parse;
    if (typeof parse !== 'function') throw new DozeError('E_JOB_PARSE', '@cdktf/hcl2json has no parse function (unexpected package version)');
    return { parse };
  });
  return parser;
}

/** HCL jobspec text → Nomad API job JSON, without a Nomad. */
export async function parseHclOffline(file: string, text: string): Promise<Record<string, unknown>> {
  const { parse } = await loadParser();
  let hcl: Record<string, unknown>;
  try {
    hcl = await parse(file, text);
  } catch (error) {
    // hcl2json wraps HCL diagnostics as "parse config: [file:line,col-col: Summary; Detail]".
    const detail = messageOf(error).replace(/^parse config: \[(.*)\]$/s, '$1');
    throw new DozeError('E_JOB_PARSE', `${detail}`, { cause: error });
  }
  return hclJsonToApiJob(hcl, file, text);
}
