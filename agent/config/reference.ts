import { z } from 'zod';
import { computedDefaults, configSchema } from './schema.js';

/*
 * The configuration reference, generated from the schema the agent validates its config with:
 * the README's Configuration table (between the config-reference markers; a test fails when it
 * is stale, `make docs` rewrites it) and the JSON Schema `doze config schema` prints. Meanings
 * are the fields' `.describe()`; defaults the schema's own, else computedDefaults' text.
 */

type AnySchema = z.core.$ZodType;
type Def = { type: string; innerType?: AnySchema; in?: AnySchema; defaultValue?: unknown };

/** One field of the config file, in the order the schema declares it. */
export interface ConfigField {
  /** "instances[].runtime.reclaim"; `<name>` for a key the user picks (nomad.checkTls). */
  path: string;
  /** The runtime kind its object belongs to ("freezer"), for a field of one runtime. */
  variant?: string;
  description?: string;
  /** As the table shows it: "`500ms`", "required", "none", or the computed default's text. */
  shownDefault: string;
  /** False for an object, an array of objects, a union of objects or a map: its fields follow it. */
  leaf: boolean;
}

/** Wrappers a field's own schema sits in: its description, default and optionality are on them. */
const WRAPPERS = new Set(['optional', 'nullable', 'default', 'prefault', 'readonly', 'pipe']);

function defOf(schema: AnySchema): Def {
  return schema._zod.def as unknown as Def;
}

/** The field's schema and the wrappers around it, outermost first. */
function layers(schema: AnySchema): AnySchema[] {
  const found = [schema];
  for (let def = defOf(schema); WRAPPERS.has(def.type); def = defOf(found.at(-1)!)) {
    found.push(def.type === 'pipe' ? def.in! : def.innerType!);
  }
  return found;
}

function shownDefault(wrappers: AnySchema[]): string {
  for (const layer of wrappers) {
    const computed = computedDefaults.get(layer);
    if (computed) return computed.text;
  }
  const defaulted = wrappers.find((layer) => ['default', 'prefault'].includes(defOf(layer).type));
  if (defaulted) {
    const value = defOf(defaulted).defaultValue;
    return `\`${typeof value === 'string' ? value : JSON.stringify(value)}\``;
  }
  return wrappers.some((layer) => defOf(layer).type === 'optional') ? 'none' : 'required';
}

/** The fields inside an object, an array of objects, a map's values or each option of a discriminated union. */
function nestedFields(core: AnySchema, path: string, variant: string | undefined): ConfigField[] | undefined {
  const def = core._zod.def as unknown as Record<string, unknown> & Def;
  switch (def.type) {
    case 'object':
      return fieldsOf(def.shape as Record<string, AnySchema>, path, variant);
    case 'array':
      return nestedFields(layers(def.element as AnySchema).at(-1)!, `${path}[]`, variant);
    case 'record':
      return nestedFields(layers(def.valueType as AnySchema).at(-1)!, `${path}.<name>`, variant);
    case 'union': {
      const discriminator = def.discriminator as string | undefined;
      if (!discriminator) return undefined;
      return (def.options as AnySchema[]).flatMap((option) => {
        const shape = { ...(defOf(option) as unknown as { shape: Record<string, AnySchema> }).shape };
        const kind = String((defOf(shape[discriminator]!) as unknown as { values: unknown[] }).values[0]);
        delete shape[discriminator];
        return fieldsOf(shape, path, kind);
      });
    }
    default:
      return undefined;
  }
}

function fieldsOf(shape: Record<string, AnySchema>, prefix: string, variant: string | undefined): ConfigField[] {
  return Object.entries(shape).flatMap(([key, schema]) => {
    const path = prefix ? `${prefix}.${key}` : key;
    const wrappers = layers(schema);
    const description = wrappers.map((layer) => z.globalRegistry.get(layer)?.description).find((text) => text !== undefined);
    const nested = nestedFields(wrappers.at(-1)!, path, variant);
    return [{ path, variant, description, shownDefault: shownDefault(wrappers), leaf: nested === undefined }, ...(nested ?? [])];
  });
}

/** Every field of the config file, nested ones after their parent. */
export function configFields(): ConfigField[] {
  return fieldsOf(configSchema.shape, '', undefined);
}

const cell = (text: string) => text.replace(/\|/g, '\\|');

/** The README's Configuration table: a row for every field that has a meaning (its parent's row covers the rest). */
export function configReferenceMarkdown(): string {
  const rows = configFields()
    .filter((field) => field.description !== undefined)
    .map((field) => `| \`${field.path}\`${field.variant ? ` (${field.variant})` : ''} | ${cell(field.shownDefault)} | ${cell(field.description!)} |`);
  return ['| field | default | meaning |', '|---|---|---|', ...rows].join('\n');
}

export const CONFIG_REFERENCE_START = '<!-- config-reference:start -->';
export const CONFIG_REFERENCE_END = '<!-- config-reference:end -->';

/** Where the table stands in `readme`: between the lines of its markers. */
function tableRange(readme: string): { from: number; to: number } | undefined {
  const start = readme.indexOf(`${CONFIG_REFERENCE_START}\n`);
  const end = readme.indexOf(`\n${CONFIG_REFERENCE_END}`, start);
  return start < 0 || end < 0 ? undefined : { from: start + CONFIG_REFERENCE_START.length + 1, to: end };
}

/** The table between the markers of `readme`, or undefined when the markers are missing. */
export function configReferenceIn(readme: string): string | undefined {
  const range = tableRange(readme);
  return range && readme.slice(range.from, range.to);
}

/** `readme` with the table between its markers replaced by `table`. */
export function withConfigReference(readme: string, table: string): string {
  const range = tableRange(readme);
  if (!range) throw new Error(`README has no ${CONFIG_REFERENCE_START} … ${CONFIG_REFERENCE_END} markers`);
  return `${readme.slice(0, range.from)}${table}${readme.slice(range.to)}`;
}

/** zod spells `.startsWith()` as format "starts_with" beside its pattern; JSON Schema knows no such format. */
const ZOD_ONLY_FORMATS = new Set(['starts_with', 'ends_with', 'includes']);

/** The JSON Schema (draft 2020-12) of the config file as a user writes it: durations as text or ms, marks as hex text. */
export function configJsonSchema(): Record<string, unknown> {
  const { $schema, ...schema } = z.toJSONSchema(configSchema, {
    target: 'draft-2020-12',
    io: 'input',
    override: ({ jsonSchema }) => {
      if (typeof jsonSchema.format === 'string' && ZOD_ONLY_FORMATS.has(jsonSchema.format)) delete jsonSchema.format;
    },
  });
  return { $schema, title: 'doze agent configuration', description: 'The file `doze agent --config FILE` reads (README.md, "Configuration").', ...schema };
}
