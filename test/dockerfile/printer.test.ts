import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { Dockerfile, Instruction } from "../../src/dockerfile/ast.ts";
import { parseDockerfile } from "../../src/dockerfile/parser.ts";
import { printDockerfile } from "../../src/dockerfile/printer.ts";

const at = { startLine: 0, endLine: 0 };
const word = fc.stringMatching(/^[a-z0-9_./:@$%+-]{1,8}$/);
const plainWord = fc.stringMatching(/^[a-z0-9_./:@+-]{1,8}$/);
const text = fc.array(word, { minLength: 1, maxLength: 4 }).map((ws) => ws.join(" "));
const anyStrings = fc.array(fc.string({ unit: "binary" }), { maxLength: 4 });
const key = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,6}$/);
const quoted = fc.array(plainWord, { minLength: 1, maxLength: 3 }).map((ws) => `"${ws.join(" ")}"`);
const script = text.filter((s) => !s.startsWith("["));
const command = fc.oneof(
  anyStrings.map((args) => ({ form: "exec" as const, args })),
  script.map((s) => ({ form: "shell" as const, script: s })),
);
const opt = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined });
const ms = fc.oneof(
  fc.constant(0),
  fc.integer({ min: 1, max: 1e6 }).map((n) => n * 1e6),
);
const heredocName = fc.stringMatching(/^[A-Z]{1,4}$/);
const body = (name: string) =>
  fc
    .array(
      fc.stringMatching(/^[^\n]{0,12}$/).filter((l) => l.replace(/\r$/, "") !== name),
      { maxLength: 3 },
    )
    .map((ls) => ls.map((l) => `${l}\n`).join(""));
const uniqueNames = fc.uniqueArray(heredocName, { maxLength: 2 });

const base = { location: fc.constant(at), original: fc.constant("") };
const copyCommon = {
  sources: fc.array(word, { maxLength: 3 }),
  dest: word,
  chown: opt(word),
  chmod: opt(plainWord),
  link: fc.boolean(),
  exclude: fc.array(word, { maxLength: 2 }),
};
const inlineFiles = uniqueNames.chain((names) =>
  fc.tuple(...names.map((n) => fc.record({ path: fc.constant(n), data: body(n), expand: fc.boolean() }))),
);
const copyArgs = fc.oneof(
  fc.record({ json: fc.constant(true), inlineFiles: fc.constant([]) }),
  fc.record({ json: fc.constant(false), inlineFiles }),
);
const mount = fc.oneof(
  fc
    .record({ t: fc.constant("cache"), target: word, id: word, sharing: fc.constantFrom("shared", "locked") })
    .map((m) => ({
      fields: [
        ["type", m.t],
        ["target", m.target],
        ["id", m.id],
        ["sharing", m.sharing],
      ] as const,
    })),
  fc.record({ id: word, target: fc.constant("/run/s,x") }).map((m) => ({
    fields: [
      ["type", "secret"],
      ["id", m.id],
      ["target", m.target],
      ["required", undefined],
    ] as const,
  })),
);
const runArb = uniqueNames.chain((names) =>
  fc.record({
    kind: fc.constant("RUN" as const),
    ...base,
    command:
      names.length === 0
        ? command
        : script.map((s) => ({
            form: "shell" as const,
            script: `cat ${names.map((n) => `<<${n}`).join(" ")} ${s}`,
          })),
    heredocs: fc.tuple(
      ...names.map((n) =>
        fc.record({
          name: fc.constant(n),
          content: body(n),
          expand: fc.constant(true),
          chomp: fc.constant(false),
          fileDescriptor: fc.constant(0),
        }),
      ),
    ),
    mounts: fc.array(mount, { maxLength: 2 }),
    network: opt(fc.constantFrom("default", "none", "host") as fc.Arbitrary<"default" | "none" | "host">),
    security: opt(fc.constantFrom("sandbox", "insecure") as fc.Arbitrary<"sandbox" | "insecure">),
  }),
);
const pairs = fc.oneof(
  fc.array(fc.record({ key, value: fc.oneof(word, quoted, fc.constant("")) }), {
    minLength: 1,
    maxLength: 3,
  }),
  fc.tuple(fc.record({ key, value: text })),
);

const trigger: fc.Arbitrary<Instruction> = fc.oneof(
  runArb,
  fc.record({ kind: fc.constant("ENV" as const), ...base, pairs }),
  fc.record({ kind: fc.constant("CMD" as const), ...base, command }),
  fc.record({ kind: fc.constant("USER" as const), ...base, user: text }),
);

