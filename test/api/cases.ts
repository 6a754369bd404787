/**
 * ImageBuild specs shared by the schema unit tests and the API server test: one good spec, and malformed ones
 * each with the field and message both zod and the API server must report.
 */

export const GOOD_SPEC = {
  source: { git: { url: "https://git.example.com/team/app.git" } },
  dockerfile: {},
  output: { image: "registry.example.com/team/app" },
};

/** GOOD_SPEC with every default filled, as zod and the API server both fill them. */
export const GOOD_SPEC_DEFAULTED = {
  ...GOOD_SPEC,
  output: { ...GOOD_SPEC.output, insecure: false },
  platforms: ["linux/amd64"],
  cache: { disabled: false, ttl: "168h" },
  timestamp: 0,
  timeout: "1h",
};

/** Sources at the edges of what is allowed: both zod and the API server accept each. */
export const GOOD_SOURCES = [
  {
    git: {
      url: "https://github.com/org/repo.git",
      revision: "v1.2.0",
      subPath: "services/api",
      secretRef: { name: "git" },
    },
  },
  {
    git: {
      url: "http://git.example.com:8080/org/repo.git",
      revision: "0123456789abcdef0123456789abcdef01234567",
    },
  },
  { oci: { image: `registry:5000/ctx@sha256:${"0".repeat(64)}`, subPath: "." } },
  { oci: { image: "[::1]:5000/team/ctx:v1" } },
  { http: { url: "http://10.0.0.1:8080/ctx.tar.gz", sha256: "f".repeat(64) } },
  { inline: { files: { Dockerfile: "FROM busybox\n", "a/.b/..c/d": "" } } },
];

const DIGEST = `sha256:${"a".repeat(64)}`;

export interface BadCase {
  readonly name: string;
  /** Merged over GOOD_SPEC, top-level keys replaced; `undefined` removes a key. */
  readonly spec: Record<string, unknown>;
  /** Path under spec as the API server prints it ("" for spec itself). */
  readonly field: string;
  /** The text both zod and the API server give (from the schema's own messages). */
  readonly message?: string;
  /** When the check is a plain OpenAPI one, each side words it its own way. */
  readonly zodMessage?: string;
  readonly apiMessage?: string;
}

const git = (g: Record<string, unknown>) => ({ source: { git: { url: "https://h/r.git", ...g } } });
const out = (o: Record<string, unknown>) => ({ output: { image: "registry.example.com/app", ...o } });
const layers = (l: Record<string, unknown>) => ({ dockerfile: undefined, layers: l });

const NAME_MSG =
  "must be a Kubernetes object name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit";
const PATH_MSG = "must be a relative path that stays inside the build context (no leading / or ..)";
const DURATION_MSG = "must be a duration of hours, minutes and seconds such as 30m, 1h30m or 90s";
const OUTPUT_MSG =
  "must be an image reference without digest, such as registry.example.com/team/app or registry:5000/app:v1";
const OCI_MSG =
  "must be an image reference such as registry.example.com/team/context:v1 or registry:5000/context@sha256:<64 hex>";

