/**
 * The one place that calls the handler's reply hooks: the default when a hook is missing, the
 * check that what came back is a reply, sync or async, and handleException; and andThen, where
 * every command goes on after its hook.
 */
import type { Handler, MaybePromise } from './handler.js';
import { Reply, normalizeReply } from './replies.js';

/** A reply a hook may throw (go-smtp's SMTPError): the client gets exactly this reply. */
export class SMTPError extends Error {
  override name = 'SMTPError';
  constructor(
    /** The reply code, 400-599. */
    readonly code: number,
    message: string,
    /** RFC 3463 enhanced status code, e.g. '5.7.1'; default: the class default. */
    readonly enhancedCode?: string,
  ) {
    super(message);
  }

  /** The reply line this error stands for. */
  get reply(): string {
    return `${this.code} ${this.enhancedCode === undefined ? '' : `${this.enhancedCode} `}${this.message}`;
  }
}

export function isThenable<T>(value: MaybePromise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}

/**
 * `next(value)` once the value is there: the one place where a command goes on after a hook,
 * and the engine's only sync-or-async fork. A value already there (a missing hook, a sync one)
 * goes on in the same tick: a microtask and two promises per command were 10 % of a small
 * message's server CPU in the peer bench (docs/performance.md).
 */
export function andThen<T, R>(value: MaybePromise<T>, next: (value: T) => R): R | Promise<Awaited<R>> {
  return isThenable(value) ? (value.then(next) as Promise<Awaited<R>>) : next(value);
}

/** A final reply from a hook: a well-formed reply that is not 3xx (only the engine sends 354, 334). */
export function finalReply(text: unknown, enhanced: boolean, enhancedDefault?: string): string | null {
  return typeof text === 'string' && !text.startsWith('3') ? normalizeReply(text, enhanced, enhancedDefault) : null;
}

/** What the hook caller needs of a connection (an interface, so no object per connection). */
export interface HookHost {
  readonly handler: Handler;
  /** Logs a failure for this connection's peer. */
  logError(message: string, error: unknown): void;
  /** Called before a hook is awaited: what is queued goes out first. */
  flush(): void;
}

/** Runs `call` and turns its result into a wire reply (see the file comment). */
export function replyOf(
  host: HookHost,
  call: () => MaybePromise<string>,
  enhanced = true,
  enhancedDefault?: string,
): string | Promise<string> {
  let result: MaybePromise<string>;
  try {
    result = call();
  } catch (error) {
    return exceptionReply(host, error);
  }
  if (!isThenable(result)) return validReply(host, result, enhanced, enhancedDefault);
  host.flush();
  return result.then(
    (value) => validReply(host, value, enhanced, enhancedDefault),
    (error: unknown) => exceptionReply(host, error),
  );
}

function validReply(host: HookHost, result: unknown, enhanced: boolean, enhancedDefault: string | undefined): string | Promise<string> {
  const reply = finalReply(result, enhanced, enhancedDefault);
  if (reply !== null) return reply;
  return exceptionReply(host, new TypeError(`handler returned an invalid reply: ${JSON.stringify(result)}`));
}

/** The reply for a hook that threw: an SMTPError's own, else handleException's, else 451. */
export async function exceptionReply(host: HookHost, error: unknown): Promise<string> {
  if (error instanceof SMTPError) {
    const own = error.code >= 400 && error.code <= 599 ? finalReply(error.reply, true) : null;
    if (own !== null) return own;
  }
  host.logError('handler error', error);
  const handler = host.handler;
  const hook = handler.handleException;
  if (hook !== undefined) {
    try {
      const reply = finalReply(await hook.call(handler, error), true);
      if (reply !== null) return reply;
    } catch (inner) {
      host.logError('handleException failed', inner);
    }
  }
  return Reply.HANDLER_ERROR;
}
