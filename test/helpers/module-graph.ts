import { readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';

/*
 * The repository modules a TypeScript module loads at run time, found by
 * reading its static imports and re-exports (and theirs, transitively).
 * Type-only imports are left out: TypeScript erases them, so they load nothing.
 * Packages and node: builtins are not followed.
 */

// `import x from`, `import { a, type b } from`, `import * as n from`, `export { a } from`, `export * from`; or a bare `import '…'`.
const STATIC_IMPORT = /^(?:import|export)\s+(?:(type)\s+)?((?:[\w$]+\s*,\s*)?(?:\{[^}]*\}|\*(?:\s+as\s+[\w$]+)?|[\w$]+))\s+from\s+['"]([^'"]+)['"]|^import\s+['"]([^'"]+)['"]/gm;

/** Whether an import clause brings in a value (not only `type` names). */
function importsValue(clause: string): boolean {
  const braces = /\{([^}]*)\}/.exec(clause);
  if (!braces) return true; // a default or namespace import
  if (clause.slice(0, braces.index).replace(/[\s,]/g, '') !== '') return true; // `x, { … }`
  const names = braces[1]!.split(',').map((name) => name.trim()).filter(Boolean);
  return names.length === 0 || names.some((name) => !name.startsWith('type '));
}

/** The relative specifiers `file` loads at run time, resolved to .ts paths. */
export function runtimeImports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const found: string[] = [];
  for (const match of text.matchAll(STATIC_IMPORT)) {
    const [, typeOnly, clause, from, bare] = match;
    const specifier = bare ?? from!;
    if (!specifier.startsWith('.')) continue;
    if (bare === undefined && (typeOnly || !importsValue(clause!))) continue;
    found.push(resolve(dirname(file), specifier).replace(/\.js$/, '.ts'));
  }
  return found;
}

/** Every repository module `entry` loads, itself included, as paths relative to `root`, sorted. */
export function moduleGraph(entry: string, root: string): string[] {
  const seen = new Set<string>();
  const pending = [resolve(root, entry)];
  while (pending.length > 0) {
    const file = pending.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    pending.push(...runtimeImports(file));
  }
  return [...seen].map((file) => relative(root, file)).sort();
}
