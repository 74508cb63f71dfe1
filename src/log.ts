/**
 * Log records: what the engine says about a connection, as a record (for a logger that ships
 * structured lines) or as one readable text line (for a logger that takes strings).
 */
import type { Logger, LogRecord } from './options.js';

let lastId = 0;

/** A connection id, unique in this process (a counter: cheap, and short in a log line). */
export function nextConnectionId(): number {
  return ++lastId;
}

/** The text form: `[id] >> line` for the client's lines, `[id] << line` for replies. */
export function formatRecord(record: LogRecord): string {
  const id = record.connection === undefined ? '' : `[${record.connection}] `;
  const arrow = record.direction === 'in' ? '>> ' : record.direction === 'out' ? '<< ' : '';
  const peer = record.peer === undefined ? '' : `${record.peer} `;
  return `${id}${arrow}${peer}${record.text}`;
}

/** Hands a record to the logger: whole to `log`, else as text to the method of its level. */
export function emit(logger: Logger, record: LogRecord): void {
  if (logger.log !== undefined) return logger.log(record);
  const text = formatRecord(record);
  if (record.level === 'error') logger.error(text, record.error);
  else logger[record.level](text);
}
