/*
 * Whether the agent is in touch with an upstream (Nomad, Consul), and since
 * when: the discovery loops say up or down as their calls succeed or fail,
 * and GET /api/status shows what they last said. A lost connection never
 * stops the instances already managed.
 */

export interface ConnectionStatus {
  address: string;
  connected: boolean;
  /** When `connected` last changed (ISO 8601). */
  since: string;
  /** The last error, while disconnected. */
  error?: string;
  /** Extra facts: the Nomad node id and event source, the Consul registration. */
  detail?: Record<string, unknown>;
}

/** One upstream's reachability, with the time it last flipped. */
export class ConnectionTracker {
  private state: ConnectionStatus;

  constructor(address: string, private readonly onChange?: (status: ConnectionStatus) => void) {
    this.state = { address, connected: false, since: new Date().toISOString(), error: 'not contacted yet' };
  }

  get connected(): boolean {
    return this.state.connected;
  }

  up(detail?: Record<string, unknown>): void {
    this.set(true, undefined, detail);
  }

  down(error: string, detail?: Record<string, unknown>): void {
    this.set(false, error, detail);
  }

  status(): ConnectionStatus {
    return { ...this.state, ...(this.state.detail ? { detail: { ...this.state.detail } } : {}) };
  }

  private set(connected: boolean, error: string | undefined, detail: Record<string, unknown> | undefined): void {
    const flipped = connected !== this.state.connected;
    const next: ConnectionStatus = {
      address: this.state.address,
      connected,
      since: flipped ? new Date().toISOString() : this.state.since,
    };
    if (error !== undefined) next.error = error;
    const mergedDetail = detail ? { ...this.state.detail, ...detail } : this.state.detail;
    if (mergedDetail) next.detail = mergedDetail;
    const changed = flipped || next.error !== this.state.error || JSON.stringify(next.detail) !== JSON.stringify(this.state.detail);
    this.state = next;
    if (changed) this.onChange?.(this.status());
  }
}
