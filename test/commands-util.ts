/**
 * Small helpers for commands.test.ts and hooks.test.ts (kept apart from helpers.ts, which other
 * tests share). Every wait is bounded by RawClient's own timeouts.
 */
import assert from 'node:assert/strict';
import type { Logger } from '../src/options.js';
import type { RawClient, SMTPReply } from './helpers.js';

/** RFC 3463 enhanced status code right after the reply code, on one line. */
export const ENHANCED_LINE = /^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)/;

/** A logger that keeps what it is told instead of printing (handler errors are logged). */
export class MemoryLogger implements Logger {
  errors: Array<{ message: string; error: unknown }> = [];
  debug(): void {}
  info(): void {}
  warn(): void {}
  error(message: string, error?: unknown): void {
    this.errors.push({ message, error });
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Asserts the reply has this code and every line carries an enhanced status code. */
export function assertEnhanced(reply: SMTPReply, what = ''): void {
  for (const line of reply.lines) {
    assert.match(line, ENHANCED_LINE, `${what}: line without an enhanced status code: ${JSON.stringify(line)}`);
  }
}

/** Asserts the code of a reply, showing the whole reply on failure. */
export function expectCode(reply: SMTPReply, code: number, what = ''): void {
  assert.equal(reply.code, code, `${what}: expected ${code}, got ${JSON.stringify(reply.text)}`);
}

/** Sends a command and asserts the reply code; returns the reply. */
export async function expect(c: RawClient, command: string, code: number): Promise<SMTPReply> {
  const r = await c.cmd(command);
  expectCode(r, code, command);
  return r;
}

/**
 * MAIL, RCPT (each), DATA, body and the terminator, one command at a time. Expects 250 for MAIL
 * and every RCPT and 354 for DATA; returns the reply to the end of data.
 */
export async function sendMessage(c: RawClient, from: string, to: string[], body: string): Promise<SMTPReply> {
  await expect(c, `MAIL FROM:<${from}>`, 250);
  for (const rcpt of to) await expect(c, `RCPT TO:<${rcpt}>`, 250);
  await expect(c, 'DATA', 354);
  c.send(body + '.\r\n');
  return c.reply();
}

/** Resolves (true) when `predicate` holds, polling every 5 ms, or false after `ms`. */
export async function waitFor(predicate: () => boolean, ms = 2000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) return false;
    await delay(5);
  }
  return true;
}