export const BAD_CASES: readonly BadCase[] = [
  {
    name: "no source",
    spec: { source: {} },
    field: "source",
    message: "exactly one of git, oci, http or inline must be set",
  },
  {
    name: "two sources",
    spec: { source: { git: { url: "https://h/r.git" }, http: { url: "https://h/c.tgz" } } },
    field: "source",
    message: "exactly one of git, oci, http or inline must be set",
  },
  {
    name: "neither dockerfile nor layers",
    spec: { dockerfile: undefined },
    field: "",
    message: "exactly one of dockerfile or layers must be set",
  },
  {
    name: "dockerfile and layers",
    spec: { layers: {} },
    field: "",
    message: "exactly one of dockerfile or layers must be set",
  },
  {
    name: "ftp git url",
    spec: git({ url: "ftp://h/r.git" }),
    field: "source.git.url",
    message: "must be an https:// or http:// Git URL (ssh is not supported)",
  },
  {
    name: "ssh git url",
    spec: git({ url: "git@github.com:org/repo.git" }),
    field: "source.git.url",
    message: "must be an https:// or http:// Git URL (ssh is not supported)",
  },
  {
    name: "git url with spaces",
    spec: git({ url: "my repo" }),
    field: "source.git.url",
    message: "must be an https:// or http:// Git URL (ssh is not supported)",
  },
  {
    name: "revision with a space",
    spec: git({ revision: "main branch" }),
    field: "source.git.revision",
    message: "must be a branch, a tag or a commit SHA",
  },
  {
    name: "absolute subPath",
    spec: git({ subPath: "/etc" }),
    field: "source.git.subPath",
    message: PATH_MSG,
  },
  {
    name: "subPath leaving the repository",
    spec: git({ subPath: "app/../../etc" }),
    field: "source.git.subPath",
    message: PATH_MSG,
  },
  {
    name: "secret name with capitals",
    spec: git({ secretRef: { name: "Git_Creds" } }),
    field: "source.git.secretRef.name",
    message: NAME_MSG,
  },
  {
    name: "oci image with capitals",
    spec: { source: { oci: { image: "registry.example.com/Team/ctx:v1" } } },
    field: "source.oci.image",
    message: OCI_MSG,
  },
  {
    name: "oci image with a short digest",
    spec: { source: { oci: { image: "registry:5000/ctx@sha256:abc" } } },
    field: "source.oci.image",
    message: OCI_MSG,
  },
  {
    name: "oci image that is an image ID",
    spec: { source: { oci: { image: "a".repeat(64) } } },
    field: "source.oci.image",
    message: "a 64-character hex string is an image ID, not a name",
  },
  {
    name: "file url as http source",
    spec: { source: { http: { url: "file:///etc/passwd" } } },
    field: "source.http.url",
    message: "must be an http:// or https:// URL",
  },
  {
    name: "upper-case sha256",
    spec: { source: { http: { url: "https://h/c.tgz", sha256: "A".repeat(64) } } },
    field: "source.http.sha256",
    message: "must be the archive's sha256 as 64 lowercase hex digits",
  },
  {
    name: "inline without files",
    spec: { source: { inline: { files: {} } } },
    field: "source.inline.files",
    message: "must hold between 1 and 64 files",
  },
  {
    name: "inline absolute file",
    spec: { source: { inline: { files: { "/etc/passwd": "x" } } } },
    field: "source.inline.files",
    message: "file names must be relative paths that stay inside the build context (no leading / or ..)",
  },
  {
    name: "inline file outside the context",
    spec: { source: { inline: { files: { "../x": "x" } } } },
    field: "source.inline.files",
    message: "file names must be relative paths that stay inside the build context (no leading / or ..)",
  },
  {
    name: "dockerfile path and inline",
    spec: { dockerfile: { path: "Dockerfile", inline: "FROM scratch" } },
    field: "dockerfile",
    message: "set either path or inline, not both",
  },
  {
    name: "dockerfile outside the context",
    spec: { dockerfile: { path: "../Dockerfile" } },
    field: "dockerfile.path",
    message: PATH_MSG,
  },
  {
    name: "target starting with -",
    spec: { dockerfile: { target: "-x" } },
    field: "dockerfile.target",
    message: "must be a stage name from FROM ... AS <name>, or its index",
  },
  {
    name: "output with a digest",
    spec: out({ image: `registry.example.com/app@${DIGEST}` }),
    field: "output.image",
    message: OUTPUT_MSG,
  },
  {
    name: "output as a URL",
    spec: out({ image: "https://registry.example.com/app" }),
    field: "output.image",
    message: OUTPUT_MSG,
  },
  {
    name: "output with capitals",
    spec: out({ image: "registry.example.com/Team/app" }),
    field: "output.image",
    message: OUTPUT_MSG,
  },
  {
    name: "repeated tag",
    spec: out({ tags: ["v1", "v1"] }),
    field: "output.tags",
    message: "must not repeat a tag",
  },
  {
    name: "tag starting with .",
    spec: out({ tags: [".hidden"] }),
    field: "output.tags[0]",
    message: "must be a tag: 1-128 of letters, digits, '_', '.' and '-', not starting with . or -",
  },
  {
    name: "tag too long",
    spec: out({ tags: ["v".repeat(129)] }),
    field: "output.tags[0]",
    zodMessage: "Too big: expected string to have <=128 characters",
    apiMessage: "Too long: may not be more than 128 bytes",
  },
  {
    name: "empty push secret name",
    spec: out({ pushSecretRef: { name: "" } }),
    field: "output.pushSecretRef.name",
    message: NAME_MSG,
  },
  {
    name: "platform without arch",
    spec: { platforms: ["linux"] },
    field: "platforms[0]",
    message: "must be os/arch or os/arch/variant, such as linux/amd64 or linux/arm/v7",
  },
  {
    name: "platform twice",
    spec: { platforms: ["linux/amd64", "linux/amd64"] },
    field: "platforms",
    message: "must not repeat a platform",
  },
  {
    name: "no platforms",
    spec: { platforms: [] },
    field: "platforms",
    zodMessage: "Too small: expected array to have >=1 items",
    apiMessage: "should have at least 1 items",
  },
  { name: "ttl in days", spec: { cache: { ttl: "7d" } }, field: "cache.ttl", message: DURATION_MSG },
  { name: "zero ttl", spec: { cache: { ttl: "0s" } }, field: "cache.ttl", message: "must be longer than 0s" },
  {
    name: "cache repository with a tag",
    spec: { cache: { repository: "registry.example.com/cache:v1" } },
    field: "cache.repository",
    message: "must be a repository without tag or digest, such as registry.example.com/team/cache",
  },
  { name: "timeout in words", spec: { timeout: "30 minutes" }, field: "timeout", message: DURATION_MSG },
  { name: "zero timeout", spec: { timeout: "0m" }, field: "timeout", message: "must be longer than 0s" },
  {
    name: "negative timestamp",
    spec: { timestamp: -1 },
    field: "timestamp",
    zodMessage: "Too small: expected number to be >=0",
    apiMessage: "should be greater than or equal to 0",
  },
  {
    name: "timestamp as a date",
    spec: { timestamp: "2024-01-01" },
    field: "timestamp",
    zodMessage: "Invalid input: expected number, received string",
    apiMessage: 'Invalid value: "string": spec.timestamp in body must be of type integer: "string"',
  },
  {
    name: "service account with capitals",
    spec: { serviceAccountName: "Builder" },
    field: "serviceAccountName",
    message: NAME_MSG,
  },
  {
    name: "repeated secret id",
    spec: {
      secrets: [
        { id: "npm", secretRef: { name: "a", key: "k" } },
        { id: "npm", secretRef: { name: "b", key: "k" } },
      ],
    },
    field: "secrets",
    message: "must not repeat a secret id",
  },
  {
    name: "secret id with a space",
    spec: { secrets: [{ id: "my token", secretRef: { name: "a", key: "k" } }] },
    field: "secrets[0].id",
    message: "must be a secret id: letters, digits, '_', '.' and '-'",
  },
  {
    name: "secret key with a slash",
    spec: { secrets: [{ id: "t", secretRef: { name: "a", key: "a/b" } }] },
    field: "secrets[0].secretRef.key",
    message: "must be a Secret key: letters, digits, '-', '_' and '.'",
  },
  {
    name: "layers from a local layout",
    spec: layers({ base: "oci:/tmp/layout" }),
    field: "layers.base",
    message: "layers.base cannot be a local oci: layout in a cluster; push the base image to a registry",
  },
  {
    name: "layer with files and delete",
    spec: layers({ layers: [{ files: [{ src: "a", dest: "/a" }], delete: ["/b"] }] }),
    field: "layers.layers[0]",
    message: "a layer has exactly one of files or delete",
  },
  {
    name: "toleration operator",
    spec: { tolerations: [{ key: "k", operator: "Maybe" }] },
    field: "tolerations[0].operator",
    zodMessage: 'Invalid option: expected one of "Exists"|"Equal"',
    apiMessage: 'Unsupported value: "Maybe": supported values: "Exists", "Equal"',
  },
  {
    name: "cpu in words",
    spec: { resources: { requests: { cpu: "two" } } },
    field: "resources.requests.cpu",
    zodMessage: "must be a quantity such as 500m, 2, 1Gi or 512Mi",
    apiMessage: "should match",
  },
  {
    name: "missing output",
    spec: { output: undefined },
    field: "output",
    zodMessage: "Invalid input: expected object, received undefined",
    apiMessage: "Required value",
  },
];

export function specOf(c: Pick<BadCase, "spec">): Record<string, unknown> {
  const spec: Record<string, unknown> = { ...GOOD_SPEC };
  for (const [k, v] of Object.entries(c.spec)) {
    if (v === undefined) delete spec[k];
    else spec[k] = v;
  }
  return spec;
}
