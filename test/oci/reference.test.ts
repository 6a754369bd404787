import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { InvalidInputError } from "../../src/errors.ts";
import type { Digest } from "../../src/oci/digest.ts";
import type { Reference } from "../../src/oci/reference.ts";
import { formatReference, parseReference, withDigest, withTag } from "../../src/oci/reference.ts";

const D = `sha256:${"ab".repeat(32)}` as Digest;
const D512 = `sha512:${"cd".repeat(64)}` as Digest;

// Docker's normalisation (distribution/reference ParseNormalizedNamed + TagNameOnly), as `docker pull` sees it.
const NORMALISED: readonly [string, Reference][] = [
  ["busybox", { registry: "docker.io", repository: "library/busybox", tag: "latest" }],
  ["busybox:1.36", { registry: "docker.io", repository: "library/busybox", tag: "1.36" }],
  ["user/app", { registry: "docker.io", repository: "user/app", tag: "latest" }],
  ["user/app/sub", { registry: "docker.io", repository: "user/app/sub", tag: "latest" }],
  ["docker.io/busybox", { registry: "docker.io", repository: "library/busybox", tag: "latest" }],
  ["docker.io/library/busybox", { registry: "docker.io", repository: "library/busybox", tag: "latest" }],
  ["index.docker.io/busybox", { registry: "docker.io", repository: "library/busybox", tag: "latest" }],
  ["index.docker.io/user/app:v1", { registry: "docker.io", repository: "user/app", tag: "v1" }],
  [
    "registry-1.docker.io/library/busybox",
    { registry: "docker.io", repository: "library/busybox", tag: "latest" },
  ],
  ["localhost/foo", { registry: "localhost", repository: "foo", tag: "latest" }],
  ["localhost:5000/foo/bar", { registry: "localhost:5000", repository: "foo/bar", tag: "latest" }],
  // A port-looking tag on a one-component name is a tag, as in Docker.
  ["localhost:5000", { registry: "docker.io", repository: "library/localhost", tag: "5000" }],
  ["host:5000/a/b@" + D, { registry: "host:5000", repository: "a/b", digest: D }],
  ["busybox@" + D, { registry: "docker.io", repository: "library/busybox", digest: D }],
  ["busybox:1.36@" + D, { registry: "docker.io", repository: "library/busybox", tag: "1.36", digest: D }],
  ["quay.io/org/app:v1@" + D512, { registry: "quay.io", repository: "org/app", tag: "v1", digest: D512 }],
  ["example.com/app", { registry: "example.com", repository: "app", tag: "latest" }],
  ["127.0.0.1:5000/app:v2", { registry: "127.0.0.1:5000", repository: "app", tag: "v2" }],
  ["[::1]:5000/a/b:c", { registry: "[::1]:5000", repository: "a/b", tag: "c" }],
  ["[2001:db8::1]/repo", { registry: "[2001:db8::1]", repository: "repo", tag: "latest" }],
  // Upper case can only be a host name, so it makes the first component a registry.
  ["Foo/bar", { registry: "Foo", repository: "bar", tag: "latest" }],
  ["foo.com/a.b_c__d-e---f/g", { registry: "foo.com", repository: "a.b_c__d-e---f/g", tag: "latest" }],
  [`r.io/a:${"T".repeat(128)}`, { registry: "r.io", repository: "a", tag: "T".repeat(128) }],
  ["r.io/a:_x.Y-1", { registry: "r.io", repository: "a", tag: "_x.Y-1" }],
];

test("parseReference normalises as Docker does", () => {
  for (const [input, want] of NORMALISED) {
    assert.deepEqual({ ...parseReference(input) }, want, input);
  }
});

test("formatReference writes the canonical form", () => {
  assert.equal(formatReference(parseReference("busybox")), "docker.io/library/busybox:latest");
  assert.equal(formatReference(parseReference("user/app")), "docker.io/user/app:latest");
  assert.equal(formatReference(parseReference("host:5000/a/b@" + D)), "host:5000/a/b@" + D);
  assert.equal(formatReference(parseReference("busybox:1@" + D)), "docker.io/library/busybox:1@" + D);
  assert.equal(formatReference(parseReference("[::1]:5000/a")), "[::1]:5000/a:latest");
});

