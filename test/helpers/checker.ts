import { spawn } from 'node:child_process';

export const CHECKER_UID = 65534; // nobody: stands in for the consul user

/**
 * One TCP health-check probe as a separate user (so uid-based marking applies):
 * connect, then close. Resolves with whether the connect succeeded.
 */
export function tcpProbeAs(uid: number, host: string, port: number, timeoutMs = 3000): Promise<boolean> {
  const script = `const s=require('net').connect(${port},${JSON.stringify(host)});` +
    `s.setTimeout(${timeoutMs},()=>process.exit(3));s.on('connect',()=>{s.destroy();process.exit(0)});s.on('error',()=>process.exit(2));`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { uid, gid: uid, stdio: 'ignore' });
    child.on('error', reject);
    child.on('exit', (code) => resolve(code === 0));
  });
}
