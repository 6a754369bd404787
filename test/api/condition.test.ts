import assert from "node:assert/strict";
import { test } from "node:test";
import { type Condition, ConditionSchema, ConditionType, setCondition } from "../../src/api/condition.ts";

const T0 = new Date("2026-01-02T03:04:05.000Z");
const T1 = new Date("2026-01-02T03:09:00.000Z");

const building = {
  type: ConditionType.Succeeded,
  status: "Unknown",
  reason: "Building",
  message: "stage 1 of 2",
  observedGeneration: 1,
} as const;

test("a new condition is appended with the time it was set", () => {
  const ready = {
    type: "Ready",
    status: "False",
    reason: "Building",
    message: "",
    lastTransitionTime: "2026-01-01T00:00:00.000Z",
  } as const;
  assert.deepEqual(setCondition([ready], building, T0), [
    ready,
    { ...building, lastTransitionTime: "2026-01-02T03:04:05.000Z" },
  ]);
});

test("the same status keeps its transition time and its place; the rest is replaced", () => {
  const ready: Condition = {
    type: "Ready",
    status: "False",
    reason: "Building",
    message: "",
    lastTransitionTime: T0.toISOString(),
  };
  const before = setCondition([], building, T0).concat(ready);
  const after = setCondition(before, { ...building, message: "stage 2 of 2", observedGeneration: 2 }, T1);
  assert.deepEqual(after, [
    {
      ...building,
      message: "stage 2 of 2",
      observedGeneration: 2,
      lastTransitionTime: "2026-01-02T03:04:05.000Z",
    },
    ready,
  ]);
  assert.deepEqual(
    setCondition(after, { ...building, message: "stage 2 of 2", observedGeneration: 2 }, T1),
    after,
  );
});

test("a changed status moves the transition time", () => {
  const before = setCondition([], building, T0);
  const after = setCondition(
    before,
    { ...building, status: "True", reason: "Succeeded", message: "pushed" },
    T1,
  );
  assert.deepEqual(after, [
    {
      ...building,
      status: "True",
      reason: "Succeeded",
      message: "pushed",
      lastTransitionTime: "2026-01-02T03:09:00.000Z",
    },
  ]);
  assert.deepEqual(ConditionSchema.parse(after[0]), after[0]);
});

test("a condition's reason is CamelCase and its status one of three", () => {
  const base = {
    type: "Succeeded",
    status: "True",
    reason: "Succeeded",
    message: "",
    lastTransitionTime: T0.toISOString(),
  };
  assert.equal(ConditionSchema.safeParse(base).success, true);
  assert.equal(ConditionSchema.safeParse({ ...base, reason: "build failed" }).success, false);
  assert.equal(ConditionSchema.safeParse({ ...base, status: "true" }).success, false);
  assert.equal(ConditionSchema.safeParse({ ...base, lastTransitionTime: "yesterday" }).success, false);
});
