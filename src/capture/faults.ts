/**
 * Fault injection for clients under test: rules by stage (MAIL, RCPT, DATA, AUTH) and match (an
 * address pattern, the Nth match, a probability) that reply a chosen code, delay, or drop the
 * connection (mid-DATA at DATA). Mailpit's chaos triggers (Sender, Recipient, Authentication:
 * an error code with a probability) are three such rules. Parsing and matching are pure.
 */

export type FaultStage = 'MAIL' | 'RCPT' | 'DATA' | 'AUTH';
export type FaultAction = { reply: string } | { delay: number } | { drop: true };

export interface FaultRule {
  stage: FaultStage;
  /**
   * What the rule looks at: MAIL the sender, RCPT the recipient, DATA every recipient (one
   * match is enough), AUTH the login. A string is a glob (`*` any run, `?` one character),
   * matched whole, ignoring case; a RegExp is tested as it is. Absent: every address.
   */
  match?: string | RegExp;
  /** Fire only on the Nth matching command (1-based) instead of on every one. */
  nth?: number;
  /** Percent chance (0-100) that a matching command fires the rule. Default 100. */
  probability?: number;
  action: FaultAction;
}

/** Mailpit's chaos trigger: an error code (400-599) and a percent probability. */
export interface ChaosTrigger {
  ErrorCode: number;
  Probability: number;
}
export interface ChaosTriggers {
  Sender: ChaosTrigger;
  Recipient: ChaosTrigger;
  Authentication: ChaosTrigger;
}

export class FaultSyntaxError extends Error {}

const STAGES = new Set<FaultStage>(['MAIL', 'RCPT', 'DATA', 'AUTH']);
/** A delay longer than this is a mistake, not a test of a client's patience. */
const MAX_DELAY_MS = 600_000;

function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

function validReply(text: string): string {
  const reply = text.trim();
  if (!/^[45][0-9][0-9](?:[ -][^\r\n]*)?$/.test(reply)) throw new FaultSyntaxError(`a fault reply must be a 4xx or 5xx code and text, on one line: '${text}'`);
  return reply;
}

/** Checks a rule from JSON or code; returns it with its pattern compiled. */
export function checkRule(value: unknown): FaultRule {
  if (typeof value !== 'object' || value === null) throw new FaultSyntaxError('a fault rule must be an object');
  const r = value as Record<string, unknown>;
  const stage = String(r['stage'] ?? '').toUpperCase() as FaultStage;
  if (!STAGES.has(stage)) throw new FaultSyntaxError(`stage must be MAIL, RCPT, DATA or AUTH: '${String(r['stage'])}'`);
  const rule: FaultRule = { stage, action: { drop: true } };
  const match = r['match'];
  if (match instanceof RegExp) rule.match = match;
  else if (typeof match === 'string' && match !== '') {
    const regex = /^\/(.*)\/([imsu]*)$/.exec(match);
    try {
      rule.match = regex === null ? match : new RegExp(regex[1]!, regex[2]);
    } catch (error) {
      throw new FaultSyntaxError(`bad pattern ${match}: ${(error as Error).message}`);
    }
  } else if (match !== undefined && match !== null && match !== '') throw new FaultSyntaxError('match must be a string');
  if (r['nth'] !== undefined && r['nth'] !== null) {
    if (!Number.isInteger(r['nth']) || (r['nth'] as number) < 1) throw new FaultSyntaxError('nth must be a positive integer');
    rule.nth = r['nth'] as number;
  }
  if (r['probability'] !== undefined && r['probability'] !== null) {
    const p = r['probability'];
    if (typeof p !== 'number' || !(p >= 0 && p <= 100)) throw new FaultSyntaxError('probability must be between 0 and 100');
    rule.probability = p;
  }
  const actions = ['reply', 'delay', 'drop'].filter((k) => r[k] !== undefined && r[k] !== false);
  if (actions.length !== 1) throw new FaultSyntaxError('a fault rule needs exactly one of reply, delay, drop');
  if (r['reply'] !== undefined) rule.action = { reply: validReply(String(r['reply'])) };
  else if (r['delay'] !== undefined) {
    const d = r['delay'];
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0 || d > MAX_DELAY_MS) throw new FaultSyntaxError(`delay must be whole milliseconds, 0 to ${MAX_DELAY_MS}`);
    rule.action = { delay: d };
  } else if (r['drop'] !== true) throw new FaultSyntaxError('drop must be true');
  return rule;
}

/**
 * The command line's form: `STAGE[/MATCH][#N][%PERCENT] ACTION`, ACTION being a reply
 * (`550 5.1.1 No such user`), `delay=MS` or `drop`. E.g. `RCPT/*@bad.example 550 No such user`,
 * `DATA#3 drop`, `MAIL delay=2000`, `AUTH%50 535 5.7.8 Try again`.
 */