const INVALID: readonly [string, RegExp][] = [
  ["", /invalid reference "": empty/],
  ["Busybox", /invalid reference "Busybox": repository must be lowercase/],
  ["user/App", /repository must be lowercase/],
  ["localhost:5000/Foo", /repository must be lowercase/],
  ["busybox:", /tag "" must be/],
  ["busybox:-x", /tag "-x" must be/],
  ["busybox:.x", /tag ".x" must be/],
  [`busybox:${"t".repeat(129)}`, /tag "t+" must be/],
  ["busybox:a+b", /tag "a\+b" must be/],
  ["busybox@sha256:abc", /digest "sha256:abc" is not algorithm:hex/],
  ["busybox@", /digest "" is not/],
  [`busybox@md5:${"0".repeat(32)}`, /must be sha256:<64 hex> or sha512/],
  [`busybox@sha256:${"A".repeat(64)}`, /must be sha256/],
  [`busybox@sha256:${"a".repeat(63)}`, /must be sha256/],
  ["a/b/", /repository "a\/b\/" must be/],
  ["a//b", /repository "a\/\/b" must be/],
  ["a___b", /repository "library\/a___b" must be/],
  ["a..b", /repository/],
  ["a-_b", /repository/],
  ["-a", /repository/],
  ["a-", /repository/],
  ["a b", /repository/],
  ["r.io/", /repository is empty|repository "" must be/],
  [":tag", /repository is empty/],
  ["@" + D, /repository is empty/],
  ["a".repeat(64).replace(/a/g, "f"), /image ID, not a name/],
  ["foo_bar.com:8080/x", /registry "foo_bar.com:8080" is not a host\[:port\]/],
  ["-r.io/x", /registry "-r.io"/],
  ["r.io:80a/x", /registry "r.io:80a"/],
  ["[::1/x", /registry "\[::1"/],
  ["http://r.io/x", /registry "http:"/],
  // Go's regexp would read this as a registry-less path; kiln insists on a valid registry instead.
  ["a.b_c/d", /registry "a.b_c" is not a host\[:port\]/],
  [`${"a".repeat(250)}`, /name is 268 characters, longer than 255/],
];

test("parseReference rejects what Docker rejects, saying why", () => {
  for (const [input, message] of INVALID) {
    assert.throws(
      () => parseReference(input),
      (err: unknown) => err instanceof InvalidInputError && message.test(err.message),
      input,
    );
  }
});

test("names up to 255 characters are accepted, longer are not", () => {
  const at255 = `r.io/${"a".repeat(250)}`;
  assert.equal(parseReference(at255).repository.length, 250);
  assert.throws(() => parseReference(`r.io/${"a".repeat(251)}`), /name is 256 characters, longer than 255/);
  // The limit applies to the normalised name: `docker.io/library/` counts.
  assert.equal(parseReference("a".repeat(237)).repository, `library/${"a".repeat(237)}`);
  assert.throws(() => parseReference("a".repeat(238)), /name is 256 characters/);
});

test("withTag and withDigest return new references and keep the other part", () => {
  const r = parseReference("r.io/app:v1");
  const pinned = withDigest(r, D);
  assert.equal(formatReference(pinned), "r.io/app:v1@" + D);
  assert.equal(formatReference(r), "r.io/app:v1");
  assert.equal(formatReference(withTag(pinned, "v2")), "r.io/app:v2@" + D);
  assert.throws(() => withTag(r, "bad tag"), InvalidInputError);
});

// --- properties -------------------------------------------------------------------------------------

