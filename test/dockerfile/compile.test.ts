import assert from "node:assert/strict";
import { test } from "node:test";
import { type CompileOptions, compileDockerfile } from "../../src/dockerfile/compile.ts";
import { DockerfileError } from "../../src/errors.ts";
import type { ContainerConfig, ImageConfig } from "../../src/oci/image-config.ts";
import type { BuildPlan, Stage, Step } from "../../src/plan/plan.ts";

/** Base image configs by reference; every lookup is recorded. */
function images(configs: Record<string, ContainerConfig>) {
  const asked: string[] = [];
  const resolveImageConfig: CompileOptions["resolveImageConfig"] = async (ref, platform) => {
    asked.push(`${ref} ${platform}`);
    const config = configs[ref];
    if (config === undefined) throw new Error(`manifest unknown: ${ref}`);
    return {
      architecture: "amd64",
      os: "linux",
      rootfs: { type: "layers", diff_ids: [] },
      config,
    } as ImageConfig;
  };
  return { asked, resolveImageConfig };
}

const BUSYBOX: ContainerConfig = { Env: ["PATH=/bin"], Cmd: ["sh"] };

async function compile(text: string, options: Partial<CompileOptions> = {}) {
  const base = images({ "busybox:latest": BUSYBOX, busybox: BUSYBOX });
  const plan = await compileDockerfile(text, {
    platforms: ["linux/amd64"],
    buildPlatform: "linux/amd64",
    resolveImageConfig: base.resolveImageConfig,
    ...options,
  });
  return { plan, asked: base.asked };
}

const stage = (plan: BuildPlan, name: string): Stage => {
  const s = plan.stages.find((x) => x.name === name);
  assert.ok(s, `stage ${name} in ${plan.stages.map((x) => x.name).join(",")}`);
  return s;
};
const only = <K extends Step["kind"]>(s: Stage, kind: K) =>
  s.steps.filter((x): x is Extract<Step, { kind: K }> => x.kind === kind);

async function rejects(
  text: string,
  line: number | undefined,
  detail: RegExp,
  options: Partial<CompileOptions> = {},
) {
  await assert.rejects(compile(text, options), (err: unknown) => {
    assert.ok(err instanceof DockerfileError, String(err));
    assert.equal(err.line, line, err.message);
    assert.match(err.detail, detail);
    return true;
  });
}

test("ARG scope: global ARGs in FROM, re-declared ARGs, build args; ARG values reach RUN's env, never the config", async () => {
  const { plan } = await compile(
    [
      "ARG BASE=busybox",
      "ARG TAG=latest",
      "ARG GLOBAL_ONLY=g",
      "FROM ${BASE}:${TAG}",
      "ARG TAG",
      "ARG LOCAL=${TAG}-local",
      "ARG NOT_GIVEN",
      "ARG TARGETARCH",
      "ENV SEEN=$TAG/$LOCAL/${GLOBAL_ONLY:-none}/${NOT_GIVEN:-unset}/$TARGETARCH",
      "RUN echo $LOCAL",
    ].join("\n"),
    { buildArgs: { LOCAL: "given", HTTP_PROXY: "http://proxy:3128", UNUSED: "x" } },
  );
  const s = stage(plan, "0");
  assert.deepEqual(s.base, { kind: "image", image: "busybox:latest" });
  assert.deepEqual(s.config.Env, ["PATH=/bin", "SEEN=latest/given/none/unset/amd64"]);
  const [run] = only(s, "run");
  assert.deepEqual(run?.argv, ["/bin/sh", "-c", "echo $LOCAL"]);
  assert.deepEqual(run?.env, [
    "PATH=/bin",
    "TAG=latest",
    "LOCAL=given",
    "TARGETARCH=amd64",
    "SEEN=latest/given/none/unset/amd64",
    "HTTP_PROXY=http://proxy:3128",
  ]);
  assert.deepEqual(run?.usedArgs, { TAG: "latest", LOCAL: "given", TARGETARCH: "amd64" });
  assert.equal(run?.line, 10);
  assert.equal(run?.createdBy, "RUN /bin/sh -c echo $LOCAL # buildkit");
});

test("ENV: pairs expand against the values from before the line; a base variable is replaced in place", async () => {
  const { plan } = await compile(
    [
      "FROM busybox",
      "ENV A=1",
      "ENV A=2 B=$A PATH=/opt:$PATH",
      'ENV C="$A $B" D=\\$A',
      "ENV LEGACY a  b",
    ].join("\n"),
  );
  assert.deepEqual(stage(plan, "0").config.Env, [
    "PATH=/opt:/bin",
    "A=2",
    "B=1",
    "C=2 1",
    "D=$A",
    "LEGACY=a  b",
  ]);
});

