// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Dockerfile text with ${VAR} is the test data
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Instruction } from "../../src/dockerfile/ast.ts";
import { parseDockerfile } from "../../src/dockerfile/parser.ts";
import { DockerfileError } from "../../src/errors.ts";

const parse = (text: string) => parseDockerfile(text);
const only = (text: string): Instruction => {
  const ins = parse(text).instructions;
  assert.equal(ins.length, 1);
  return ins[0]!;
};
const at = (startLine: number, endLine = startLine) => ({ startLine, endLine });
/** Asserts a DockerfileError at `line` whose message contains `detail`. */
function rejects(text: string, line: number, detail: string | RegExp): void {
  assert.throws(
    () => parse(text),
    (err: unknown) => {
      assert.ok(err instanceof DockerfileError, String(err));
      assert.equal(err.code, "KILN_ERR_DOCKERFILE");
      assert.equal(err.line, line, err.message);
      if (typeof detail === "string") assert.ok(err.message.includes(detail), err.message);
      else assert.match(err.message, detail);
      assert.ok(err.message.startsWith(`Dockerfile:${line}: `), err.message);
      return true;
    },
  );
}

test("FROM: image, lower-cased stage name, --platform", () => {
  assert.deepEqual(only("FROM --platform=$BUILDPLATFORM golang:1.22  as Build-1"), {
    kind: "FROM",
    location: at(1),
    original: "FROM --platform=$BUILDPLATFORM golang:1.22  as Build-1",
    image: "golang:1.22",
    stageName: "build-1",
    platform: "$BUILDPLATFORM",
  });
  assert.deepEqual(only("from scratch"), {
    kind: "FROM",
    location: at(1),
    original: "from scratch",
    image: "scratch",
    stageName: undefined,
    platform: undefined,
  });
  rejects("FROM a b", 1, "FROM requires either one or three arguments");
  rejects("FROM a AS 1st", 1, 'invalid name for build stage: "1st"');
  rejects("FROM --platfrom=x a", 1, "FROM: unknown flag: --platfrom");
  rejects("FROM --platform a", 1, "Missing a value on flag: platform");
});

test("RUN: shell and exec forms, --mount, --network, --security", () => {
  const run = only(
    'RUN --mount=type=secret,id=npmrc,target=/root/.npmrc,required --mount=type=cache,target=/var/cache/apt,sharing=locked \\\n  --network=none --security=insecure ["sh", "-c", "echo \\"$HOME\\""]',
  );
  assert.deepEqual(run, {
    kind: "RUN",
    location: at(1, 2),
    original:
      'RUN --mount=type=secret,id=npmrc,target=/root/.npmrc,required --mount=type=cache,target=/var/cache/apt,sharing=locked   --network=none --security=insecure ["sh", "-c", "echo \\"$HOME\\""]',
    command: { form: "exec", args: ["sh", "-c", 'echo "$HOME"'] },
    heredocs: [],
    mounts: [
      {
        fields: [
          ["type", "secret"],
          ["id", "npmrc"],
          ["target", "/root/.npmrc"],
          ["required", undefined],
        ],
      },
      {
        fields: [
          ["type", "cache"],
          ["target", "/var/cache/apt"],
          ["sharing", "locked"],
        ],
      },
    ],
    network: "none",
    security: "insecure",
  });
  assert.deepEqual((only("RUN   echo  $HOME  # not a comment") as { command: unknown }).command, {
    form: "shell",
    script: "echo  $HOME  # not a comment",
  });
  // Not a JSON array of strings, so shell form; JSON form ignores text after the array, as Go's decoder does.
  assert.deepEqual((only("RUN [ -f /x ] && echo") as { command: unknown }).command, {
    form: "shell",
    script: "[ -f /x ] && echo",
  });
  assert.deepEqual((only('CMD ["a"] trailing') as { command: unknown }).command, {
    form: "exec",
    args: ["a"],
  });
  rejects("RUN [1, 2]", 1, "arrays must be comprised of strings only");
  rejects("RUN --network=bridge true", 1, 'unsupported network mode "bridge"');
  rejects("RUN --security=root true", 1, 'security "root" is not valid');
  rejects("RUN --mount=type=volume,target=/x true", 1, 'unsupported mount type "volume"');
  rejects("RUN --mount=type=bind,mode=0700,target=/x true", 1, 'mode not allowed for "bind" type mounts');
  rejects("RUN --mount=type=secret,from=x,id=a true", 1, "secret mount should not have a from");
  rejects(
    "RUN --mount=type=cache,from=$STAGE,target=/x true",
    1,
    "'from' doesn't support variable expansion",
  );
  rejects(
    "RUN --mount=type=cache,tagret=/x true",
    1,
    "unexpected key 'tagret' in 'tagret=/x' (did you mean target?)",
  );
  rejects(
    "RUN --mount='type=cache,ta\"rget=/x' true",
    1,
    'failed to parse csv mounts: bare " in non-quoted-field',
  );
  rejects("RUN --mnt=type=cache true", 1, "RUN: unknown flag: --mnt");
  // values with a variable are checked when they are expanded
  const deferred = only("RUN --mount=type=$T,target=/x true");
  assert.equal(deferred.kind === "RUN" && deferred.mounts.length, 1);
});

