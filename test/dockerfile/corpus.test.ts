import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parseDockerfile } from "../../src/dockerfile/parser.ts";
import { splitStages } from "../../src/dockerfile/stages.ts";
import { DockerfileError } from "../../src/errors.ts";
import { corpusDir } from "../conformance/corpus.ts";

// The shared conformance corpus: Dockerfiles adapted from public projects (see its README).
const CORPUS = corpusDir;

test("every corpus Dockerfile parses, except the expected parse failure at its line", () => {
  const cases = readdirSync(CORPUS).filter((c) => existsSync(join(CORPUS, c, "case.json")));
  assert.ok(cases.length >= 17, `only ${cases.length} cases in ${CORPUS}`);
  let parsed = 0;
  for (const name of cases) {
    const meta = JSON.parse(readFileSync(join(CORPUS, name, "case.json"), "utf8")) as {
      dockerfile: string;
      oracleDockerfile?: string;
      expectFailure?: { reason: string; line: number };
    };
    for (const file of [meta.dockerfile, meta.oracleDockerfile].filter((f) => f !== undefined)) {
      const text = readFileSync(join(CORPUS, name, file), "utf8");
      const parseFailure = meta.expectFailure?.reason.startsWith("unknown instruction")
        ? meta.expectFailure
        : undefined;
      if (parseFailure === undefined) {
        const split = splitStages(parseDockerfile(text));
        assert.ok(split.stages.length >= 1, name);
        parsed++;
        continue;
      }
      assert.throws(
        () => parseDockerfile(text),
        (err: unknown) =>
          err instanceof DockerfileError &&
          err.line === parseFailure.line &&
          err.message.startsWith(`Dockerfile:${parseFailure.line}: unknown instruction: INSTALL;`),
      );
    }
  }
  assert.ok(parsed >= 17);
});
