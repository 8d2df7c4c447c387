import { pino, type Logger } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Structured JSON logs on stdout (or stderr for CLI commands whose stdout is data). */
export function createLogger(level: LogLevel = 'info', destination: 1 | 2 = 1): Logger {
  return pino({ name: 'doze', level, base: { pid: process.pid } }, pino.destination({ fd: destination, sync: true }));
}