test("COPY and ADD: flags, sources, destination, JSON form", () => {
  assert.deepEqual(
    only(
      "COPY --from=build --chown=${UID}:app --chmod=0755 --link --exclude=*.md --exclude=tmp/ --parents a b/ /dst/",
    ),
    {
      kind: "COPY",
      location: at(1),
      original:
        "COPY --from=build --chown=${UID}:app --chmod=0755 --link --exclude=*.md --exclude=tmp/ --parents a b/ /dst/",
      sources: ["a", "b/"],
      inlineFiles: [],
      dest: "/dst/",
      chown: "${UID}:app",
      chmod: "0755",
      link: true,
      exclude: ["*.md", "tmp/"],
      json: false,
      from: "build",
      parents: true,
    },
  );
  assert.deepEqual(
    only(
      'ADD --keep-git-dir=true --checksum=sha256:abc --unpack=false --link=false --chown="1 2" ["https://x/a.tar", "/C:\\\\dir"]',
    ),
    {
      kind: "ADD",
      location: at(1),
      original:
        'ADD --keep-git-dir=true --checksum=sha256:abc --unpack=false --link=false --chown="1 2" ["https://x/a.tar", "/C:\\\\dir"]',
      sources: ["https://x/a.tar"],
      inlineFiles: [],
      dest: "/C:\\dir",
      chown: "1 2",
      chmod: undefined,
      link: false,
      exclude: [],
      json: true,
      keepGitDir: true,
      checksum: "sha256:abc",
      unpack: false,
    },
  );
  rejects("COPY onlyone", 1, "COPY requires at least two arguments");
  rejects("COPY --from=$STAGE a b", 1, "variable expansion is not supported for --from");
  rejects("COPY --keep-git-dir a b", 1, "COPY: unknown flag: --keep-git-dir");
  rejects("ADD --from=x a b", 1, "ADD: unknown flag: --from");
  rejects("COPY --link=maybe a b", 1, "Expecting boolean value for flag link, not: maybe");
  rejects("COPY --chown=a --chown=b a b", 1, "Duplicate flag specified: chown");
  rejects("COPY a <<EOF\nx\nEOF\n", 1, "COPY cannot accept a heredoc as a destination");
});

