/**
 * The command line's logger on stderr: `-d` the conversation (both directions, each line with
 * its connection id and a timestamp), `-dd` the details too; readable text, or with
 * `--log-format json` one JSON object a line for log shippers.
 */
import cluster from 'node:cluster';
import { formatRecord } from './log.js';
import type { Logger, LogRecord } from './options.js';

export type LogFormat = 'text' | 'json';
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json'];

/** What the record's error says, stack included (one JSON string, or the end of a text line). */
function errorText(error: unknown): string | undefined {
  if (error === undefined) return undefined;
  return error instanceof Error ? (error.stack ?? error.message) : String(error);
}

export function jsonLine(record: LogRecord, time: Date, pid?: number): string {
  return JSON.stringify({
    time: time.toISOString(),
    level: record.level,
    ...(pid === undefined ? {} : { pid }),
    connection: record.connection,
    direction: record.direction,
    peer: record.peer,
    text: record.text,
    error: errorText(record.error),
  });
}

export function textLine(record: LogRecord, time: Date, pid?: number): string {
  const level = record.level === 'warn' || record.level === 'error' ? `${record.level}: ` : '';
  const error = errorText(record.error);
  return `tsmtpd${pid === undefined ? '' : `[${pid}]`}: ${time.toISOString()} ${level}${formatRecord(record)}${error === undefined ? '' : `: ${error}`}`;
}

/** -d (level 1): the conversation and events; -dd (2 or more): the details too. Warnings and errors always. */
export function stderrLogger(level: number, format: LogFormat): Logger {
  // Connection ids are per process: with --workers, the pid tells the workers apart.
  const pid = cluster.isWorker ? process.pid : undefined;
  const line = format === 'json' ? jsonLine : textLine;
  const write = (record: LogRecord) => process.stderr.write(`${line(record, new Date(), pid)}\n`);
  const text = (lvl: LogRecord['level']) => (message: string) => write({ level: lvl, text: message });
  return {
    debugEnabled: level >= 1,
    detailEnabled: level >= 2,
    log: (record) => {
      if (level >= 1 || record.level === 'warn' || record.level === 'error') write(record);
    },
    debug: level >= 1 ? text('debug') : () => {},
    info: level >= 1 ? text('info') : () => {},
    warn: text('warn'),
    error: (message, error) => write({ level: 'error', text: message, error }),
  };
}

/** A line the CLI always prints (the start line, reloads): as it is, or as a JSON record. */
export function notice(format: LogFormat, text: string, level: LogRecord['level'] = 'info'): void {
  process.stderr.write(`${format === 'json' ? jsonLine({ level, text }, new Date()) : text}\n`);
}
