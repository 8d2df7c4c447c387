/**
 * The Firecracker double as its own process (`… firecracker-double-main.ts
 * --api-sock PATH`), for tests of the process launcher: a fresh, not-started
 * "Firecracker" that exits on SIGTERM. See firecracker-double.ts for what it
 * covers; it is not Firecracker.
 */
import { FirecrackerDouble } from './firecracker-double.js';

const at = process.argv.indexOf('--api-sock');
const socket = at >= 0 ? process.argv[at + 1] : undefined;
if (!socket) {
  process.stderr.write('usage: firecracker-double-main --api-sock PATH\n');
  process.exit(2);
}
const double = await FirecrackerDouble.start(socket);
const stop = () => void double.exit().then(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
