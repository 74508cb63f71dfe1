/**
 * The per-connection counters that end a session (Postfix's smtpd_hard_error_limit and
 * smtpd_recipient_overshoot_limit, aiosmtpd's command_call_limit): errors, unknown verbs,
 * failed AUTHs, recipients past the limit, calls per verb.
 */
import { DEFAULTS, type SMTPOptions } from './options.js';

export class ConnectionLimits {
  #errors = 0;
  #unrecognized = 0;
  #authFailures = 0;
  /** RCPTs past maxRecipients in this transaction. */
  #overshoot = 0;
  #callBudget: Map<string, number> | null = null;

  constructor(private readonly options: SMTPOptions) {}

  /** Counts a 4xx/5xx reply; true once the session has had too many (stricter under stress). */
  error(stressed: boolean): boolean {
    const o = this.options;
    const max = stressed ? (o.stressMaxErrors ?? DEFAULTS.stressMaxErrors) : (o.maxErrors ?? DEFAULTS.maxErrors);
    return ++this.#errors >= max && max > 0;
  }

  /** Counts an unrecognized verb; true once there were too many. */
  unrecognized(): boolean {
    const max = this.options.maxUnrecognizedCommands ?? DEFAULTS.maxUnrecognizedCommands;
    return ++this.#unrecognized >= max && max > 0;
  }

  /** A message was delivered: the error counts start over. */
  resetErrors(): void {
    this.#errors = this.#unrecognized = 0;
  }

  /** Counts a RCPT past maxRecipients; true once past recipientOvershootLimit. */
  overshoot(): boolean {
    return ++this.#overshoot > (this.options.recipientOvershootLimit ?? DEFAULTS.recipientOvershootLimit);
  }

  resetTransaction(): void {
    this.#overshoot = 0;
  }

  authFailure(): number {
    return ++this.#authFailures;
  }

  /** Spends one call of `verb` under commandCallLimit; false when none is left. */
  spendCall(verb: string): boolean {
    const limit = this.options.commandCallLimit;
    if (limit === undefined || limit === false) return true;
    const budgets = (this.#callBudget ??= new Map());
    const budget = budgets.get(verb) ?? callLimitOf(limit, verb);
    if (budget < 1) return false;
    budgets.set(verb, budget - 1);
    return true;
  }
}

function callLimitOf(limit: true | number | Record<string, number>, verb: string): number {
  if (limit === true) return DEFAULTS.callLimit;
  if (typeof limit === 'number') return limit;
  for (const [k, v] of Object.entries(limit)) if (k.toUpperCase() === verb) return v;
  return limit['*'] ?? DEFAULTS.callLimit;
}
