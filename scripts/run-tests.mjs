// Runs ava with the TAP reporter, streams its output, and ends with the plain
// "N passed, N failed, N skipped" line CI reads. Exit code is ava's.
import { spawn } from 'node:child_process';

const args = ['ava', '--tap', ...process.argv.slice(2)];
const child = spawn('npx', args, { stdio: ['ignore', 'pipe', 'inherit'] });
let passed = 0;
let failed = 0;
let skipped = 0;
let rest = '';
child.stdout.setEncoding('utf8');
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  const lines = (rest + chunk).split('\n');
  rest = lines.pop() ?? '';
  for (const line of lines) {
    if (/^not ok \d+/.test(line)) failed++;
    else if (/^ok \d+.*# SKIP/i.test(line)) skipped++;
    else if (/^ok \d+/.test(line)) passed++;
  }
});
child.on('exit', (code, signal) => {
  if (/^not ok \d+/.test(rest)) failed++;
  else if (/^ok \d+/.test(rest)) passed++;
  const exitCode = code ?? (signal ? 1 : 0);
  // A crashed run that reported nothing still counts as a failure.
  if (exitCode !== 0 && failed === 0) failed = 1;
  process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  process.exit(exitCode);
});
