import { z } from "zod";
import { InvalidInputError } from "../errors.ts";
import { celString, withRule } from "./cel.ts";

// Go's time.ParseDuration syntax restricted to whole hours, minutes and seconds, in that order, and small
// enough that CEL's duration() never overflows.
const N = "[0-9]{1,6}";
const DURATION_RE = new RegExp(`^(${N}h(${N}m)?(${N}s)?|${N}m(${N}s)?|${N}s)$`);
const UNIT_MS = { h: 3_600_000, m: 60_000, s: 1000 } as const;

/** A duration string such as `30m`, `1h30m` or `90s`, longer than zero; {@link parseDuration} reads it. */
export const DurationSchema = withRule(
  z
    .string()
    .max(32)
    .regex(DURATION_RE, "must be a duration of hours, minutes and seconds such as 30m, 1h30m or 90s"),
  // A string the regex refuses is reported by its own rule; duration() would fail on it here.
  {
    rule: `!self.matches(${celString(DURATION_RE.source)}) || duration(self) > duration('0s')`,
    message: "must be longer than 0s",
  },
  (s) => !DURATION_RE.test(s) || parseDuration(s) > 0,
);

/** Milliseconds of a duration written as {@link DurationSchema} allows. */
export function parseDuration(s: string): number {
  if (!DURATION_RE.test(s)) throw new InvalidInputError(`invalid duration ${JSON.stringify(s)}`);
  let ms = 0;
  for (const [, n, unit] of s.matchAll(/([0-9]+)([hms])/g))
    ms += Number(n) * UNIT_MS[unit as keyof typeof UNIT_MS];
  return ms;
}
