import type { z } from 'zod';

type AnySchema = z.core.$ZodType;

/** Keys an object schema declares, or undefined when `schema` (unwrapped) is not an object. */
function objectKeys(schema: AnySchema, input: unknown): string[] | undefined {
  const def = schema._zod.def as unknown as Record<string, unknown> & { type: string };
  switch (def.type) {
    case 'object':
      return Object.keys(def.shape as object);
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'readonly':
      return objectKeys(def.innerType as AnySchema, input);
    case 'pipe':
      return objectKeys(def.in as AnySchema, input);
    case 'union': {
      // A discriminated union (runtime.kind): the option the input's discriminator picks, else all keys.
      const options = def.options as AnySchema[];
      const discriminator = def.discriminator as string | undefined;
      const picked = discriminator && input && typeof input === 'object'
        ? options.find((o) => {
            const field = (objectShape(o) ?? {})[discriminator];
            const values = field ? ((field._zod.def as unknown as { values?: unknown[] }).values ?? []) : [];
            return values.includes((input as Record<string, unknown>)[discriminator]);
          })
        : undefined;
      if (picked) return objectKeys(picked, input);
      const keys = options.flatMap((o) => objectKeys(o, input) ?? []);
      return keys.length > 0 ? [...new Set(keys)] : undefined;
    }
    default:
      return undefined;
  }
}

function objectShape(schema: AnySchema): Record<string, AnySchema> | undefined {
  const def = schema._zod.def as unknown as Record<string, unknown> & { type: string };
  if (def.type === 'object') return def.shape as Record<string, AnySchema>;
  if (def.type === 'pipe') return objectShape(def.in as AnySchema);
  if (['optional', 'nullable', 'default', 'prefault', 'readonly'].includes(def.type)) return objectShape(def.innerType as AnySchema);
  return undefined;
}

function child(schema: AnySchema, key: PropertyKey, input: unknown): AnySchema | undefined {
  const def = schema._zod.def as unknown as Record<string, unknown> & { type: string };
  switch (def.type) {
    case 'array':
      return typeof key === 'number' ? (def.element as AnySchema) : undefined;
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'readonly':
      return child(def.innerType as AnySchema, key, input);
    case 'pipe':
      return child(def.in as AnySchema, key, input);
    case 'union': {
      for (const option of def.options as AnySchema[]) {
        const found = child(option, key, input);
        if (found) return found;
      }
      return undefined;
    }
    default:
      return objectShape(schema)?.[String(key)];
  }
}

/** The keys the object at `path` of `input` may have, read from the schema that validates it. */
export function knownKeysAt(schema: AnySchema, path: PropertyKey[], input: unknown): string[] {
  let current: AnySchema | undefined = schema;
  let value = input;
  for (const key of path) {
    if (!current) return [];
    current = child(current, key, value);
    value = value && typeof value === 'object' ? (value as Record<PropertyKey, unknown>)[key] : undefined;
  }
  return current ? (objectKeys(current, value) ?? []) : [];
}