test("ARG, ENV and LABEL keep words as written for expansion", () => {
  assert.deepEqual(only('ARG A B= C="x y" D=$A'), {
    kind: "ARG",
    location: at(1),
    original: 'ARG A B= C="x y" D=$A',
    args: [
      { key: "A", value: undefined },
      { key: "B", value: "" },
      { key: "C", value: '"x y"' },
      { key: "D", value: "$A" },
    ],
  });
  const env = only('ENV A=1 B="two words" C=a\\ b \\\n    D=${A}x');
  assert.deepEqual(env.kind === "ENV" && env.pairs, [
    { key: "A", value: "1" },
    { key: "B", value: '"two words"' },
    { key: "C", value: "a\\ b" },
    { key: "D", value: "${A}x" },
  ]);
  const legacy = only("ENV PKG_RELEASE     1~buster with spaces");
  assert.deepEqual(legacy.kind === "ENV" && legacy.pairs, [
    { key: "PKG_RELEASE", value: "1~buster with spaces" },
  ]);
  const label = only('LABEL "com.example.quoted"="value" k="a=b=c" empty=""');
  assert.deepEqual(label.kind === "LABEL" && label.pairs, [
    { key: '"com.example.quoted"', value: '"value"' },
    { key: "k", value: '"a=b=c"' },
    { key: "empty", value: '""' },
  ]);
  rejects("ENV ONLYKEY", 1, "ENV must have two arguments");
  rejects("ENV A=1 B", 1, `Syntax error - can't find = in "B"`);
  rejects("LABEL =x", 1, "LABEL names can not be blank");
  rejects("ARG =x", 1, "ARG names can not be blank");
  rejects("ARG", 1, "ARG requires at least one argument");
});

test("EXPOSE, VOLUME, USER, WORKDIR, STOPSIGNAL, MAINTAINER, SHELL", () => {
  const expose = only("EXPOSE 80 53/udp 3012/tcp 7000-7002/udp");
  assert.deepEqual(expose.kind === "EXPOSE" && expose.ports, ["3012/tcp", "53/udp", "7000-7002/udp", "80"]);
  const volume = only('VOLUME ["/var/lib/a", "/var/log/b"]');
  assert.deepEqual(volume.kind === "VOLUME" && [volume.volumes, volume.json], [
    ["/var/lib/a", "/var/log/b"],
    true,
  ]);
  const volumes = only("VOLUME /cache /tmp/scratch");
  assert.deepEqual(volumes.kind === "VOLUME" && [volumes.volumes, volumes.json], [
    ["/cache", "/tmp/scratch"],
    false,
  ]);
  assert.deepEqual(only("USER 1000:1000"), {
    kind: "USER",
    location: at(1),
    original: "USER 1000:1000",
    user: "1000:1000",
  });
  const workdir = only('WORKDIR "${HOME}/my dir"');
  assert.equal(workdir.kind === "WORKDIR" && workdir.path, '"${HOME}/my dir"');
  const signal = only("STOPSIGNAL SIGQUIT");
  assert.equal(signal.kind === "STOPSIGNAL" && signal.signal, "SIGQUIT");
  const maintainer = only("MAINTAINER Jane Doe <jane@example.com>");
  assert.equal(maintainer.kind === "MAINTAINER" && maintainer.maintainer, "Jane Doe <jane@example.com>");
  const shell = only('SHELL ["/bin/bash", "-o", "pipefail", "-c"]');
  assert.deepEqual(shell.kind === "SHELL" && shell.shell, ["/bin/bash", "-o", "pipefail", "-c"]);
  rejects("SHELL /bin/bash -c", 1, "SHELL requires the arguments to be in JSON form");
  rejects('SHELL ["c:\\windows\\cmd.exe", "/S"]', 1, /without an escaped back-slash/);
  rejects("SHELL []", 1, "SHELL requires at least one argument");
  rejects("WORKDIR", 1, "WORKDIR requires exactly one argument");
  rejects('VOLUME [""]', 1, "VOLUME specified can not be an empty string");
  rejects("USER --name=x root", 1, "USER: unknown flag: --name");
});