const instruction: fc.Arbitrary<Instruction> = fc.oneof(
  trigger,
  fc.record({
    kind: fc.constant("FROM" as const),
    ...base,
    image: word,
    stageName: opt(fc.stringMatching(/^[a-z][a-z0-9_.-]{0,5}$/)),
    platform: opt(word),
  }),
  fc.record({ kind: fc.constant("ENTRYPOINT" as const), ...base, command }),
  copyArgs
    .chain((a) =>
      fc.record({
        kind: fc.constant("COPY" as const),
        ...base,
        ...copyCommon,
        json: fc.constant(a.json),
        inlineFiles: fc.constant(a.inlineFiles),
        from: opt(plainWord),
        parents: fc.boolean(),
      }),
    )
    .filter((c) => c.sources.length + c.inlineFiles.length > 0),
  copyArgs
    .chain((a) =>
      fc.record({
        kind: fc.constant("ADD" as const),
        ...base,
        ...copyCommon,
        json: fc.constant(a.json),
        inlineFiles: fc.constant(a.inlineFiles),
        keepGitDir: fc.boolean(),
        checksum: opt(word),
        unpack: opt(fc.boolean()),
      }),
    )
    .filter((c) => c.sources.length + c.inlineFiles.length > 0),
  fc.record({
    kind: fc.constant("ARG" as const),
    ...base,
    args: fc.array(fc.record({ key, value: opt(fc.oneof(word, quoted, fc.constant(""))) }), {
      minLength: 1,
      maxLength: 3,
    }),
  }),
  fc.record({ kind: fc.constant("LABEL" as const), ...base, pairs }),
  fc.record({
    kind: fc.constant("EXPOSE" as const),
    ...base,
    ports: fc.array(word, { minLength: 1, maxLength: 3 }).map((p) => p.sort()),
  }),
  fc.oneof(
    fc.record({
      kind: fc.constant("VOLUME" as const),
      ...base,
      volumes: fc.array(word, { minLength: 1, maxLength: 3 }),
      json: fc.boolean(),
    }),
  ),
  fc.record({ kind: fc.constant("WORKDIR" as const), ...base, path: text }),
  fc.record({ kind: fc.constant("STOPSIGNAL" as const), ...base, signal: word }),
  fc.record({ kind: fc.constant("MAINTAINER" as const), ...base, maintainer: text }),
  fc.record({
    kind: fc.constant("SHELL" as const),
    ...base,
    shell: fc.array(fc.string(), { minLength: 1, maxLength: 3 }),
  }),
  fc.record({
    kind: fc.constant("HEALTHCHECK" as const),
    ...base,
    health: fc.oneof(
      fc.constant({ kind: "none" as const }),
      fc.record({
        kind: fc.constant("cmd" as const),
        test: fc.oneof(
          fc.array(fc.string(), { minLength: 1, maxLength: 3 }).map((a) => ["CMD", ...a]),
          script.map((s) => ["CMD-SHELL", s]),
        ),
        intervalNs: ms,
        timeoutNs: ms,
        startPeriodNs: ms,
        startIntervalNs: ms,
        retries: fc.integer({ min: 0, max: 10 }),
      }),
    ),
  }),
  trigger.map((t) => ({ kind: "ONBUILD" as const, location: at, original: "", expression: "", trigger: t })),
);

const dockerfile: fc.Arbitrary<Dockerfile> = fc
  .record({
    escapeToken: fc.constantFrom("\\", "`") as fc.Arbitrary<"\\" | "`">,
    instructions: fc.array(instruction, { minLength: 1, maxLength: 8 }),
  })
  .map(({ escapeToken, instructions }) => ({
    escapeToken,
    directives: new Map(escapeToken === "`" ? [["escape", "`"]] : []),
    instructions,
    emptyContinuationLines: [],
  }));

/** The AST without what depends on the text layout. */
function shape(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(shape);
  if (value instanceof Map) return new Map([...value].map(([k, v]) => [k, shape(v)]));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([k]) => k !== "location" && k !== "original" && k !== "expression")
        .map(([k, v]) => [k, shape(v)]),
    );
  }
  return value;
}

test("parse(print(ast)) gives the same AST", () => {
  fc.assert(
    fc.property(dockerfile, (df) => {
      const printed = printDockerfile(df);
      assert.deepEqual(shape(parseDockerfile(printed)), shape(df), printed);
    }),
    { numRuns: 300 },
  );
});

test("printing a parsed Dockerfile is stable and keeps line numbers of heredoc instructions", () => {
  const df = parseDockerfile('FROM a AS b\nRUN <<EOF\necho hi\nEOF\nCOPY --chown="x y" <<F /f\nbody\nF\n');
  const printed = printDockerfile(df);
  assert.equal(printed, 'FROM a AS b\nRUN <<EOF\necho hi\nEOF\nCOPY --chown="x y" <<F /f\nbody\nF\n');
  assert.deepEqual(
    parseDockerfile(printed).instructions.map((i) => i.location),
    df.instructions.map((i) => i.location),
  );
});
