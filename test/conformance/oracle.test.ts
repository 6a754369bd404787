import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type ComparableImage, type FileTree, readComparableImage } from "../helpers/image-tree.ts";
import { type CorpusCase, loadCorpus } from "./corpus.ts";
import { dockerExpectation } from "./divergences.ts";
import { type Oracle, readOracleImage, startOracle } from "./oracle.ts";

/**
 * Proves the harness: every corpus case builds with buildah (or fails as case.json records), and the
 * flattened image holds values read off the Dockerfile. Prints buildah's `bud` time per case.
 */

const cases = await loadCorpus();
/** Cases of the harness's own: an ONBUILD parent and its child, for dependsOn and pushedTo. */
const harnessCases = await loadCorpus(join(import.meta.dirname, "oracle-cases"));

const sha = (content: string | Buffer) => createHash("sha256").update(content).digest("hex");
const contextSha = async (c: CorpusCase, rel: string) =>
  sha(await readFile(join(c.dir, c.spec.context, rel)));

/** `file 0644 0:0`, `dir 01777 999:999`, `symlink -> target` or `absent`: the facts a Dockerfile decides. */
function show(tree: FileTree, path: string): string {
  const n = tree.get(path);
  if (n === undefined) return "absent";
  if (n.type === "symlink") return `symlink -> ${n.linkname}`;
  return `${n.type} 0${n.mode.toString(8)} ${n.uid}:${n.gid}`;
}

/** Every path with what `show` says of it. */
const listing = (tree: FileTree) => [...tree.keys()].map((p) => `${p} ${show(tree, p)}`);

/** Paths below `dir` (not `dir` itself), relative to it. */
const below = (tree: FileTree, dir: string) =>
  [...tree.keys()].filter((p) => p.startsWith(`${dir}/`)).map((p) => p.slice(dir.length + 1));

type Check = (img: ComparableImage, c: CorpusCase) => Promise<void> | void;