test("HEALTHCHECK: options in nanoseconds, CMD exec and shell forms, NONE", () => {
  const h = only(
    'HEALTHCHECK --interval=1m30s --timeout=10s --start-period=1.5s --start-interval=500ms --retries=5 CMD ["/hc.sh", "-v"]',
  );
  assert.deepEqual(h.kind === "HEALTHCHECK" && h.health, {
    kind: "cmd",
    test: ["CMD", "/hc.sh", "-v"],
    intervalNs: 90e9,
    timeoutNs: 10e9,
    startPeriodNs: 1.5e9,
    startIntervalNs: 500e6,
    retries: 5,
  });
  const shell = only("HEALTHCHECK cmd curl -f http://localhost/ || exit 1");
  assert.deepEqual(shell.kind === "HEALTHCHECK" && shell.health, {
    kind: "cmd",
    test: ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
    intervalNs: 0,
    timeoutNs: 0,
    startPeriodNs: 0,
    startIntervalNs: 0,
    retries: 0,
  });
  const none = only("HEALTHCHECK NONE");
  assert.deepEqual(none.kind === "HEALTHCHECK" && none.health, { kind: "none" });
  rejects("HEALTHCHECK NONE x", 1, "HEALTHCHECK NONE takes no arguments");
  rejects("HEALTHCHECK CMD", 1, "Missing command after HEALTHCHECK CMD");
  rejects("HEALTHCHECK TEST x", 1, 'Unknown type "TEST" in HEALTHCHECK (try CMD)');
  rejects("HEALTHCHECK --interval=10 CMD x", 1, 'time: missing unit in duration "10"');
  rejects("HEALTHCHECK --interval=10us CMD x", 1, 'Interval "interval" cannot be less than 1ms');
  rejects("HEALTHCHECK --retries=-1 CMD x", 1, "--retries cannot be negative (-1)");
});

