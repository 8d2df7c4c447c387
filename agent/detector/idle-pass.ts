import { messageOf } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import type { Connection } from '../sources/bpf-records.js';
import type { TrafficSource } from '../sources/traffic-source.js';
import type { ConnectionsUnreadable } from './reasons.js';

/*
 * One pass of the detector's idle clock over the instances that are due: the connection map it
 * reads once for all of them, and what each instance's verdict does.
 */

/** The connection map, or why it could not be read (never an empty list in its place). */
export async function readConnections(source: TrafficSource, log: Logger): Promise<Connection[] | ConnectionsUnreadable> {
  try {
    return await source.connections();
  } catch (error) {
    log.warn({ err: messageOf(error) }, 'reading connections failed; instances that need them stay awake for this decision');
    return { kind: 'connections-unreadable', message: messageOf(error) };
  }
}
