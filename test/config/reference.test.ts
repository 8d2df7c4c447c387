import { readdir, readFile } from 'node:fs/promises';
import test from 'ava';
import { z } from 'zod';
import { parseConfig } from '../../agent/config/load.js';
import { configFields, configJsonSchema, configReferenceIn, configReferenceMarkdown, type ConfigField } from '../../agent/config/reference.js';
import { configSchema, runtimeSchema } from '../../agent/config/schema.js';

type JsonSchema = { [keyword: string]: unknown; properties?: Record<string, JsonSchema>; items?: JsonSchema; oneOf?: JsonSchema[]; additionalProperties?: JsonSchema | boolean };

const schema = configJsonSchema() as JsonSchema;
/** zod's own JSON Schema reader, an implementation independent of the zod schema it was generated from. */
const validator = z.fromJSONSchema(schema as z.core.JSONSchema.JSONSchema);

const instance = { id: 'web', address: '10.200.0.2:8080', runtime: { kind: 'freezer', cgroup: 'doze/web' } };

test('README.md carries the configuration table generated from the config schema', async (t) => {
  const readme = await readFile('README.md', 'utf8');
  const table = configReferenceIn(readme);
  t.truthy(table, 'README.md lost its <!-- config-reference:start --> / <!-- config-reference:end --> markers');
  t.is(table, configReferenceMarkdown(), 'README.md is stale: run `make docs` (it writes `doze config reference` between the markers)');
});

test('every field a user can write has a meaning in the reference, its own or its parent object\'s', (t) => {
  const fields = configFields();
  const documented = (field: ConfigField) =>
    fields.some((other) => other.description !== undefined && (other.variant === undefined || other.variant === field.variant) && (field.path === other.path || field.path.startsWith(`${other.path}.`) || field.path.startsWith(`${other.path}[]`)));
  t.deepEqual(fields.filter((field) => field.leaf && !documented(field)).map((field) => field.path), []);
});

/** The JSON Schema of the field at `path` ("instances[].runtime.reclaim"), in the runtime option `variant`. */
function schemaAt(path: string, variant: string | undefined): JsonSchema | undefined {
  let current: JsonSchema | undefined = schema;
  for (const segment of path.split('.')) {
    if (current?.oneOf) current = current.oneOf.find((option) => option.properties?.kind?.const === variant);
    const [key, ...arrays] = segment.split('[]');
    current = key === '<name>' ? (current?.additionalProperties as JsonSchema | undefined) : current?.properties?.[key!];
    for (let i = 0; i < arrays.length; i++) current = current?.items;
  }
  return current;
}

test('the JSON Schema declares every field, each with the type a user writes', (t) => {
  t.is(schema.$schema, 'https://json-schema.org/draft/2020-12/schema');
  const missing: string[] = [];
  const untyped: string[] = [];
  for (const field of configFields()) {
    const at = schemaAt(field.path, field.variant);
    const name = `${field.path}${field.variant ? ` (${field.variant})` : ''}`;
    if (!at) missing.push(name);
    else if (!['type', 'anyOf', 'oneOf', 'enum', 'const'].some((keyword) => keyword in at)) untyped.push(name);
    if (at && field.description) t.is(at.description, field.description, `${name}: its meaning is the JSON Schema's description too`);
  }
  t.deepEqual(missing, []);
  t.deepEqual(untyped, [], 'a field whose input shape zod could not express (a bare transform) shows as {}');
  t.deepEqual(schemaAt('instances[].idleTimeout', undefined)?.default, '500ms', 'durations as written, not as milliseconds');
  t.deepEqual(schemaAt('healthChecks.mark', undefined)?.default, '0x1');
  t.false(JSON.stringify(schema).includes('"starts_with"'), 'no zod-only format');
});

test('the JSON Schema requires what the agent requires and names every runtime kind', (t) => {
  const item = schemaAt('instances[]', undefined)!;
  t.deepEqual(item.required, ['id', 'address', 'runtime']);
  t.is(item.additionalProperties, false);
  const kinds = schemaAt('instances[].runtime', undefined)!.oneOf!.map((option) => option.properties!.kind!.const);
  t.deepEqual(kinds, runtimeSchema.options.map((option) => option.shape.kind.value));
  t.deepEqual([...kinds].sort(), ['cloud-hypervisor', 'fake', 'firecracker', 'freezer', 'nomad-scale', 'qemu']);
  t.deepEqual(schemaAt('nomad', undefined)!.required, ['address']);
});

/** The agent configs the repository shows: README's and docs' JSON blocks (instances and runtimes wrapped into one), the agent job's template. */
async function exampleConfigs(): Promise<{ where: string; config: unknown }[]> {
  const examples: { where: string; config: unknown }[] = [];
  const configKeys = new Set(Object.keys(configSchema.shape));
  const docs = ['README.md', ...(await readdir('docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
  for (const file of docs) {
    const text = await readFile(file, 'utf8');
    for (const [index, [, block]] of [...text.matchAll(/```json\n([\s\S]*?)```/g)].entries()) {
      const where = `${file} JSON block ${index + 1}`;
      const value = JSON.parse(block!.trimStart().startsWith('"runtime"') ? `{ ${block} }` : block!) as Record<string, unknown>;
      if ('runtime' in value) examples.push({ where, config: { instances: [{ ...instance, ...value }] } });
      else if (Object.keys(value).every((key) => configKeys.has(key))) examples.push({ where, config: value });
    }
  }
  const job = await readFile('jobs/doze-agent.nomad.hcl', 'utf8');
  const template = /destination = "local\/doze\.json"\s+data\s+= <<-EOT\n([\s\S]*?)\n\s*EOT/.exec(job)?.[1];
  if (template) examples.push({ where: 'jobs/doze-agent.nomad.hcl template', config: JSON.parse(template.replace(/\{\{[^}]*\}\}/g, '127.0.0.1:7070')) });
  return examples;
}

test('the JSON Schema accepts every example config in the repository, as the agent does', async (t) => {
  const examples = await exampleConfigs();
  t.true(examples.some((e) => e.where.startsWith('README.md')), 'README.md\'s example config was found');
  t.true(examples.some((e) => e.where.startsWith('jobs/')), 'the agent job\'s config was found');
  t.true(examples.length >= 8, examples.map((e) => e.where).join(', '));
  for (const { where, config } of examples) {
    t.notThrows(() => parseConfig(config), `${where}: the agent accepts it`);
    const checked = validator.safeParse(config);
    t.true(checked.success, `${where}: ${checked.error ? z.prettifyError(checked.error) : ''}`);
  }
});

test('the JSON Schema rejects what the agent rejects: an unknown kind, a misspelt key, a bad duration, a missing address', (t) => {
  const bad: Record<string, unknown> = {
    'unknown runtime kind': { instances: [{ ...instance, runtime: { kind: 'snooze' } }] },
    'misspelt key': { instances: [{ ...instance, idleTimout: '5s' }] },
    'bad duration': { instances: [{ ...instance, idleTimeout: '5 parsecs' }] },
    'missing address': { instances: [{ id: 'web', runtime: instance.runtime }] },
    'log level': { logLevel: 'loud' },
  };
  for (const [what, config] of Object.entries(bad)) {
    t.throws(() => parseConfig(config), undefined, `${what}: the agent rejects it`);
    t.false(validator.safeParse(config).success, `${what}: the JSON Schema rejects it`);
  }
});
