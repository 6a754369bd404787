/**
 * Root filesystems for container tests: a static busybox root made here, an empty root, and the Debian
 * image test/images/build caches, unpacked with GNU tar (not kiln's own layer code).
 */
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";

/** A new directory, 0755 as a root filesystem's `/` is (mkdtemp makes 0700). */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `kiln-${prefix}-`));
  chmodSync(dir, 0o755);
  return dir;
}

/** Debian's busybox-static with every applet linked in /bin, a root and a nobody user, and an app user in two groups. */
export function busyboxRoot(): string {
  const root = tempDir("busybox-root");
  for (const d of ["bin", "etc", "tmp", "root", "home/app"]) mkdirSync(join(root, d), { recursive: true });
  execFileSync("cp", ["/bin/busybox", join(root, "bin/busybox")]);
  for (const applet of execFileSync("/bin/busybox", ["--list"], { encoding: "utf8" }).split("\n")) {
    if (applet !== "" && applet !== "busybox") symlinkSync("busybox", join(root, "bin", applet));
  }
  writeFileSync(
    join(root, "etc/passwd"),
    "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
  );
  writeFileSync(
    join(root, "etc/group"),
    "root:x:0:\napp:x:1000:\nwheel:x:10:app\naudio:x:29:nobody,app\nnogroup:x:65534:\n",
  );
  writeFileSync(join(root, "etc/motd"), "welcome\n");
  writeFileSync(join(root, "etc/hosts"), "");
  return root;
}

/** A root with nothing in it: no libc, no shell, no /etc. */
export function emptyRoot(): string {
  return tempDir("empty-root");
}

/** The Debian bookworm minbase image of test/images/build, unpacked into a new directory. */
export function debianRoot(): string {
  const layout = cachedImage("debian");
  const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8")) as {
    manifests: Array<{ digest: string }>;
  };
  const manifest = JSON.parse(readFileSync(blob(layout, index.manifests[0]!.digest), "utf8")) as {
    layers: Array<{ digest: string }>;
  };
  const root = tempDir("debian-root");
  for (const layer of manifest.layers) {
    execFileSync("tar", ["-xzf", blob(layout, layer.digest), "-C", root, "--numeric-owner"]);
  }
  return root;
}

function blob(layout: string, digest: string): string {
  return join(layout, "blobs", digest.replace(":", "/"));
}

/** An image layout from test/images/build's cache, building the images once when none is there. */
function cachedImage(name: string): string {
  const images = join(process.env["KILN_CACHE"] ?? join(homedir(), ".cache/kiln"), "images");
  const find = () =>
    existsSync(images)
      ? readdirSync(images)
          .map((key) => join(images, key, name))
          .find((dir) => existsSync(join(dir, "index.json")))
      : undefined;
  const found = find();
  if (found !== undefined) return found;
  execFileSync(join(import.meta.dirname, "../images/build"), { stdio: ["ignore", "ignore", "inherit"] });
  const built = find();
  if (built === undefined) throw new Error(`test/images/build made no ${name} image in ${images}`);
  return built;
}