const alnum = fc.stringMatching(/^[a-z0-9]{1,6}$/);
const separator = fc.constantFrom(".", "_", "__", "-", "--", "---");
const pathComponent = fc
  .tuple(alnum, fc.array(fc.tuple(separator, alnum), { maxLength: 3 }))
  .map(([head, tail]) => head + tail.map(([s, a]) => s + a).join(""));
const repositoryPath = fc.array(pathComponent, { minLength: 1, maxLength: 4 }).map((cs) => cs.join("/"));
const domainComponent = fc.stringMatching(/^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]{0,8}[a-zA-Z0-9])$/);
const port = fc.integer({ min: 1, max: 65535 }).map((p) => `:${p}`);
const registry = fc.oneof(
  fc
    .tuple(fc.array(domainComponent, { minLength: 2, maxLength: 4 }), fc.option(port, { nil: "" }))
    .map(([cs, p]) => cs.join(".") + p),
  fc.tuple(domainComponent, port).map(([c, p]) => c + p),
  fc.constantFrom("localhost", "[::1]", "[2001:db8::1]:5000", "[fe80::1]"),
);
const tag = fc.stringMatching(/^\w[\w.-]{0,20}$/);
const digest = fc
  .oneof(
    fc.stringMatching(/^[a-f0-9]{64}$/).map((h) => `sha256:${h}`),
    fc.stringMatching(/^[a-f0-9]{128}$/).map((h) => `sha512:${h}`),
  )
  .map((d) => d as Digest);

const canonicalReference: fc.Arbitrary<Reference> = fc
  .record({
    registry: fc.oneof(
      registry.filter((r) => !r.endsWith("docker.io")),
      fc.constant("docker.io"),
    ),
    repository: repositoryPath,
    tag: fc.option(tag, { nil: undefined }),
    digest: fc.option(digest, { nil: undefined }),
  })
  .filter((r) => r.tag !== undefined || r.digest !== undefined)
  .filter((r) => r.registry !== "docker.io" || r.repository.includes("/"))
  .filter((r) => r.registry.length + 1 + r.repository.length <= 255)
  .map((r) => {
    const out: { -readonly [K in keyof Reference]: Reference[K] } = {
      registry: r.registry,
      repository: r.repository,
    };
    if (r.tag !== undefined) out.tag = r.tag;
    if (r.digest !== undefined) out.digest = r.digest;
    return out;
  });

test("parseReference(formatReference(r)) equals r", () => {
  fc.assert(
    fc.property(canonicalReference, (r) => {
      assert.deepEqual({ ...parseReference(formatReference(r)) }, r);
    }),
    { numRuns: 2000 },
  );
});

// Strings as people write them: optional registry, familiar names, optional tag and digest.
const familiarString = fc
  .tuple(
    fc.option(fc.oneof(registry, fc.constantFrom("docker.io", "index.docker.io", "registry-1.docker.io")), {
      nil: undefined,
    }),
    repositoryPath,
    fc.option(tag, { nil: undefined }),
    fc.option(digest, { nil: undefined }),
  )
  // Without a registry, a first component with a dot would be read as one.
  .filter(([reg, repo]) => reg !== undefined || !repo.split("/")[0]!.includes("."))
  .map(([reg, repo, t, d]) => `${reg ? reg + "/" : ""}${repo}${t ? ":" + t : ""}${d ? "@" + d : ""}`);

test("formatReference is idempotent on parse", () => {
  fc.assert(
    fc.property(familiarString, (s) => {
      const once = formatReference(parseReference(s));
      assert.equal(formatReference(parseReference(once)), once);
    }),
    { numRuns: 2000 },
  );
});

test("any string either parses to a round-tripping reference or throws InvalidInputError", () => {
  fc.assert(
    fc.property(fc.oneof(fc.string({ maxLength: 40 }), familiarString), (s) => {
      let r: Reference;
      try {
        r = parseReference(s);
      } catch (err) {
        assert.ok(err instanceof InvalidInputError, String(err));
        return;
      }
      assert.deepEqual(parseReference(formatReference(r)), r);
    }),
    { numRuns: 2000 },
  );
});