export function parseFaultSpec(spec: string): FaultRule {
  const m = /^\s*([A-Za-z]{4})(?:\/(\S+?))?(?:#(\d+))?(?:%(\d+(?:\.\d+)?))?\s+(.+?)\s*$/.exec(spec);
  if (m === null) throw new FaultSyntaxError(`expected STAGE[/MATCH][#N][%PERCENT] ACTION: '${spec}'`);
  const action = m[5]!;
  const rule: Record<string, unknown> = { stage: m[1], match: m[2], nth: m[3] === undefined ? undefined : Number(m[3]), probability: m[4] === undefined ? undefined : Number(m[4]) };
  const delay = /^delay=(\d+)$/i.exec(action);
  if (delay !== null) rule['delay'] = Number(delay[1]);
  else if (/^drop$/i.test(action)) rule['drop'] = true;
  else rule['reply'] = action;
  return checkRule(rule);
}

/** JSON for a rule (a RegExp as `/source/flags`). */
export function ruleToJSON(rule: FaultRule): Record<string, unknown> {
  const match = rule.match instanceof RegExp ? String(rule.match) : rule.match;
  return { stage: rule.stage, match, nth: rule.nth, probability: rule.probability, ...rule.action };
}

interface Armed {
  rule: FaultRule;
  test: (address: string) => boolean;
  seen: number;
}

const DEFAULT_CHAOS: ChaosTriggers = {
  Sender: { ErrorCode: 451, Probability: 0 },
  Recipient: { ErrorCode: 451, Probability: 0 },
  Authentication: { ErrorCode: 535, Probability: 0 },
};

/** The rules in force, in order: the first that fires decides. */
export class Faults {
  private armed: Armed[] = [];
  private chaosTriggers: ChaosTriggers = structuredClone(DEFAULT_CHAOS);
  /** For tests: the random source behind probabilities, [0, 1). */
  random: () => number = Math.random;

  get rules(): FaultRule[] {
    return this.armed.map((a) => a.rule);
  }

  add(rule: FaultRule): void {
    const checked = checkRule(ruleToJSON(rule));
    const pattern = checked.match;
    let test: (address: string) => boolean = () => true;
    if (pattern !== undefined) {
      const re = pattern instanceof RegExp ? pattern : globToRegExp(pattern);
      test = (address) => {
        re.lastIndex = 0; // a /g pattern keeps state between calls otherwise
        return re.test(address);
      };
    }
    this.armed.push({ rule: checked, test, seen: 0 });
  }

  /** Replaces every rule (the chaos triggers stay). */
  set(rules: FaultRule[]): void {
    const before = this.armed;
    this.armed = [];
    try {
      for (const r of rules) this.add(r);
    } catch (error) {
      this.armed = before;
      throw error;
    }
  }

  clear(): void {
    this.armed = [];
  }

  get chaos(): ChaosTriggers {
    return structuredClone(this.chaosTriggers);
  }

  /** Mailpit's PUT /api/v1/chaos: a missing or 0 ErrorCode means the default (451, 451, 535). */
  setChaos(value: unknown): ChaosTriggers {
    const body = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
    const next = structuredClone(DEFAULT_CHAOS);
    for (const key of ['Sender', 'Recipient', 'Authentication'] as const) {
      const t = body[key];
      if (t === undefined || t === null) continue;
      if (typeof t !== 'object') throw new FaultSyntaxError(`${key} must be an object`);
      const code = (t as Record<string, unknown>)['ErrorCode'] ?? 0;
      const probability = (t as Record<string, unknown>)['Probability'] ?? 0;
      if (typeof code !== 'number' || typeof probability !== 'number') throw new FaultSyntaxError(`${key}: ErrorCode and Probability must be numbers`);
      const errorCode = code === 0 ? DEFAULT_CHAOS[key].ErrorCode : code;
      if (!Number.isInteger(errorCode) || errorCode < 400 || errorCode > 599) throw new FaultSyntaxError('error code must be between 400 and 599');
      if (!Number.isInteger(probability) || probability < 0 || probability > 100) throw new FaultSyntaxError('probability must be between 0 and 100');
      next[key] = { ErrorCode: errorCode, Probability: probability };
    }
    this.chaosTriggers = next;
    return this.chaos;
  }

  /** The action for a command at this stage on these addresses, or null to go on normally. */
  check(stage: FaultStage, addresses: readonly string[]): FaultAction | null {
    for (const a of this.armed) {
      if (a.rule.stage !== stage) continue;
      if (!addresses.some((address) => a.test(address)) && !(addresses.length === 0 && a.rule.match === undefined)) continue;
      a.seen++;
      if (a.rule.nth !== undefined && a.seen !== a.rule.nth) continue;
      if (a.rule.probability !== undefined && this.random() * 100 >= a.rule.probability) continue;
      return a.rule.action;
    }
    const trigger = stage === 'MAIL' ? this.chaosTriggers.Sender : stage === 'RCPT' ? this.chaosTriggers.Recipient : stage === 'AUTH' ? this.chaosTriggers.Authentication : null;
    if (trigger !== null && trigger.Probability > 0 && this.random() * 100 < trigger.Probability) {
      return { reply: `${trigger.ErrorCode} Chaos ${stage === 'MAIL' ? 'sender' : stage === 'RCPT' ? 'recipient' : 'authentication'} error` };
    }
    return null;
  }
}
