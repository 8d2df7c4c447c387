import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

/**
 * One GET by curl, in its own process: status and time to the first response byte (ms). A client in
 * the agent's own event loop (benches run the agent in-process) would wait on the agent's wake
 * bookkeeping before it read the answer, which no real client does.
 */
export async function curlFirstByte(url: string, timeoutMs = 5000): Promise<{ status: number; ms: number }> {
  const { stdout } = await promisify(execFile)('curl', ['-s', '-o', '/dev/null', '--max-time', String(timeoutMs / 1000), '-w', '%{http_code} %{time_starttransfer}', url]);
  const [status, seconds] = stdout.trim().split(' ');
  return { status: Number(status), ms: Number(seconds) * 1000 };
}
