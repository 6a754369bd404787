// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Dockerfile text with ${VAR} is the test data
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseDockerfile } from "../../src/dockerfile/parser.ts";
import {
  neededStages,
  PROXY_ARGS,
  platformArgs,
  resolveFroms,
  resolveGlobalArgs,
  stageArgValue,
} from "../../src/dockerfile/stage-resolution.ts";
import { splitStages } from "../../src/dockerfile/stages.ts";
import { DockerfileError } from "../../src/errors.ts";

const env = (o: Record<string, string>) => new Map(Object.entries(o));
const amd64 = { os: "linux", architecture: "amd64" };
const armv7 = { os: "linux", architecture: "arm", variant: "v7" };

const DOCKERFILE = `
ARG BASE=debian
ARG TAG=bookworm
ARG FULL=\${BASE}:\${TAG}-slim
ARG UNSET
FROM --platform=$BUILDPLATFORM $FULL AS Build
ARG TARGETARCH
ARG TAG
ARG LOCAL=\${TARGETARCH}-\${TAG:-none}
RUN --mount=type=cache,target=/c,from=cachestage true
FROM scratch AS cachestage
FROM build AS final
COPY --from=0 /a /a
FROM busybox AS unrelated
COPY --from=alpine:3 /b /b
`;

test("global ARGs: defaults expand in order, build args override, platform args are predefined", () => {
  const split = splitStages(parseDockerfile(DOCKERFILE));
  const predefined = platformArgs(armv7, amd64);
  assert.deepEqual(Object.fromEntries(predefined), {
    TARGETPLATFORM: "linux/arm/v7",
    TARGETOS: "linux",
    TARGETARCH: "arm",
    TARGETVARIANT: "v7",
    BUILDPLATFORM: "linux/amd64",
    BUILDOS: "linux",
    BUILDARCH: "amd64",
    BUILDVARIANT: "",
  });
  const scope = resolveGlobalArgs(split.globalArgs, env({ TAG: "trixie" }), predefined, "\\");
  assert.equal(scope.get("FULL"), "debian:trixie-slim");
  assert.equal(scope.has("UNSET"), false);
  const froms = resolveFroms(split, scope, "\\");
  assert.deepEqual(froms[0], {
    base: { kind: "image", ref: "debian:trixie-slim" },
    platform: "linux/amd64",
    usedArgs: new Set(["BUILDPLATFORM", "FULL"]),
  });
  assert.deepEqual(froms[1]?.base, { kind: "scratch" });
  assert.deepEqual(froms[2]?.base, { kind: "stage", index: 0 });
  assert.deepEqual(froms[3]?.base, { kind: "image", ref: "busybox" });
});

test("ARG in a stage: build arg, else expanded default, else the global value", () => {
  const split = splitStages(parseDockerfile(DOCKERFILE));
  const globalScope = resolveGlobalArgs(split.globalArgs, env({}), platformArgs(armv7, amd64), "\\");
  const [targetArch, tag, local] = split.stages[0]!.instructions;
  assert.ok(targetArch?.kind === "ARG" && tag?.kind === "ARG" && local?.kind === "ARG");
  const scope = { buildArgs: env({}), globalScope, stageEnv: env({ TARGETARCH: "arm" }), escapeToken: "\\" };
  assert.equal(stageArgValue(targetArch.args[0]!, targetArch, scope), "arm");
  assert.equal(stageArgValue(tag.args[0]!, tag, scope), "bookworm");
  // TAG is not re-declared in stageEnv here: a global ARG is only visible after `ARG TAG` in the stage
  assert.equal(stageArgValue(local.args[0]!, local, scope), "arm-none");
  assert.equal(
    stageArgValue(local.args[0]!, local, { ...scope, buildArgs: env({ LOCAL: "given" }) }),
    "given",
  );
  assert.deepEqual(PROXY_ARGS.slice(0, 2), ["HTTP_PROXY", "http_proxy"]);
});

test("--target prunes to the stages the target needs", () => {
  const split = splitStages(parseDockerfile(DOCKERFILE));
  const froms = resolveFroms(
    split,
    resolveGlobalArgs(split.globalArgs, env({}), platformArgs(amd64, amd64), "\\"),
    "\\",
  );
  assert.deepEqual(neededStages(split, froms, "FINAL").needed, [0, 1, 2]);
  assert.deepEqual(neededStages(split, froms, "cachestage").needed, [1]);
  const last = neededStages(split, froms);
  assert.deepEqual([last.target.name, last.needed], ["unrelated", [3]]);
  assert.throws(() => neededStages(split, froms, "nope"), DockerfileError);
  assert.throws(() => neededStages(split, froms, "0"), /target stage "0" could not be found/);
});

test("stage split: global ARGs, instructions per stage, errors", () => {
  const split = splitStages(parseDockerfile("ARG A\nFROM x AS one\nRUN a\nFROM one\nRUN b\nRUN c\n"));
  assert.deepEqual(
    [
      split.globalArgs.length,
      split.stages.map((s) => [s.index, s.name, s.from.image, s.instructions.length]),
    ],
    [
      1,
      [
        [0, "one", "x", 1],
        [1, undefined, "one", 2],
      ],
    ],
  );
  assert.throws(
    () => splitStages(parseDockerfile("ENV A=1\nFROM x")),
    /^DockerfileError: Dockerfile:1: no build stage/,
  );
  assert.throws(
    () => splitStages(parseDockerfile("FROM x AS a\nFROM y AS A")),
    /Dockerfile:2: duplicate stage name "a"/,
  );
  assert.throws(() => splitStages(parseDockerfile("ARG A")), /no stages to build/);
});
