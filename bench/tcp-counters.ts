import { readFile } from 'node:fs/promises';

/** TCP retransmission counters of the host namespace (where the benchmark's clients run). */
export async function synRetransmits(): Promise<number> {
  const text = await readFile('/proc/net/netstat', 'utf8');
  const lines = text.split('\n').filter((l) => l.startsWith('TcpExt:'));
  const names = lines[0]!.split(/\s+/);
  const values = lines[1]!.split(/\s+/);
  return Number(values[names.indexOf('TCPSynRetrans')] ?? 0);
}