const CHECKS: Readonly<Record<string, Check>> = {
  "add-tar-vs-copy": async ({ tree }, c) => {
    // ADD onto / merges the archive with busybox's directories; entries keep their owners and modes.
    assert.equal(show(tree, "/bin/busybox"), "file 0755 0:0");
    assert.equal(show(tree, "/etc/app.conf"), "file 0640 1234:5678");
    assert.equal(show(tree, "/extracted/plain/opt/tool"), "dir 0750 1234:5678");
    assert.equal(show(tree, "/extracted/gzip/opt/tool/setuid-helper"), "file 04755 0:0");
    assert.equal(show(tree, "/extracted/bzip2/var/empty-dir"), "dir 01777 0:0");
    assert.equal(show(tree, "/extracted/xz/opt/tool/run-link"), "symlink -> run.sh");
    assert.equal(tree.get("/extracted/xz/opt/tool/run.sh")?.linkGroup, "/extracted/xz/opt/tool/run-hard");
    // buildah does not apply ADD --chown to extracted entries.
    assert.equal(show(tree, "/extracted/chown/etc/app.conf"), "file 0640 1234:5678");
    // COPY of archives and ADD of a non-archive named .tar copy the bytes.
    for (const f of ["rootfs.tar", "rootfs.tar.gz", "notatar.tar"]) {
      assert.equal(tree.get(`/archives/${f}`)?.sha256, await contextSha(c, f), f);
    }
    assert.equal(tree.get("/added/plain.txt")?.sha256, await contextSha(c, "plain.txt"));
  },
  "arg-before-from": ({ tree, config }) => {
    const args = [
      "BOOKWORM_TAG=bookworm-slim",
      "JAVA_VERSION=21.0.5_11",
      "COMMIT_SHA=4f2d0c1e9b8a",
      "GLOBAL_ONLY=<not visible>",
      "NOT_GIVEN=<unset>",
      "EMPTY_DEFAULT=",
    ];
    assert.equal(tree.get("/build-args.txt")?.sha256, sha(`${args.join("\n")}\n`));
    assert.equal(show(tree, "/opt/java/openjdk/release"), "file 0644 0:0");
    assert.deepEqual(config.Env, [
      "LANG=C.UTF-8",
      "JAVA_HOME=/opt/java/openjdk",
      "PATH=/opt/java/openjdk/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]);
    assert.equal(config.Labels?.["org.opencontainers.image.version"], "21.0.5_11");
    assert.equal(config.Labels?.["org.opencontainers.image.base.name"], "debian:bookworm-slim");
    assert.equal(config.Labels?.["org.opencontainers.image.revision"], "4f2d0c1e9b8a");
  },
  "c-gcc-busybox": async ({ tree }, c) => {
    assert.equal(show(tree, "/usr/local/bin/stress"), "file 0755 0:0");
    // COPY --from of a symlink to a directory copies the directory's contents.
    assert.equal(tree.get("/opt/stress/stress")?.sha256, tree.get("/usr/local/bin/stress")?.sha256);
    assert.equal(show(tree, "/opt/stress/current"), "absent");
    assert.equal(tree.get("/usr/share/doc/stress/stress.c")?.sha256, await contextSha(c, "src/stress.c"));
  },
  "c-static-scratch-index": ({ tree, config }) => {
    assert.deepEqual(listing(tree), [
      "/hello file 0755 0:0",
      "/tmp dir 0755 0:0",
      "/usr dir 0755 0:0",
      "/usr/share dir 0755 0:0",
      "/usr/share/hello dir 0755 0:0",
      "/usr/share/hello/hello.txt file 0644 0:0",
    ]);
    assert.deepEqual(config.Cmd, ["/hello"]);
  },
  "continuations-comments": async ({ tree, config }, c) => {
    assert.equal(show(tree, "/var/log/nginx/access.log"), "symlink -> /dev/stdout");
    assert.equal(show(tree, "/var/log/nginx/error.log"), "symlink -> /dev/stderr");
    assert.equal(show(tree, "/entrypoint.sh"), "symlink -> docker-entrypoint.sh");
    const script = "/docker-entrypoint.d/10-listen-on-ipv6-by-default.sh";
    assert.equal(show(tree, script), "file 0755 0:0");
    assert.equal(tree.get(script)?.sha256, await contextSha(c, "10-listen-on-ipv6-by-default.sh"));
    const packages = [
      "nginx=1.21.2-1~buster",
      "nginx-module-xslt=1.21.2-1~buster",
      "nginx-module-njs=1.21.2+0.6.2-1~buster",
    ];
    assert.equal(tree.get("/etc/nginx/packages.txt")?.sha256, sha(`${packages.join("\n")}\n`));
    assert.deepEqual(config.Cmd, ["nginx", "-g", "daemon off;"]);
    assert.equal(config.StopSignal, "SIGQUIT");
    assert.ok(config.Env?.includes("PKG_RELEASE=1~buster"));
  },
  "copy-chown-chmod": ({ tree, config }) => {
    assert.equal(show(tree, "/somedir/55-mygroup/files1.txt"), "file 0644 55:2000");
    assert.equal(show(tree, "/somedir/bin/sub"), "dir 0755 2:2");
    assert.equal(show(tree, "/somedir/1/sub/deeper.txt"), "file 0644 1:1");
    assert.equal(show(tree, "/somedir/10-11/inner.txt"), "file 0644 10:11");
    assert.equal(show(tree, "/somedir/myuser/files2.txt"), "file 0644 1500:2000");
    assert.equal(show(tree, "/somedir/jenkins/files1.txt"), "file 0644 1000:1000");
    assert.equal(show(tree, "/somedir/jenkins/files2.txt"), "file 0644 1500:2000");
    // --chmod applies to the directories copied too.
    assert.equal(show(tree, "/somedir/myuser-mygroup-644/sub"), "dir 0644 1500:2000");
    assert.deepEqual(below(tree, "/somedir/55-mygroup"), [
      "files1.txt",
      "files2.txt",
      "inner.txt",
      "sub",
      "sub/deeper.txt",
    ]);
    assert.equal(show(tree, "/new/deeply"), "dir 0755 1000:1000");
    assert.equal(show(tree, "/usr/local/bin/tool-a"), "file 0755 0:0");
    assert.equal(show(tree, "/var/jenkins_home/secret.txt"), "file 0640 0:1000");
    assert.equal(show(tree, "/var/jenkins_home/added.txt"), "file 0644 1000:1000");
    assert.equal(show(tree, "/var/jenkins_home/copied-as-root.txt"), "file 0644 0:0");
    assert.equal(config.User, "jenkins");
  },
  dockerignore: ({ tree, config }) => {
    assert.deepEqual(below(tree, "/usr/src/app"), [
      ".yarn",
      ".yarn/cache",
      ".yarn/cache/a.zip",
      ".yarn/patches",
      ".yarn/patches/p.patch",
      ".yarn/releases",
      ".yarn/releases/yarn-4.cjs",
      ".yarnrc.yml",
      "LICENSE",
      "docs",
      "docs/keep.md",
      "go.mod",
      "go.sum",
      "package.json",
      "pkg",
      "pkg-again",
      "pkg-again/api",
      "pkg-again/api/api.go",
      "pkg-again/docs",
      "pkg-again/docs/README.md",
      "pkg-again/nested.yml",
      "pkg-again/node_modules",
      "pkg-again/node_modules/x",
      "pkg-again/node_modules/x/index.js",
      "pkg/api",
      "pkg/api/api.go",
      "pkg/docs",
      "pkg/docs/README.md",
      "pkg/nested.yml",
      "pkg/node_modules",
      "pkg/node_modules/x",
      "pkg/node_modules/x/index.js",
      "public",
      "public/index.html",
      "scripts",
      "scripts/build.py",
    ]);
    assert.deepEqual(below(tree, "/yarn-copy"), [
      ".yarnrc.yml",
      "cache",
      "cache/a.zip",
      "patches",
      "patches/p.patch",
      "releases",
      "releases/yarn-4.cjs",
    ]);
    assert.equal(config.WorkingDir, "/usr/src/app/");
  },
  "escape-directive": ({ tree, config }) => {
    assert.equal(tree.get("/C:\\Program FilesPowerShell/pwsh.exe")?.sha256, sha("pwsh 7.0.0\r\n"));
    assert.equal(show(tree, "/C:\\Program FilesPowerShell/pwsh.exe"), "file 0644 0:0");
    assert.equal(
      tree.get("/C:\\Program FilesPowerShell/Modules/path.txt")?.sha256,
      sha("C:\\Program Files\\PowerShell\\Modules\r\n"),
    );
    assert.equal(
      tree.get("/Windows/System32/machine-path.txt")?.sha256,
      sha("setx PATH %PATH%;%ProgramFiles%\\PowerShell; /M\n"),
    );
    assert.equal(config.User, "1000:1000");
    assert.ok(config.Env?.includes("PSCORE=\\PowerShell\\pwsh.exe"));
    assert.equal(config.Labels?.["org.example.windows-dir"], "C:\\Windows");
  },
  "exec-shell-forms": ({ tree, config }) => {
    const results: Record<string, string> = {
      "out-exec-sh.txt": "exec-form-with-explicit-sh /bin/sh\n",
      "out-expanded-root": "",
      "out-json-escape.txt": "tab:\tend\n",
      "out-literal-$HOME": "",
      "out-sh.txt": "sh:x86_64-unknown-linux-gnu\n",
      "out-shellopts.txt": "pipefail on\n",
      "out-target.txt": "x86_64-unknown-linux-gnu\n",
      "runtime.txt": "runtime shell\n",
    };
    assert.deepEqual(below(tree, "/results"), Object.keys(results));
    for (const [name, content] of Object.entries(results)) {
      assert.equal(tree.get(`/results/${name}`)?.sha256, sha(content), name);
    }
    // busybox has no /run; the one buildah's RUN leaves is a mount stub, removed.
    assert.equal(show(tree, "/run"), "absent");
    assert.deepEqual(config.Shell, ["/bin/sh", "-e", "-c"]);
    assert.deepEqual(config.Cmd, ["/start.sh", "--ignored-param1"]);
  },
  heredocs: async ({ tree, config }, c) => {
    assert.equal(show(tree, "/docker-entrypoint.sh"), "file 0755 0:0");
    assert.equal(
      tree.get("/docker-entrypoint.sh")?.sha256,
      await contextSha(c, "heredoc/docker-entrypoint.sh"),
    );
    const files: Record<string, string> = {
      "/etc/buildkit/buildkitd.toml": 'debug = true\nroot = "$HOME/.local/share/buildkit"\n',
      "/etc/buildkit/delve.env": "DELVE_PORT=5000\n",
      "/etc/apt/apt.conf.d/no-recommends": 'APT::Install-Recommends "false";\n',
      "/etc/apt/apt.conf.d/no-suggests": 'APT::Install-Suggests "false";\n',
      "/var/lib/buildkit/README": "state dir ready\n",
      "/etc/buildkit/motd": "built with heredocs\n",
    };
    for (const [path, content] of Object.entries(files)) {
      assert.equal(show(tree, path), "file 0644 0:0", path);
      assert.equal(tree.get(path)?.sha256, sha(content), path);
    }
    assert.equal(show(tree, "/usr/bin/runc"), "file 0755 0:0");
    assert.deepEqual(config.Entrypoint, ["/docker-entrypoint.sh"]);
    assert.ok(config.Env?.includes("DELVE_PORT=5000"));
  },
  "links-symlinks-hardlinks": async ({ tree, config }, c) => {
    for (const applet of ["busybox", "sh", "ls", "cat", "echo"]) {
      const n = tree.get(`/opt/rootfs/bin/${applet}`);
      assert.equal(n?.linkGroup, "/opt/rootfs/bin/busybox", applet);
      assert.equal(n?.sha256, await contextSha(c, "busybox.sh"), applet);
    }
    assert.equal(show(tree, "/opt/rootfs/lib64"), "symlink -> lib");
    assert.equal(show(tree, "/opt/rootfs/bin/env-link"), "symlink -> ../../bin/busybox");
    assert.equal(show(tree, "/opt/rootfs/bin/dangling"), "symlink -> /nonexistent/target");
    assert.equal(show(tree, "/opt/rootfs/bin/loop-a"), "symlink -> loop-b");
    assert.equal(
      show(tree, "/opt/rootfs/bin/long-target"),
      `symlink -> ${"very-long-symlink-target-".repeat(6)}end`,
    );
    // A hard link to a base-layer file: buildah's layer holds a copy, not a link.
    assert.equal(tree.get("/opt/rootfs/bin/getconf")?.sha256, tree.get("/usr/bin/getconf")?.sha256);
    assert.equal(tree.get("/opt/rootfs/bin/getconf")?.linkGroup, undefined);
    assert.equal(tree.get("/srv/b/two")?.linkGroup, "/srv/a/one");
    assert.equal(tree.get("/srv/a/three")?.linkGroup, "/srv/a/one");
    assert.equal(show(tree, "/usr/share/common-licenses"), "symlink -> /opt/rootfs/etc");
    assert.equal(show(tree, "/var/lock"), "dir 0755 0:0");
    assert.equal(show(tree, "/usr/local/man/man1/x.1"), "file 0644 0:0");
    assert.equal(tree.get("/etc/os-release")?.sha256, sha("ID=corpus\n"));
    assert.equal(show(tree, "/etc/issue"), "symlink -> /etc/os-release");
    assert.equal(show(tree, "/etc/localtime"), "symlink -> /usr/share/zoneinfo/Europe/Paris");
    assert.deepEqual(config.Cmd, ["/opt/rootfs/bin/sh"]);
  },
  "metadata-config": ({ tree, config }) => {
    assert.equal(show(tree, "/data/after-volume.txt"), "absent");
    for (const v of ["/cache", "/data", "/tmp/scratch", "/var/lib/vaultwarden", "/var/log/vaultwarden"]) {
      assert.equal(show(tree, v), "dir 0755 0:0", v);
      assert.deepEqual(below(tree, v), [], v);
    }
    assert.deepEqual(config.Volumes, [
      "/cache",
      "/data",
      "/tmp/scratch",
      "/var/lib/vaultwarden",
      "/var/log/vaultwarden",
    ]);
    assert.deepEqual(config.ExposedPorts, [
      "3012/tcp",
      "53/tcp",
      "53/udp",
      "5353/udp",
      "7000-7002/udp",
      "80/tcp",
      "9999/sctp",
    ]);
    assert.deepEqual(config.Labels, {
      "com.example.empty": "",
      "com.example.equals": "a=b=c",
      "com.example.multi.word": "several words here",
      "com.example.override": "second",
      "com.example.quoted-key": "value",
      "org.opencontainers.image.description": "Unofficial Bitwarden compatible server written in Rust",
      "org.opencontainers.image.licenses": "AGPL-3.0-only",
      "org.opencontainers.image.title": "vaultwarden",
    });
    assert.deepEqual(config.Healthcheck, {
      Test: ["CMD", "/healthcheck.sh"],
      Interval: 60e9,
      Timeout: 10e9,
      StartPeriod: 30e9,
      Retries: 5,
    });
    assert.equal(config.StopSignal, "SIGINT");
    assert.equal(config.WorkingDir, "/");
    assert.equal(show(tree, "/healthcheck.sh"), "file 0755 0:0");
  },
  "scratch-copy-only": async ({ tree, config }, c) => {
    assert.deepEqual(listing(tree), [
      "/etc dir 0755 0:0",
      "/etc/group file 0644 0:0",
      "/etc/passwd file 0644 0:0",
      "/hello file 0755 0:0",
      "/home dir 0755 1000:1000",
      "/home/user dir 0755 1000:1000",
      "/home/user/hello.txt file 0644 1000:1000",
      "/root dir 0755 0:0",
      "/root/hello.txt file 0600 0:0",
      "/usr dir 0755 0:0",
      "/usr/share dir 0755 0:0",
      "/usr/share/hello dir 0755 0:0",
      "/usr/share/hello/README file 0644 0:0",
    ]);
    assert.equal(tree.get("/hello")?.sha256, await contextSha(c, "hello"));
    assert.equal(tree.get("/root/hello.txt")?.sha256, await contextSha(c, "hello.txt"));
    assert.deepEqual(config.Env, ["PATH=/"]);
    assert.deepEqual(config.Cmd, ["/hi"]);
  },
  "whiteouts-opaque": async ({ tree, config }, c) => {
    for (const gone of ["/usr/share/man", "/etc/motd", "/etc/issue.net"])
      assert.equal(show(tree, gone), "absent");
    assert.equal(show(tree, "/usr/share/doc"), "dir 0755 0:0");
    assert.deepEqual(below(tree, "/usr/share/doc"), []);
    assert.deepEqual(below(tree, "/var/lib/apt/lists"), []);
    assert.deepEqual(below(tree, "/etc/apt/apt.conf.d"), ["99mysql"]);
    assert.equal(show(tree, "/etc/cron.daily"), "dir 0700 0:0");
    assert.deepEqual(below(tree, "/etc/cron.daily"), []);
    // useradd -r gives the first system id, 999.
    assert.equal(show(tree, "/var/lib/mysql"), "dir 01777 999:999");
    assert.equal(show(tree, "/var/run"), "symlink -> /run");
    assert.equal(show(tree, "/run/mysqld"), "dir 01775 999:999");
    assert.equal(show(tree, "/etc/debian_version"), "dir 0755 0:0");
    assert.equal(tree.get("/etc/debian_version/major")?.sha256, sha("12\n"));
    assert.equal(tree.get("/etc/host.conf")?.sha256, sha("mysql host\n"));
    assert.equal(tree.get("/etc/mysql/my.cnf")?.sha256, await contextSha(c, "config/my.cnf"));
    assert.equal(show(tree, "/entrypoint.sh"), "symlink -> usr/local/bin/docker-entrypoint.sh");
    assert.deepEqual(config.Volumes, ["/var/lib/mysql"]);
    assert.deepEqual(config.ExposedPorts, ["3306/tcp", "33060/tcp"]);
  },
  "workdir-user": ({ tree, config }) => {
    assert.equal(tree.get("/home/jovyan/work/pwd-1.txt")?.sha256, sha("/tmp/notebooks/examples/2024\n"));
    assert.equal(tree.get("/home/jovyan/work/pwd-2.txt")?.sha256, sha("/tmp/notebooks/examples/archive\n"));
    assert.equal(show(tree, "/home/jovyan/work/made-with-explicit-group"), "file 0644 1000:100");
    // fix-permissions sets setuid/setgid on directories and g+rw on files.
    assert.equal(show(tree, "/opt/conda"), "dir 06775 1000:100");
    assert.equal(show(tree, "/opt/conda/bin/micromamba"), "file 0775 1000:100");
    assert.equal(show(tree, "/etc/passwd"), "file 0664 0:0");
    assert.equal(show(tree, "/srv/shared"), "dir 0755 0:0");
    assert.equal(show(tree, "/usr/local/bin/before-notebook.d/10activate-conda-env.sh"), "file 0755 0:0");
    assert.equal(config.WorkingDir, "/home/jovyan");
    assert.equal(config.User, "1000");
    assert.deepEqual(config.Entrypoint, ["tini", "-g", "--", "start.sh"]);
  },
};

describe("conformance oracle: buildah builds every corpus case", { concurrency: false }, () => {
  let oracle: Oracle;
  before(async () => {
    oracle = await startOracle([...cases, ...harnessCases]);
  });
  after(() => oracle?.close());

  for (const c of cases) {
    test(c.name, async (t) => {
      const result = await oracle.build(c);
      t.diagnostic(`buildah bud ${result.budSeconds}s${result.cached ? " (cached result)" : ""}`);
      if (c.spec.expectFailure) {
        assert.ok(result.kind === "failure", `${c.name} must fail: ${c.spec.expectFailure.reason}`);
        assert.equal(result.exitCode, c.spec.buildahExitCode);
        assert.equal(result.error, c.spec.buildahError);
        return;
      }
      assert.ok(result.kind === "image", result.kind === "failure" ? result.error : "");
      const image = await readOracleImage(result);
      assert.equal(`${image.config.os}/${image.config.architecture}`, "linux/amd64");
      assert.notEqual(
        show(image.tree, "/etc/hosts"),
        "file 0755 0:0",
        "buildah's /etc/hosts stub is removed",
      );
      // The recorded divergences still describe buildah's image (dockerExpectation checks each one).
      dockerExpectation(image, c.spec.knownBuildahDivergences ?? []);
      for (const field of c.spec.ociExportDrops ?? []) {
        const ociOnly = await readComparableImage(result.layout);
        assert.equal(field in ociOnly.config, false, `${field} is not in the OCI config`);
        assert.equal(field in image.config, true, `${field} is in the Docker config`);
      }
      const check = CHECKS[c.name];
      if (check === undefined) t.diagnostic("no case-specific checks for this case yet");
      else await check(image, c);
    });
  }

  test("dependsOn: the parent is built first and pushed to its pushedTo name, Docker config and all", async () => {
    const [parent, child] = ["onbuild-parent", "onbuild-child"].map(
      (n) => harnessCases.find((c) => c.name === n)!,
    );
    assert.ok(parent !== undefined && child !== undefined);
    const built = await oracle.build(child);
    assert.ok(built.kind === "image", built.kind === "failure" ? built.error : "");
    const { tree, config } = await readOracleImage(built);
    // The parent's triggers ran in the child's context, before the child's own instructions.
    assert.equal(tree.get("/app/main.txt")?.sha256, sha("copied by the trigger\n"));
    assert.equal(tree.get("/base.txt")?.sha256, sha("from the parent\n"));
    assert.equal(tree.get("/child.txt")?.sha256, sha("from the child\n"));
    assert.ok(config.Env?.includes("BUILT_FROM=onbuild-parent"));
    assert.equal(config.OnBuild, undefined, "triggers are not inherited");
    const parentBuilt = await oracle.build(parent);
    assert.ok(parentBuilt.kind === "image");
    const parentImage = await readOracleImage(parentBuilt);
    assert.deepEqual(parentImage.config.OnBuild, ["COPY app/ /app/", "ENV BUILT_FROM=onbuild-parent"]);
    assert.equal(show(parentImage.tree, "/app"), "absent");
  });

  test("heredocs: buildah cannot build the case's own Dockerfile, as case.json records", async () => {
    const c = cases.find((x) => x.name === "heredocs");
    assert.ok(c?.spec.buildahBuildsDockerfile === false);
    const result = await oracle.build(c, { dockerfile: c.spec.dockerfile });
    assert.ok(result.kind === "failure");
    // case.json records the error line only; buildah exits 125 for build errors.
    assert.equal(result.exitCode, 125);
    assert.equal(result.error, c.spec.buildahError);
  });
});
