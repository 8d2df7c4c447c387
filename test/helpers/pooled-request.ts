import type http from 'node:http';
import type { Agent } from '../../agent/agent.js';
import { nextState } from './agent.js';
import { get, type HttpResult } from './http.js';

/**
 * A GET on a keep-alive pool's connection to a sleeping instance: resolves once the instance is
 * running again and the answer is in; `reused` says the pool got its connection back.
 */
export async function wakeWithPooledRequest(agent: Agent, id: string, url: string, pool: http.Agent): Promise<{ answer: HttpResult; reused: boolean }> {
  const reused = new Promise<boolean>((resolve) => pool.once('free', () => resolve(true)));
  const running = nextState(agent, id, 'running', 3000);
  const answer = await get(url, 3000, pool);
  await running;
  return { answer, reused: await reused };
}
