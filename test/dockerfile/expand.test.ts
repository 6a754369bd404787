// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Dockerfile text with ${VAR} is the test data
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Instruction } from "../../src/dockerfile/ast.ts";
import { expandInstruction, expandRunMounts } from "../../src/dockerfile/expand.ts";
import { parseDockerfile } from "../../src/dockerfile/parser.ts";
import { DockerfileError } from "../../src/errors.ts";

const env = (o: Record<string, string>) => new Map(Object.entries(o));
const first = (text: string): Instruction => parseDockerfile(text).instructions[0]!;

test("ENV pairs all see the environment from before the instruction", () => {
  const ins = first("ENV A=new B=\"$A-x\" C=${A:+set} D='$A'");
  const r = expandInstruction(ins, env({ A: "old" }), "\\");
  assert.deepEqual(r.instruction.kind === "ENV" && r.instruction.pairs, [
    { key: "A", value: "new" },
    { key: "B", value: "old-x" },
    { key: "C", value: "set" },
    { key: "D", value: "$A" },
  ]);
  assert.deepEqual([...r.used], ["A"]);
  assert.deepEqual([...r.unset], []);
});

test("the escape-directive corpus case expands as Docker/BuildKit does, not as buildah", () => {
  const df = parseDockerfile(
    [
      "# escape=`",
      "FROM busybox",
      'ENV ProgramFiles="C:\\Program Files" `',
      '    PSCORE="$ProgramFiles\\PowerShell\\pwsh.exe"',
      "ENV TRAILING_BACKSLASH=C:\\",
      'ENV NOT_EXPANDED=`$ProgramFiles QUOTED_TICK="a `"quoted`" word"',
      'LABEL org.example.windows-dir="C:\\Windows" org.example.unc=\\\\server\\share',
      'COPY --from=installer-env ["/PowerShell/", "$ProgramFiles\\\\PowerShell"]',
    ].join("\n"),
  );
  let vars = new Map<string, string>();
  const out: Record<string, string> = {};
  for (const ins of df.instructions.slice(1)) {
    const { instruction } = expandInstruction(ins, vars, df.escapeToken);
    if (instruction.kind === "ENV" || instruction.kind === "LABEL") {
      for (const p of instruction.pairs) out[p.key] = p.value;
      if (instruction.kind === "ENV")
        vars = new Map([...vars, ...instruction.pairs.map((p) => [p.key, p.value] as const)]);
    }
    if (instruction.kind === "COPY") out["COPY dest"] = instruction.dest;
  }
  assert.deepEqual(out, {
    ProgramFiles: "C:\\Program Files",
    PSCORE: "\\PowerShell\\pwsh.exe",
    TRAILING_BACKSLASH: "C:\\",
    NOT_EXPANDED: "$ProgramFiles",
    QUOTED_TICK: 'a "quoted" word',
    "org.example.windows-dir": "C:\\Windows",
    "org.example.unc": "\\\\server\\share",
    "COPY dest": "C:\\Program Files\\PowerShell",
  });
});

