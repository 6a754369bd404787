/**
 * kiln's benchmark harness. `npm run bench` runs every bench/*.bench.ts (or the ones named as arguments,
 * e.g. `npm run bench -- layer`). Each benchmark times kiln next to a reference tool on the same input in
 * the same run and prints rows of one table, so a noisy machine slows both sides alike.
 */
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";

/** Runs a shell pipeline (bash, with pipefail) and resolves with its wall-clock seconds. */
export async function timeCommand(script: string, cwd?: string): Promise<number> {
  const start = performance.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn("bash", ["-o", "pipefail", "-c", script], {
      cwd,
      stdio: ["ignore", "ignore", "pipe"],
    });
    const err: Buffer[] = [];
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve() : reject(new Error(`${script}: exit ${code}: ${Buffer.concat(err).toString()}`)),
    );
  });
  return (performance.now() - start) / 1000;
}

/** Wall-clock seconds of an async function. */
export async function timeAsync(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

/**
 * The fastest of `runs` rounds of every contender, run interleaved (a, b, c, a, b, c, …) so a burst of load
 * from elsewhere falls on all of them.
 */
export async function fastestOf<K extends string>(
  runs: number,
  contenders: Readonly<Record<K, () => Promise<number>>>,
): Promise<Record<K, number>> {
  const best = {} as Record<K, number>;
  for (let i = 0; i < runs; i++) {
    for (const name of Object.keys(contenders) as K[]) {
      const s = await contenders[name]();
      best[name] = Math.min(best[name] ?? Number.POSITIVE_INFINITY, s);
    }
  }
  return best;
}

export interface Row {
  readonly name: string;
  /** kiln's seconds */
  readonly kiln: number;
  /** the reference's seconds */
  readonly reference: number;
  /** the highest kiln/reference ratio that passes; undefined for a row shown for comparison only */
  readonly target?: number;
  /** the most seconds kiln may take, for a row whose target is a time rather than a ratio */
  readonly targetSeconds?: number;
  /** free text after the verdict, e.g. throughput */
  readonly note?: string;
}

const COLUMNS = ["name", "kiln", "reference", "ratio", "target", "note"];

export function printTableHeader(): void {
  console.log(`| ${COLUMNS.join(" | ")} |`);
  console.log(`|${COLUMNS.map(() => "---").join("|")}|`);
}

/** Prints one table row; returns whether the row meets its target (rows without one always do). */
export function printRow(row: Row): boolean {
  const ratio = row.kiln / row.reference;
  const ok =
    (row.target === undefined || ratio <= row.target) &&
    (row.targetSeconds === undefined || row.kiln <= row.targetSeconds);
  const limit =
    row.target !== undefined
      ? `≤ ${row.target.toFixed(2)}`
      : row.targetSeconds !== undefined
        ? `≤ ${row.targetSeconds.toFixed(2)} s`
        : undefined;
  const target = limit === undefined ? "-" : `${limit} ${ok ? "ok" : "MISSED"}`;
  const cells = [row.name, `${row.kiln.toFixed(2)} s`, `${row.reference.toFixed(2)} s`, ratio.toFixed(2)];
  console.log(`| ${[...cells, target, row.note ?? ""].join(" | ")} |`);
  return ok;
}

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  const dir = import.meta.dirname;
  const benches = readdirSync(dir)
    .filter((f) => f.endsWith(".bench.ts"))
    .filter((f) => wanted.length === 0 || wanted.includes(f.replace(/\.bench\.ts$/, "")))
    .sort();
  printTableHeader();
  let ok = true;
  for (const file of benches) {
    const mod = (await import(join(dir, file))) as { default: () => Promise<boolean> };
    ok = (await mod.default()) && ok;
  }
  if (!ok) process.exitCode = 1;
}

// Not awaited at the top level: benchmarks import this module, which must finish evaluating first.
if (import.meta.main) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
