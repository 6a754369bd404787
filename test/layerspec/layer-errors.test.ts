import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileLayerWriter } from "../../src/build/layer-writer.ts";
import { scratchImage } from "../../src/build/local-build.ts";
import { InvalidInputError } from "../../src/errors.ts";
import { BuildContext } from "../../src/executor/context.ts";
import { buildFileOnlyStage } from "../../src/executor/file-stage.ts";
import { compileLayerSpec } from "../../src/layerspec/compile.ts";
import { LayerSpecSchema } from "../../src/layerspec/spec.ts";
import { parsePlatform } from "../../src/oci/platform.ts";

function workDir(t: { after(fn: () => void): void }): { context: string; layers: string } {
  const dir = mkdtempSync(join(tmpdir(), "kiln-layerspec-"));
  t.after(() => rmSync(dir, { recursive: true }));
  const context = join(dir, "context");
  for (const [p, content] of Object.entries({
    "etc/passwd": "root:x:0:0::/root:/bin/sh\n",
    "site/index.html": "<h1>hi</h1>\n",
    "site/docs/index.md": "# docs\n",
    "site/docs/keep.md": "# keep\n",
    "site/docs/old/notes.md": "# notes\n",
  })) {
    mkdirSync(join(context, p, ".."), { recursive: true });
    writeFileSync(join(context, p), content);
    chmodSync(join(context, p), 0o644);
  }
  chmodSync(join(context, "site/docs"), 0o750);
  return { context, layers: join(dir, "layers") };
}

async function build(spec: unknown, dirs: { context: string; layers: string }) {
  const plan = compileLayerSpec(LayerSpecSchema.parse(spec), 0);
  return buildFileOnlyStage(plan.stages[0]!, {
    base: scratchImage(parsePlatform("linux/amd64")),
    context: new BuildContext(dirs.context),
    writeLayer: fileLayerWriter(dirs.layers, 0),
    created: "1970-01-01T00:00:00Z",
  });
}

test("a layer spec compiles to steps without Dockerfile lines", () => {
  const plan = compileLayerSpec(
    LayerSpecSchema.parse({
      layers: [{ files: [{ src: "etc", dest: "/etc" }] }, { delete: ["/etc/motd"] }],
    }),
    0,
  );
  assert.deepEqual(
    plan.stages[0]!.steps.map((s) => [s.kind, s.line, s.createdBy]),
    [
      ["copy", undefined, "COPY etc /etc"],
      ["delete", undefined, "DELETE /etc/motd"],
    ],
  );
});

test("layer spec errors name the layer and the item, not a line", async (t) => {
  const dirs = workDir(t);
  const etc = { files: [{ src: "etc", dest: "/etc" }] };
  const cases: readonly [unknown, string][] = [
    [
      {
        layers: [
          etc,
          {
            files: [
              { src: "site", dest: "/srv" },
              { src: "nothere", dest: "/x" },
            ],
          },
        ],
      },
      "layers[1].files[1]: nothere: not found in the build context",
    ],
    [
      { layers: [etc, { files: [{ src: "site/index.html", dest: "/etc/passwd/index.html" }] }] },
      "layers[1].files[0]: /etc/passwd/index.html: /etc/passwd is not a directory",
    ],
    [
      { layers: [etc, { files: [{ src: "site", dest: "/srv" }] }, { delete: ["/etc/passwd", "/etc/motd"] }] },
      "layers[2].delete[1]: cannot delete /etc/motd: it is not in the image",
    ],
    [
      { layers: [{ files: [{ src: "site", dest: "/srv", chown: "nobody" }] }] },
      "layers[0].files[0]: unable to find user nobody: no /etc/passwd in the image",
    ],
  ];
  for (const [spec, message] of cases) {
    await assert.rejects(build(spec, dirs), (err) => {
      assert.ok(err instanceof InvalidInputError);
      assert.equal(err.message, message);
      assert.doesNotMatch(err.message, /line \d/);
      return true;
    });
  }
});

test("a layer spec's exclude exceptions re-include files inside an excluded directory", async (t) => {
  const dirs = workDir(t);
  const image = await build(
    { layers: [{ files: [{ src: "site", dest: "/srv/", exclude: ["docs", "!docs/keep.md"] }] }] },
    dirs,
  );
  assert.equal(image.layers.length, 1);
  // GNU tar reads the layer: the excluded directory keeps its own mode as the parent of keep.md.
  const listing = execFileSync("tar", ["-tvzf", join(dirs.layers, "layer-0"), "--numeric-owner"], {
    encoding: "utf8",
  })
    .trim()
    .split("\n")
    .map((l) => {
      const f = l.split(/\s+/);
      return `${f[0]} ${f[1]} ${f[5]}`;
    });
  assert.deepEqual(listing, [
    "drwxr-xr-x 0/0 srv/",
    "drwxr-x--- 0/0 srv/docs/",
    "-rw-r--r-- 0/0 srv/docs/keep.md",
    "-rw-r--r-- 0/0 srv/index.html",
  ]);
});
