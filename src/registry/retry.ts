import { setTimeout as sleep } from "node:timers/promises";
import { isTemporary } from "../errors.ts";

export interface RetryPolicy {
  /** Tries in all, the first included. */
  readonly attempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** A registry asking for a longer pause than this fails the step instead of stalling the build. */
  readonly maxRetryAfterMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  attempts: 5,
  baseDelayMs: 250,
  maxDelayMs: 10_000,
  maxRetryAfterMs: 60_000,
};

/**
 * How long to wait before try `attempt + 1`: the registry's Retry-After when it sent one, otherwise
 * exponential backoff with full jitter so that many clients hitting one registry spread out.
 */
export function retryDelayMs(policy: RetryPolicy, attempt: number, retryAfterMs?: number): number {
  if (retryAfterMs !== undefined) return retryAfterMs;
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
  return Math.round(Math.random() * ceiling);
}

/** `Retry-After: 3` or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** Repeats `step` while it fails with a temporary error, up to the policy's attempts. */
export async function withRetry<T>(
  policy: RetryPolicy,
  step: (attempt: number) => Promise<T>,
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await step(attempt);
    } catch (err) {
      const retryAfterMs = (err as { retryAfterMs?: number }).retryAfterMs;
      const retryable =
        isTemporary(err) &&
        attempt < policy.attempts &&
        (retryAfterMs === undefined || retryAfterMs <= policy.maxRetryAfterMs);
      if (!retryable) throw err;
      const delayMs = retryDelayMs(policy, attempt, retryAfterMs);
      onRetry?.(err, attempt, delayMs);
      await sleep(delayMs);
    }
  }
}
