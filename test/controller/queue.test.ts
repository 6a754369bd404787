import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Admission } from "../../src/controller/admission.ts";
import { WorkQueue } from "../../src/controller/queue.ts";

/** Shuts the queue down and hands out what waits to `workers` workers; the keys in the order handled. */
async function drain(q: WorkQueue, workers: number): Promise<string[]> {
  const seen: string[] = [];
  q.shutdown();
  await q.run(
    workers,
    async (k) => {
      seen.push(k);
    },
    assert.fail,
  );
  return seen;
}

test("a key added many times while waiting is handled once", async () => {
  const q = new WorkQueue();
  for (let i = 0; i < 5; i++) q.add("ns/a");
  q.add("ns/b");
  q.add("ns/a");
  assert.equal(q.length, 2);
  const seen = await drain(q, 3);
  assert.deepEqual(seen, ["ns/a", "ns/b"]);
});

test("a key is never handled by two workers at once; an add while it runs queues it for after", async () => {
  const q = new WorkQueue();
  const running = new Set<string>();
  const log: string[] = [];
  let overlaps = 0;
  const done = q.run(
    4,
    async (k) => {
      if (running.has(k)) overlaps++;
      running.add(k);
      log.push(`start ${k}`);
      if (log.filter((l) => l === "start ns/a").length === 1) {
        q.add("ns/a"); // arrives while ns/a runs
        q.add("ns/a");
      }
      await sleep(20);
      running.delete(k);
      log.push(`end ${k}`);
    },
    assert.fail,
  );
  q.add("ns/a");
  await sleep(100);
  q.shutdown();
  await done;
  assert.equal(overlaps, 0);
  assert.deepEqual(log, ["start ns/a", "end ns/a", "start ns/a", "end ns/a"]);
});

test("failures come back after doubling delays; forget resets them; addAfter keeps the earliest", async () => {
  const q = new WorkQueue({ baseDelayMs: 10, maxDelayMs: 40 });
  assert.deepEqual(
    [q.addRateLimited("k"), q.addRateLimited("k"), q.addRateLimited("k"), q.addRateLimited("k")],
    [10, 20, 40, 40],
  );
  q.forget("k");
  assert.equal(q.addRateLimited("k"), 10);
  const times: number[] = [];
  const t0 = Date.now();
  const done = q.run(
    1,
    async () => {
      times.push(Date.now() - t0);
    },
    assert.fail,
  );
  q.addAfter("later", 200);
  q.addAfter("later", 30); // earlier wins
  q.addAfter("later", 500); // later loses
  await sleep(300);
  q.shutdown();
  await done;
  assert.equal(times.length, 2); // "k" once (de-duplicated across its timers), "later" once
  assert.ok(times[1]! >= 30 && times[1]! < 200, `later ran at ${times[1]} ms`);
});

test("a handler that throws gets its key back, rate limited", async () => {
  const q = new WorkQueue({ baseDelayMs: 5 });
  let calls = 0;
  const errors: string[] = [];
  const done = q.run(
    2,
    async () => {
      calls++;
      if (calls < 3) throw new Error(`boom ${calls}`);
    },
    (k, err) => errors.push(`${k}: ${(err as Error).message}`),
  );
  q.add("ns/x");
  await sleep(100);
  q.shutdown();
  await done;
  assert.equal(calls, 3);
  assert.deepEqual(errors, ["ns/x: boom 1", "ns/x: boom 2"]);
});

test("admission: global and per-namespace limits, first come first served, running builds always admitted", () => {
  const a = new Admission(2, 1);
  assert.equal(a.admit("a/1", "a", false), true);
  assert.equal(a.admit("a/2", "a", false), false); // namespace a is full
  assert.equal(a.admit("b/1", "b", false), true); // a/2's wait does not hold up namespace b
  assert.equal(a.admit("c/1", "c", false), false); // global limit
  assert.equal(a.admit("c/2", "c", true), true); // already has pods: admitted over the limit
  assert.equal(a.active, 3);
  assert.deepEqual(a.release("c/2"), []); // still 2 of 2 running
  assert.deepEqual(a.release("b/1"), ["c/1"]); // a/2 still blocked by its namespace
  assert.equal(a.admit("d/1", "d", false), false); // c/1 came first
  assert.equal(a.admit("c/1", "c", false), true);
  assert.deepEqual(a.release("a/1"), ["a/2"]);
  assert.equal(a.admit("a/2", "a", false), true);
  assert.equal(a.waiting, 1);
  assert.deepEqual(a.release("zz/unknown"), []);
});

test("urgent keys are handed out before waiting ones; a waiting key added as urgent moves ahead once", async () => {
  const q = new WorkQueue();
  q.add("ns/status-1");
  q.add("ns/status-2");
  q.add("ns/new-1", true);
  q.add("ns/status-2", true); // moves to the urgent lane, behind ns/new-1
  q.add("ns/new-1"); // a plain add does not demote it
  q.add("ns/status-1"); // de-duplicated
  assert.equal(q.length, 3);
  assert.equal(q.urgentLength, 2);
  const seen = await drain(q, 1);
  assert.deepEqual(seen, ["ns/new-1", "ns/status-2", "ns/status-1"]);
});

test("an urgent add while the key runs queues it again as urgent, ahead of keys that waited", async () => {
  const q = new WorkQueue();
  const seen: string[] = [];
  const done = q.run(
    1,
    async (k) => {
      seen.push(k);
      if (seen.length === 1) {
        q.add("ns/b");
        q.add("ns/a"); // plain, then urgent: urgent wins
        q.add("ns/a", true);
      }
    },
    assert.fail,
  );
  q.add("ns/a");
  await sleep(50);
  q.shutdown();
  await done;
  assert.deepEqual(seen, ["ns/a", "ns/a", "ns/b"]);
});