test("which instructions expand", () => {
  const vars = env({ V: "v", P: "80 443/udp", U: "1000" });
  const expanded = (line: string) => expandInstruction(first(line), vars, "\\").instruction;
  // BuildKit sorts the words as written, then splits each expansion into ports
  const expose = expanded("EXPOSE 22 $P");
  assert.deepEqual(expose.kind === "EXPOSE" && expose.ports, ["80", "443/udp", "22"]);
  const volume = expanded("VOLUME /a/$V ${V}2");
  assert.deepEqual(volume.kind === "VOLUME" && volume.volumes, ["/a/v", "v2"]);
  const user = expanded("USER ${U}:${G:-100}");
  assert.equal(user.kind === "USER" && user.user, "1000:100");
  const wd = expanded('WORKDIR "/home/$V/my dir"');
  assert.equal(wd.kind === "WORKDIR" && wd.path, "/home/v/my dir");
  const sig = expanded("STOPSIGNAL SIG$V");
  assert.equal(sig.kind === "STOPSIGNAL" && sig.signal, "SIGv");
  const from = expanded("FROM --platform=$V ${V}:latest AS s");
  assert.deepEqual(from.kind === "FROM" && [from.image, from.platform], ["v:latest", "v"]);
  const arg = expanded("ARG $V=$V NONE");
  assert.deepEqual(arg.kind === "ARG" && arg.args, [
    { key: "$V", value: "v" },
    { key: "NONE", value: undefined },
  ]);
  const copy = expanded("COPY --chown=$U:$U --chmod=$V src/$V /dst/$V/");
  assert.deepEqual(copy.kind === "COPY" && [copy.sources, copy.dest, copy.chown, copy.chmod], [
    ["src/v"],
    "/dst/v/",
    "1000:1000",
    "$V",
  ]);
  const add = expanded("ADD --checksum=sha256:$V --chown=$U https://x/$V.tgz /");
  assert.deepEqual(add.kind === "ADD" && [add.sources, add.checksum, add.chown], [
    ["https://x/v.tgz"],
    "sha256:v",
    "1000",
  ]);
  // left to the shell or the image: unchanged
  for (const line of [
    "RUN echo $V",
    "CMD echo $V",
    'ENTRYPOINT ["$V"]',
    "HEALTHCHECK CMD $V",
    "ONBUILD RUN $V",
  ]) {
    const ins = first(line);
    assert.deepEqual(expandInstruction(ins, vars, "\\"), {
      instruction: ins,
      used: new Set(),
      unset: new Set(),
    });
  }
});

test("heredoc bodies: unquoted delimiters expand with quotes kept, quoted ones stay verbatim", () => {
  const copy = first(
    'COPY <<EOF <<"RAW" /etc/\nexec "\\$@" ${PORT:-5000} \\\\\n\'$HOME\'\nEOF\n$HOME\nRAW\n',
  );
  const r = expandInstruction(copy, env({ HOME: "/root" }), "\\");
  assert.deepEqual(r.instruction.kind === "COPY" && r.instruction.inlineFiles, [
    { path: "EOF", data: "exec \"$@\" 5000 \\\n'/root'\n", expand: true },
    { path: "RAW", data: "$HOME\n", expand: false },
  ]);
  assert.deepEqual([...r.used], ["HOME"]);
  assert.deepEqual([...r.unset], ["PORT"]);
});

test("RUN --mount values are expanded, then checked", () => {
  const run = first("RUN --mount=type=$T,id=${ID},target=/cache,mode=0755,uid=$U true");
  assert.ok(run.kind === "RUN");
  const r = expandRunMounts(run, env({ T: "cache", ID: "go-build", U: "1000" }), "\\");
  assert.deepEqual(r.mounts, [
    {
      type: "cache",
      from: undefined,
      source: undefined,
      target: "/cache",
      readOnly: false,
      id: "go-build",
      sharing: undefined,
      required: false,
      mode: 0o755,
      uid: 1000,
      gid: undefined,
      sizeLimit: undefined,
      env: undefined,
    },
  ]);
  assert.deepEqual([...r.used].sort(), ["ID", "T", "U"]);
  assert.throws(
    () => expandRunMounts(run, env({ T: "bind", U: "1" }), "\\"),
    /^DockerfileError: Dockerfile:1: mode not allowed/,
  );
  const secret = first(
    "RUN --mount=type=secret,id=tok,env=TOKEN,required=true --mount=type=tmpfs,target=/t,size=64m x",
  );
  assert.ok(secret.kind === "RUN");
  const [s, t] = expandRunMounts(secret, env({}), "\\").mounts;
  assert.deepEqual(
    [s?.type, s?.id, s?.env, s?.required, s?.readOnly],
    ["secret", "tok", "TOKEN", true, true],
  );
  assert.deepEqual([t?.type, t?.target, t?.sizeLimit, t?.readOnly], ["tmpfs", "/t", 64 * 1024 ** 2, false]);
});

test("expansion errors carry the instruction's line", () => {
  const df = parseDockerfile("FROM x\nWORKDIR ${DIR:?set DIR first}\n");
  assert.throws(
    () => expandInstruction(df.instructions[1]!, env({}), "\\"),
    (err: unknown) =>
      err instanceof DockerfileError &&
      err.line === 2 &&
      err.message === 'Dockerfile:2: failed to process "${DIR:?set DIR first}": DIR: set DIR first',
  );
});
