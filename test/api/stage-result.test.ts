import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import {
  encodeStageResult,
  parseStageResult,
  type StageResult,
  type StepResult,
  TERMINATION_MESSAGE_LIMIT,
} from "../../src/api/stage-result.ts";
import { describeError, InvalidInputError } from "../../src/errors.ts";
import { type Digest, sha256 } from "../../src/oci/digest.ts";

const digest = (s: string): Digest => sha256(s);
const step = (i: number): StepResult => ({
  line: 100 + i,
  cached: i % 2 === 0,
  ms: 12345,
  digest: digest(`layer ${i}`),
  size: 4096,
});

test("a small result travels unchanged", () => {
  const result: StageResult = { digest: digest("manifest"), steps: [step(1), { cached: true, ms: 0 }] };
  const text = encodeStageResult(result);
  assert.equal(text, JSON.stringify(result));
  assert.deepEqual(parseStageResult(text), result);
});

test("a long success keeps the digest and as many of the last steps as fit", () => {
  const steps = Array.from({ length: 200 }, (_, i) => step(i));
  const text = encodeStageResult({ digest: digest("manifest"), steps });
  const got = parseStageResult(text);
  assert.ok(Buffer.byteLength(text) <= TERMINATION_MESSAGE_LIMIT);
  assert.equal(got.digest, digest("manifest"));
  const kept = got.steps.length;
  assert.equal(got.omittedSteps, 200 - kept);
  assert.deepEqual(got.steps, steps.slice(200 - kept));
  // One more step would not have fitted.
  const more = JSON.stringify({
    digest: digest("manifest"),
    steps: steps.slice(199 - kept),
    omittedSteps: 199 - kept,
  });
  assert.ok(Buffer.byteLength(more) > TERMINATION_MESSAGE_LIMIT, `${Buffer.byteLength(more)}`);
});

test("a failure keeps its reason and line, the start of its message and the end of its log", () => {
  const log = Array.from({ length: 500 }, (_, i) => `line ${i}: ünïcödé output\n`).join("");
  const message = `RUN npm ci exited with 1: ${"x".repeat(3000)}`;
  const result: StageResult = {
    steps: Array.from({ length: 40 }, (_, i) => step(i)),
    failure: { reason: "StepFailed", line: 12, message, log },
  };
  const text = encodeStageResult(result);
  assert.ok(Buffer.byteLength(text) <= TERMINATION_MESSAGE_LIMIT);
  const got = parseStageResult(text);
  assert.equal(got.failure?.reason, "StepFailed");
  assert.equal(got.failure?.line, 12);
  assert.equal(got.failure?.message, message.slice(0, 1024));
  assert.ok(got.failure?.log?.endsWith("line 499: ünïcödé output\n"));
  assert.ok(log.endsWith(got.failure!.log!));
  assert.ok(got.failure!.log!.length > 1000, `${got.failure!.log!.length}`);
});

test("text that JSON escapes six-fold still fits", () => {
  const control = "\u0001".repeat(5000);
  const text = encodeStageResult({
    steps: [step(1)],
    failure: { reason: "StepFailed", message: control, log: control },
  });
  assert.ok(Buffer.byteLength(text) <= TERMINATION_MESSAGE_LIMIT, `${Buffer.byteLength(text)}`);
  assert.equal(parseStageResult(text).failure?.reason, "StepFailed");
});

test("any result encodes within the limit and parses back to a prefix-trimmed copy", () => {
  const stepArb = fc.record({
    line: fc.integer({ min: 1, max: 100_000 }),
    cached: fc.boolean(),
    ms: fc.nat(),
    digest: fc.string().map(digest),
    size: fc.nat(),
  });
  fc.assert(
    fc.property(
      fc.array(stepArb, { maxLength: 300 }),
      fc.option(fc.string({ unit: "binary", maxLength: 4000 })),
      (steps, log) => {
        const result: StageResult =
          log === null
            ? { digest: digest("m"), steps }
            : { steps, failure: { reason: "StepFailed", message: log, log } };
        const text = encodeStageResult(result);
        assert.ok(Buffer.byteLength(text) <= TERMINATION_MESSAGE_LIMIT);
        const got = parseStageResult(text);
        assert.deepEqual(
          got.steps,
          steps.slice(steps.length - got.steps.length).map((s) => ({ ...s })),
        );
        assert.equal(
          got.omittedSteps,
          steps.length === got.steps.length ? undefined : steps.length - got.steps.length,
        );
      },
    ),
    { numRuns: 300 },
  );
});

test("a message that is not a stage result is an InvalidInputError", () => {
  assert.throws(() => parseStageResult("Error: OOMKilled"), InvalidInputError);
  assert.throws(
    () => parseStageResult(JSON.stringify({ steps: [] })),
    (err) => err instanceof InvalidInputError && describeError(err).includes("either a digest or a failure"),
  );
});
