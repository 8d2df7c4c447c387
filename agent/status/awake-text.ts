import { describeHold } from '../detector/reasons.js';
import type { AwakeReason, ClientEvidence, TalkerEvidence } from '../detector/why-awake.js';

/* Why an instance is awake, in words: the status page, the API's whyAwakeText and `doze status --why` (the detector gives typed reasons only). */

const secs = (ms: number) => (ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`);
const clients = (list: ClientEvidence[]) => {
  const shown = list.slice(0, 3).map((c) => `${c.address}:${c.port} (${secs(c.ageMs)})`).join(', ');
  return list.length > 3 ? `${shown} and ${list.length - 3} more` : shown;
};

/** "10.0.0.9:41234 (tcp, 25 connection(s) in 4.8 s, last 120 ms ago)", with its last port; a UDP one counts packets. */
const talker = (t: TalkerEvidence) => {
  const host = t.address.includes(':') ? `[${t.address}]` : t.address;
  const counts = [t.connections > 0 ? `${t.connections} connection(s)` : '', t.packets > 0 ? `${t.packets} packet(s)` : ''].filter(Boolean).join(' and ');
  return `${t.port === null ? host : `${host}:${t.port}`} (${t.protocol}, ${counts} in ${secs(t.overMs)}, last ${secs(t.ageMs)} ago)`;
};

export function describeAwake(reason: AwakeReason): string {
  switch (reason.kind) {
    case 'recent-traffic': {
      const last = reason.lastClient ? `; last from ${reason.lastClient.address}:${reason.lastClient.port}` : '';
      const top = reason.topTalkers.length > 0 ? `; top talkers ${reason.topTalkers.map(talker).join(', ')}` : '';
      return `traffic ${secs(reason.idleForMs)} ago, idle timeout ${secs(reason.idleTimeoutMs)}${last}${top}`;
    }
    case 'min-awake':
      return `minAwake ${secs(reason.minAwakeMs)}: ${secs(reason.leftMs)} left`;
    case 'in-flight':
      return `${reason.clients.length} request(s) in flight from ${clients(reason.clients)}`;
    case 'open-connection':
      return `${reason.clients.length} open connection(s) from ${clients(reason.clients)}`;
    case 'check-in-flight':
      return `health check in flight from ${clients(reason.clients)}`;
    case 'busy':
    case 'measuring':
    case 'never-sleeps':
    case 'nomad-task-event':
    case 'connections-unreadable':
      return describeHold(reason);
    case 'budget-queued':
      return `waiting for room in the node budget since ${new Date(reason.sinceMs).toISOString().slice(11, 19)}`;
    case 'dry-run':
      return `dry run: would be asleep since ${new Date(reason.wouldSleepSinceMs).toISOString().slice(11, 19)}`;
  }
}