test("config instructions: EXPOSE ranges, VOLUME, LABEL, HEALTHCHECK, SHELL-wrapped CMD, ENTRYPOINT drops the base CMD", async () => {
  const { plan } = await compile(
    [
      "FROM busybox",
      "EXPOSE 80 53/UDP 7000-7002/udp",
      'VOLUME /data ["/cache"]',
      "LABEL a=1 b='two words'",
      "LABEL a=2",
      "HEALTHCHECK --interval=5s --retries=2 CMD curl -f http://localhost/",
      "STOPSIGNAL SIGINT",
      "USER app:staff",
      'SHELL ["/bin/bash", "-c"]',
      "ENTRYPOINT run.sh --flag",
      "MAINTAINER kiln@example.com",
      "ONBUILD COPY . /src",
    ].join("\n"),
  );
  const s = stage(plan, "0");
  assert.deepEqual(s.config, {
    Cmd: null,
    ExposedPorts: { "80/tcp": {}, "53/udp": {}, "7000/udp": {}, "7001/udp": {}, "7002/udp": {} },
    // Not JSON as a whole: shell-form words, quotes removed by the expansion, as Docker reads it.
    Volumes: { "/data": {}, "[/cache]": {} },
    Labels: { a: "2", b: "two words" },
    Healthcheck: { Test: ["CMD-SHELL", "curl -f http://localhost/"], Interval: 5e9, Retries: 2 },
    StopSignal: "SIGINT",
    User: "app:staff",
    Shell: ["/bin/bash", "-c"],
    Entrypoint: ["/bin/bash", "-c", "run.sh --flag"],
    OnBuild: ["COPY . /src"],
    Env: ["PATH=/bin"],
  });
  assert.equal(s.author, "kiln@example.com");
  assert.ok(s.steps.every((x) => x.kind === "config"));
  assert.deepEqual(
    s.steps.map((x) => x.line),
    [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
  );
  const { plan: kept } = await compile('FROM busybox\nCMD ["a"]\nENTRYPOINT ["b"]');
  assert.deepEqual(stage(kept, "0").config.Cmd, ["a"]);
});

test("WORKDIR resolves against the previous one and becomes a mkdir step owned by the current USER", async () => {
  const { plan } = await compile(
    [
      "FROM scratch",
      "WORKDIR /app",
      "WORKDIR sub/../lib",
      "USER 1000:100",
      "WORKDIR /home/u",
      "WORKDIR /",
      "COPY x ./",
    ].join("\n"),
  );
  const s = stage(plan, "0");
  assert.deepEqual(
    only(s, "mkdir").map((m) => [m.path, m.owner, m.createdBy]),
    [
      ["/app", undefined, "WORKDIR /app"],
      ["/app/lib", undefined, "WORKDIR /app/lib"],
      ["/home/u", { user: "1000", group: "100" }, "WORKDIR /home/u"],
    ],
  );
  assert.deepEqual(s.config, {
    Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    WorkingDir: "/",
    User: "1000:100",
  });
  assert.equal(only(s, "copy")[0]?.ops[0]?.dest, "/");
});

test("COPY and ADD become copy ops: destinations against WORKDIR, --from stage/index/image, URLs, heredocs", async () => {
  const { plan, asked } = await compile(
    [
      "FROM busybox AS Build",
      "WORKDIR /src",
      "ARG MODE=0640",
      "COPY --chown=app --chmod=$MODE a b ./out/",
      "COPY <<EOF <<'RAW' /etc/",
      "mode=$MODE",
      "EOF",
      "$MODE",
      "RAW",
      "FROM scratch",
      "COPY --from=build /src /a",
      "COPY --from=0 /src/out/a .",
      "COPY --from=busybox:latest /bin/busybox /bin/",
      `ADD --checksum=sha256:${"a".repeat(64)} https://example.com/dl/tool.tgz /opt/`,
    ].join("\n"),
  );
  const build = stage(plan, "build");
  const [copy, inline] = only(build, "copy");
  assert.deepEqual(copy?.ops, [
    {
      dest: "/src/out/",
      chown: { user: "app" },
      chmod: "0640",
      exclude: [],
      parents: false,
      from: { kind: "context" },
      sources: ["a", "b"],
      extract: false,
    },
  ]);
  assert.deepEqual(inline?.ops[0]?.from, {
    kind: "inline",
    files: [
      { name: "EOF", content: "mode=0640\n" },
      { name: "RAW", content: "$MODE\n" },
    ],
  });
  const last = stage(plan, "1");
  assert.deepEqual(
    only(last, "copy").map((c) => [c.ops[0]?.from, c.ops[0]?.dest, c.ops[0]?.extract]),
    [
      [{ kind: "stage", stage: "build" }, "/a", false],
      [{ kind: "stage", stage: "build" }, "/", false],
      [{ kind: "image", image: "busybox:latest" }, "/bin/", false],
      [
        { kind: "url", url: "https://example.com/dl/tool.tgz", checksum: `sha256:${"a".repeat(64)}` },
        "/opt/",
        false,
      ],
    ],
  );
  assert.deepEqual(
    plan.stages.map((s) => s.name),
    ["build", "1"],
  );
  assert.deepEqual(asked, ["busybox linux/amd64", "busybox:latest linux/amd64"]);
});

test("--target builds what the target needs, dependencies first; other stages are never resolved", async () => {
  const { plan, asked } = await compile(
    [
      "FROM busybox AS base",
      "FROM no-such-image AS unused",
      "RUN false",
      "FROM scratch AS final",
      "COPY --from=LIB /x /x",
      "FROM base AS Lib",
      "COPY x /x",
    ].join("\n"),
    { target: "FINAL" },
  );
  assert.deepEqual(
    plan.stages.map((s) => [s.name, s.base]),
    [
      ["base", { kind: "image", image: "busybox" }],
      ["lib", { kind: "stage", stage: "base" }],
      ["final", { kind: "scratch" }],
    ],
  );
  assert.equal(plan.target, "final");
  assert.deepEqual(asked, ["busybox linux/amd64"]);
});

test("the base image's ONBUILD triggers run right after FROM and are not inherited", async () => {
  const { plan } = await compile("FROM parent\nENV AFTER=$T", {
    resolveImageConfig: images({
      parent: { Env: ["PATH=/bin"], OnBuild: ["ENV T=from-trigger", "COPY . /app"] },
    }).resolveImageConfig,
  });
  const s = stage(plan, "0");
  assert.deepEqual(
    s.steps.map((x) => [x.kind, x.line, x.createdBy]),
    [
      ["config", 1, "ENV T=from-trigger"],
      ["copy", 1, "COPY . /app # buildkit"],
      ["config", 2, "ENV AFTER=from-trigger"],
    ],
  );
  assert.equal(s.config.OnBuild, null);
});

test("one plan per platform: platform args, FROM --platform, stages named per build platform", async () => {
  const { plan } = await compile(
    "FROM --platform=$BUILDPLATFORM busybox AS tools\nFROM busybox\nARG TARGETARCH\nENV ARCH=$TARGETARCH",
    {
      platforms: ["linux/amd64", "linux/arm64"],
      target: undefined,
    },
  );
  assert.deepEqual(plan.platforms, ["linux/amd64", "linux/arm64"]);
  assert.deepEqual(
    plan.stages.map((s) => [s.name, s.platform, s.buildFor, s.config.Env]),
    [
      ["1", "linux/amd64", undefined, ["PATH=/bin", "ARCH=amd64"]],
      ["1", "linux/arm64", undefined, ["PATH=/bin", "ARCH=arm64"]],
    ],
  );
});

test("errors name the line before anything is built", async () => {
  await rejects(
    "ARG TAG\nFROM busybox:$TAG",
    2,
    /invalid reference.*\(TAG is not defined: declare it with ARG/,
  );
  await rejects("FROM $NOPE", 1, /base name \(image\) cannot be empty \(NOPE is not defined/);
  await rejects("FROM busybox\nCOPY --from=3 /x /x", 2, /there is no stage with index 3/);
  await rejects(
    "FROM busybox\nCOPY --from=nothere /x /x",
    2,
    /COPY --from nothere: manifest unknown: nothere/,
  );
  await rejects("FROM missing:1", 1, /FROM missing:1: manifest unknown/);
  await rejects("FROM busybox\nCOPY --chmod=u+x a /b", 2, /--chmod=u\+x: expected an octal mode/);
  await rejects(
    "FROM busybox\nADD --checksum=sha256:abc a /b",
    2,
    /--checksum needs exactly one http\(s\) source/,
  );
  await rejects("FROM busybox\nCOPY https://example.com/x /x", 2, /cannot copy from a URL: use ADD/);
  await rejects("FROM busybox\nEXPOSE 80-70", 2, /invalid port range/);
  await rejects(
    "FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\nCOPY --from=a /y /y",
    3,
    /circular dependency detected on stage: b/,
  );
  await rejects("FROM busybox", undefined, /target stage "nope" could not be found/, { target: "nope" });
});

test("an absolute WORKDIR is recorded as written, a relative one joined and cleaned (BuildKit)", async () => {
  const a = (await compile("FROM busybox AS a\nWORKDIR /usr/src/app/\n")).plan;
  assert.equal(stage(a, "a").config.WorkingDir, "/usr/src/app/");
  assert.deepEqual(
    only(stage(a, "a"), "mkdir").map((m) => m.path),
    ["/usr/src/app"],
  );
  const b = (await compile("FROM busybox AS b\nWORKDIR /srv/\nWORKDIR ./x/../y\n")).plan;
  assert.equal(stage(b, "b").config.WorkingDir, "/srv/y");
});
