import { randomBytes } from 'node:crypto';

/** Every kernel object a test makes is named dz-<hex> (or dz<hex>…), so a crashed run can be swept. */
export function uniqueSuffix(bytes = 3): string {
  return randomBytes(bytes).toString('hex');
}