test("ONBUILD carries its trigger as an instruction and as the config expression", () => {
  const ob = only("ONBUILD COPY --chown=1:1 . /app");
  assert.equal(ob.kind, "ONBUILD");
  assert.ok(ob.kind === "ONBUILD");
  assert.equal(ob.expression, "COPY --chown=1:1 . /app");
  assert.equal(ob.trigger.kind, "COPY");
  assert.deepEqual(ob.trigger.kind === "COPY" && [ob.trigger.sources, ob.trigger.dest, ob.trigger.chown], [
    ["."],
    "/app",
    "1:1",
  ]);
  const heredoc = only("ONBUILD RUN <<EOF\necho hi\nEOF\n");
  assert.ok(heredoc.kind === "ONBUILD" && heredoc.trigger.kind === "RUN");
  assert.equal(heredoc.expression, "RUN <<EOF\necho hi\nEOF");
  assert.deepEqual(heredoc.location, at(1, 3));
  rejects("ONBUILD ONBUILD RUN x", 1, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
  rejects("ONBUILD FROM x", 1, "FROM isn't allowed as an ONBUILD trigger");
  rejects("ONBUILD FOO x", 1, "unknown instruction: FOO");
});

test("continuations: comment and empty lines dropped, whitespace after the escape, CRLF", () => {
  const df = parse(
    [
      "FROM x",
      "RUN a \\",
      "# a comment between continuation lines",
      "  # an indented comment",
      "",
      "    b \\  \t",
      " \\",
      "    c",
      "RUN echo \\\\",
      "RUN d",
    ].join("\r\n"),
  );
  assert.deepEqual(
    df.instructions.map((i) => [i.kind, i.location.startLine, i.location.endLine, i.original]),
    [
      ["FROM", 1, 1, "FROM x"],
      ["RUN", 2, 8, "RUN a     b      c"],
      ["RUN", 9, 9, "RUN echo \\\\"],
      ["RUN", 10, 10, "RUN d"],
    ],
  );
  assert.deepEqual(df.emptyContinuationLines, [2]);
  // a continuation at the end of the file ends the instruction, as in BuildKit
  const last = parse("FROM x\nRUN a \\\n").instructions[1];
  assert.deepEqual(last?.kind === "RUN" && last.command, { form: "shell", script: "a" });
  // a lone escape on the last line leaves an empty instruction
  rejects("FROM x\n\\", 2, "empty continuation at end of file");
  rejects("# only a comment\n\n", 2, "file with no instructions");
});

test("escape directive: backtick escapes and continues, backslash is literal", () => {
  const df = parse(
    '# escape=`\nFROM x\nENV P="C:\\Program Files" `\n    # comment\n    Q=C:\\ `  \n    R=`$P\nRUN dir C:\\ `\n  && echo\n',
  );
  assert.equal(df.escapeToken, "`");
  assert.deepEqual([...df.directives], [["escape", "`"]]);
  const [, env, run] = df.instructions;
  assert.deepEqual(env?.kind === "ENV" && env.pairs, [
    { key: "P", value: '"C:\\Program Files"' },
    { key: "Q", value: "C:\\" },
    { key: "R", value: "`$P" },
  ]);
  assert.deepEqual(run?.kind === "RUN" && [run.command, run.location], [
    { form: "shell", script: "dir C:\\   && echo" },
    at(7, 8),
  ]);
});

test("directives: only at the top, case-insensitive, once each", () => {
  const df = parse("# Syntax = docker/dockerfile:1.7\n#ESCAPE=\\\n# check=skip=all\nFROM x\n");
  assert.deepEqual(
    [...df.directives],
    [
      ["syntax", "docker/dockerfile:1.7"],
      ["escape", "\\"],
      ["check", "skip=all"],
    ],
  );
  // after a comment, an empty line or an instruction they are comments
  for (const text of ["# hello\n# escape=`\nFROM x\n", "\n# escape=`\nFROM x\n", "FROM x\n# escape=`\n"]) {
    assert.equal(parse(text).escapeToken, "\\", text);
  }
  rejects("# escape=`\n# escape=\\\nFROM x", 2, "only one escape parser directive can be used");
  rejects("# escape=x\nFROM x", 1, "invalid escape token 'x' does not match ` or \\");
  assert.equal(parse("\uFEFF# escape=`\nFROM x").escapeToken, "`");
});

test("heredocs: several per line, <<- strips tabs, quoted delimiters, stdin, fd, CRLF", () => {
  const df = parse(
    [
      "FROM x",
      "COPY <<a <<'b' <<-\"c\" /dst/",
      "$A",
      "a",
      "$B",
      "b",
      "\t\tline",
      "\tc",
      "RUN 3<<EOF cat <&3 > /f && cat <<-END",
      "  keep indent",
      "EOF",
      "\tx",
      "\tEND",
      "",
    ].join("\n"),
  );
  const [, copy, run] = df.instructions;
  assert.deepEqual(copy?.kind === "COPY" && [copy.sources, copy.inlineFiles, copy.dest, copy.location], [
    [],
    [
      { path: "a", data: "$A\n", expand: true },
      { path: "b", data: "$B\n", expand: false },
      { path: "c", data: "line\n", expand: false },
    ],
    "/dst/",
    at(2, 8),
  ]);
  assert.deepEqual(run?.kind === "RUN" && [run.command, run.heredocs, run.location], [
    { form: "shell", script: "3<<EOF cat <&3 > /f && cat <<-END" },
    [
      { name: "EOF", content: "  keep indent\n", expand: true, chomp: false, fileDescriptor: 3 },
      { name: "END", content: "x\n", expand: true, chomp: true, fileDescriptor: 0 },
    ],
    at(9, 13),
  ]);
  const crlf = parse("FROM x\r\nRUN <<EOF\r\necho hi\r\nEOF\r\n").instructions[1];
  assert.deepEqual(crlf?.kind === "RUN" && crlf.heredocs[0]?.content, "echo hi\r\n");
  // exec form and other instructions take no heredocs
  const json = parse('FROM x\nRUN ["cat", "<<EOF"]\nCMD cat <<EOF\n').instructions;
  assert.deepEqual(
    json.map((i) => i.kind),
    ["FROM", "RUN", "CMD"],
  );
  rejects("FROM x\nRUN <<EOF\necho\n", 2, 'unterminated heredoc: no line "EOF"');
  rejects("FROM x\nRUN <<A <<B\nA\n", 2, 'unterminated heredoc: no line "B"');
});

test("unknown instructions are named, with a suggestion or the missing continuation", () => {
  rejects("FROM x\nCOPPY a b", 2, "unknown instruction: COPPY (did you mean COPY?)");
  rejects(
    "FROM x\nRUN a \\\n  b\n  install c",
    4,
    'unknown instruction: INSTALL; the RUN instruction on lines 2-3 ends because line 3 does not end with "\\": a missing line continuation?',
  );
  rejects("FROM x\n\nfoo", 3, /^Dockerfile:3: unknown instruction: FOO$/);
});
