/**
 * RUN snapshots: after a step that changed 10 files in a 50,000-file root, kiln's walk + diff against GNU
 * `find -newer` over the same root (which also lstats every path and compares times, but keeps no state).
 * The target is absolute: the diff in at most 0.25 s. The root is generated once in bench/.work/.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { diffSnapshots, takeSnapshot } from "../src/executor/snapshot.ts";
import { fastestOf, printRow, timeAsync, timeCommand } from "./run.ts";

const WORK = join(import.meta.dirname, ".work");
const RUNS = 5;
const TARGET_SECONDS = 0.25;

export default async function snapshotBench(): Promise<boolean> {
  const root = fiftyThousandFiles();
  const stamp = join(WORK, "snapshot-stamp");
  let round = 0;
  const t = await fastestOf(RUNS, {
    kiln: async () => {
      const before = takeSnapshot(root);
      round++;
      const changed = changeTenFiles(root, round);
      writeFileSync(stamp, "");
      let entries: ReturnType<typeof diffSnapshots> = [];
      const seconds = await timeAsync(async () => {
        entries = diffSnapshots(before, takeSnapshot(root));
      });
      // the 10 files, their 10 directories and the 5 top directories above them
      assert.deepEqual(
        entries.filter((e) => e.type === "file").map((e) => e.path),
        changed,
      );
      assert.equal(entries.length, 25);
      return seconds;
    },
    find: () => timeCommand(`find '${root}' -newer '${stamp}' > /dev/null`),
  });
  const ok = t.kiln <= TARGET_SECONDS;
  printRow({
    name: "snapshot diff, 10 of 50,000 files changed, vs find -newer",
    kiln: t.kiln,
    reference: t.find,
    note: `target ≤ ${TARGET_SECONDS} s ${ok ? "ok" : "MISSED"}`,
  });
  rmSync(stamp, { force: true });
  return ok;
}

/** 5 top directories × 100 directories × 100 files of a few bytes each, as a distribution's /usr spreads out. */
function fiftyThousandFiles(): string {
  const root = join(WORK, "snapshot-root");
  if (existsSync(root)) return root;
  const tmp = `${root}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  for (let top = 0; top < 5; top++) {
    for (let dir = 0; dir < 100; dir++) {
      const d = join(tmp, `top${top}`, `d${dir}`);
      mkdirSync(d, { recursive: true });
      for (let f = 0; f < 100; f++) writeFileSync(join(d, `f${f}`), `${top}/${dir}/${f}\n`);
    }
  }
  renameSync(tmp, root);
  return root;
}

/** Rewrites 10 files spread over the tree with content that grows each round; returns their paths, sorted. */
function changeTenFiles(root: string, round: number): string[] {
  const paths = Array.from({ length: 10 }, (_, i) => `top${i % 5}/d${(i * 37) % 100}/f${(i * 53) % 100}`);
  for (const p of paths) writeFileSync(join(root, p), `round ${round}\n`.repeat(round));
  return paths.sort();
}
