// biome-ignore-all lint/suspicious/noTemplateCurlyInString: shell words with ${VAR} are the test data
import assert from "node:assert/strict";
import { test } from "node:test";
import { type Env, expandWord } from "../../src/dockerfile/shell-lex.ts";
import { DockerfileError } from "../../src/errors.ts";

const BS = { escapeToken: "\\" } as const;
const env = (o: Record<string, string>): Env => new Map(Object.entries(o));
const ENV = env({ PWD: "/home", SHELL: "bash", KOREAN: "한국어", NULL: "" });
const ERROR = Symbol("error");

// Word → result with escape `\`, in the manner of BuildKit's envVarTest table (Unix rows).
const WORDS: readonly (readonly [string, string | typeof ERROR])[] = [
  ["hello", "hello"],
  ["he'll'o", "hello"],
  ["he'llo", ERROR],
  ["he\\'llo", "he'llo"],
  ["he\\\\'llo", ERROR],
  ["abc\\tdef", "abctdef"],
  ['"abc\\tdef"', "abc\\tdef"],
  ['"abc\\\\tdef"', "abc\\tdef"],
  ["'abc\\tdef'", "abc\\tdef"],
  ["hello\\", "hello"],
  ["hello\\\\", "hello\\"],
  ['"hello', ERROR],
  ['"hello\\"', ERROR],
  ['"hel\'lo"', "hel'lo"],
  ["'hello", ERROR],
  ["'hello\\'", "hello\\"],
  ["\"''\"", "''"],
  ["$.", "$."],
  ["$1", ""],
  ["he$1x", "hex"],
  ["he$.x", "he$.x"],
  ["he$pwd.", "he."],
  ["he$PWD", "he/home"],
  ["he\\$PWD", "he$PWD"],
  ["he\\\\$PWD", "he\\/home"],
  ['"he\\$PWD"', "he$PWD"],
  ['"he\\\\$PWD"', "he\\/home"],
  ["\\${}", "${}"],
  ["\\${}aaa", "${}aaa"],
  ["he\\${}xx", "he${}xx"],
  ["${}", ERROR],
  ["he${}xx", ERROR],
  ["he${hi}xx", "hexx"],
  ["he${PWD}", "he/home"],
  ["he${.}", ERROR],
  ["he${XXX:-000}xx", "he000xx"],
  ["he${PWD:-000}xx", "he/homexx"],
  ["he${XXX:-$PWD}xx", "he/homexx"],
  ["he${XXX:-${PWD:-yyy}}xx", "he/homexx"],
  ["he${XXX:-${YYY:-yyy}}xx", "heyyyxx"],
  ["he${XXX:YYY}", ERROR],
  ["he${XXX:+${PWD}}xx", "hexx"],
  ["he${PWD:+${XXX}}xx", "hexx"],
  ["he${PWD:+${SHELL}}xx", "hebashxx"],
  ["he${XXX:+000}xx", "hexx"],
  ["he${PWD:+000}xx", "he000xx"],
  ["'he${XX}'", "he${XX}"],
  ['"he${PWD}"', "he/home"],
  ["\"he'$PWD'\"", "he'/home'"],
  ["'$PWD'", "$PWD"],
  ["'\\$PWD'", "\\$PWD"],
  ["'\"hello\"'", '"hello"'],
  ["he${PWD", ERROR],
  ["he${PWD:=000}xx", ERROR],
  ["he${PWD:+${PWD}:}xx", "he/home:xx"],
  ["he${XXX:-\\$PWD:}xx", "he$PWD:xx"],
  ["he${XXX:-\\${PWD}z}xx", "he${PWDz}xx"],
  ["안'녕'하세요", "안녕하세요"],
  ["안녕\\'하세요", "안녕'하세요"],
  ["안녕$PWD", "안녕/home"],
  ["$KOREAN", "한국어"],
  ["${{aaa}", ERROR],
  ["${aaa}}", "}"],
  ["${aaa", ERROR],
  ["${aaa:-bbb}}", "bbb}"],
  ["${aaa:-bbb", ERROR],
  ["${aaa:-${bbb:-ccc}}", "ccc"],
  ["${aaa:-bbb ${foo}", ERROR],
  ["${aaa:-bbb {foo}", "bbb {foo"],
  ["${:}", ERROR],
  ["${:-bbb}", ERROR],
  ["${:+bbb}", ERROR],
  // `-`/`+`/`?` without the colon: only unset counts, an empty value is a value
  ["${NULL-x}", ""],
  ["${NULL:-x}", "x"],
  ["${NULL+x}", "x"],
  ["${NULL:+x}", ""],
  ["${UNSET-x}", "x"],
  ["${UNSET+x}", ""],
  ["${NULL?}", ""],
  ["${NULL:?}", ERROR],
  ["${UNSET?}", ERROR],
  ["${PWD:?}", "/home"],
];

test("expandWord follows BuildKit's envVarTest table", () => {
  for (const [word, expected] of WORDS) {
    if (expected === ERROR) {
      assert.throws(() => expandWord(word, ENV, BS), DockerfileError, word);
    } else {
      assert.equal(expandWord(word, ENV, BS).result, expected, word);
    }
  }
});

test("${V:?msg} and ${V?msg} fail with the expanded message", () => {
  const e = env({ ARG: "x", EMPTY: "" });
  assert.throws(() => expandWord("${EMPTY:?message here$ARG}", e, BS), /EMPTY: message herex/);
  assert.throws(() => expandWord("${UNSET?message here$ARG}", e, BS), /UNSET: message herex/);
  assert.throws(() => expandWord("${UNSET:?}", e, BS), /UNSET: is not allowed to be unset/);
  assert.throws(() => expandWord("${EMPTY:?}", e, BS), /EMPTY: is not allowed to be empty/);
  assert.throws(
    () => expandWord("${", e, BS),
    /^DockerfileError: failed to process "\$\{": syntax error: missing '\}'$/,
  );
});

test("matched and unmatched record which variables a word used", () => {
  const e = env({ FOO: "xxx", BAR: "" });
  const r = expandWord("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", e, BS);
  assert.equal(r.result, "xxx bbb ccc");
  assert.deepEqual([...r.matched].sort(), ["BAR", "FOO"]);
  assert.deepEqual([...r.unmatched], ["BAZ"]);
  const plain = expandWord("x", e, BS);
  assert.equal(plain.matched.size + plain.unmatched.size, 0);
  const platform = "something-${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
  assert.equal(
    expandWord(platform, env({ TARGETOS: "linux", TARGETARCH: "arm", TARGETVARIANT: "v7" }), BS).result,
    "something-linux-arm-v7.tar.gz",
  );
  assert.equal(
    expandWord(platform, env({ TARGETOS: "linux", TARGETARCH: "arm64", TARGETVARIANT: "" }), BS).result,
    "something-linux-arm64.tar.gz",
  );
});

test("pattern removal and replacement", () => {
  const cases: [string, Record<string, string>, string][] = [
    ["${FOO#()[]{\\}^$.\\*\\?|\\\\}", { FOO: "()[]{}^$.*?|\\x" }, "x"],
    ["${FOO%%\\**}", { FOO: "xx**" }, "xx"],
    ["${FOO#*x*y}", { FOO: "xxyy" }, "y"],
    ["${FOO#*}", { FOO: "xxyy" }, "xxyy"],
    ["${FOO#$BAR}", { FOO: "xxyy", BAR: "x" }, "xyy"],
    ["${FOO##*x}", { FOO: "xxyy" }, "yy"],
    ["${FOO#?\\?}", { FOO: "???y" }, "?y"],
    ["${ABC:-.}${FOO%x}${ABC:-.}", { FOO: "xxyy" }, ".xxyy."],
    ["${FOO%%\\**\\*}", { FOO: "a***yy*" }, "a"],
    ["${FOO%y*}", { FOO: "xxyy" }, "xxy"],
    ["${FOO%%y*}", { FOO: "xxyy" }, "xx"],
    [
      "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
      { FOO: "/foo*/*/*.txt", NEEDLE: "\\*/" },
      "/foo.*/*.txt - /foo..*.txt",
    ],
    [
      "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
      { FOO: "/tmp/tmp/bar.txt", NEEDLE: "/tmp" },
      "/tmp/bar.txt - /bar.txt",
    ],
    [
      "${FOO/$NEEDLE/$R} - ${FOO//$NEEDLE/$R}",
      { FOO: "/a/foo/b/c.txt", NEEDLE: "/?/", R: "/" },
      "/foo/b/c.txt - /foo/c.txt",
    ],
    ["${FOO//\\//\\/}", { FOO: "/tmp/foo.txt" }, "\\/tmp\\/foo.txt"],
    ["${FOO///}", { FOO: "xxyy" }, "xxyy"],
    // a replacement that reaches the regexp with `$` in it is a Go template: `$0` is the match
    ["${FOO//y/$R}", { FOO: "xyy", R: "[$0|$$|$x|$]" }, "x[y|$||$][y|$||$]"],
  ];
  for (const [word, vars, expected] of cases)
    assert.equal(expandWord(word, env(vars), BS).result, expected, word);
  for (const bad of ["${FOO:#}", "${FOO:%%}", "${FOO//ww}", "${FOO=x}", "${FOO#\\x}"]) {
    assert.throws(() => expandWord(bad, env({ FOO: "xxyy" }), BS), DockerfileError, bad);
  }
});

test("words split on unquoted whitespace after expansion", () => {
  const e = env({ space: "abc  def", leading: "  ab c", trailing: "ab c   ", hi: "hi" });
  const cases: [string, string[]][] = [
    ["hello", ["hello"]],
    ["hello${hi}bye", ["hellohibye"]],
    ["hello${space}bye", ["helloabc", "defbye"]],
    ['hello"${space}"bye', ["helloabc  defbye"]],
    ['hello "${space}"bye', ["hello", "abc  defbye"]],
    ["hello${leading}def", ["hello", "ab", "cdef"]],
    ['hello"${leading}" def', ["hello  ab c", "def"]],
    ["hello${trailing}d", ["helloab", "c", "d"]],
    ['hel"lo${trailing}"', ["helloab c   "]],
    ['hello" there  "', ["hello there  "]],
    ["hello there", ["hello", "there"]],
    ["hello\\ there", ["hello there"]],
    ['hello\\" there', ['hello"', "there"]],
    ["hello'$there'", ["hello$there"]],
    ["a${UNSET:-b}c d", ["abc", "d"]],
    ['"" x', ["x"]],
  ];
  for (const [word, expected] of cases) assert.deepEqual(expandWord(word, e, BS).words, expected, word);
});

test("the backtick escape token replaces the backslash", () => {
  const BT = { escapeToken: "`" } as const;
  const e = env({ ProgramFiles: "C:\\Program Files" });
  assert.equal(expandWord("C:\\", e, BT).result, "C:\\");
  assert.equal(expandWord("`$ProgramFiles", e, BT).result, "$ProgramFiles");
  assert.equal(expandWord('"a `"quoted`" word"', e, BT).result, 'a "quoted" word');
  assert.equal(expandWord("\\\\server\\share", e, BT).result, "\\\\server\\share");
  assert.equal(expandWord('"$ProgramFiles\\PowerShell"', e, BT).result, "C:\\Program Files\\PowerShell");
  assert.equal(expandWord('"C:\\Windows\\"', e, BT).result, "C:\\Windows\\");
});

test("raw modes keep quotes and escapes; skipUnsetEnv keeps unset references", () => {
  const e = env({ A: "1" });
  const raw = { escapeToken: "\\", rawQuotes: true, rawEscapes: true, skipUnsetEnv: true } as const;
  assert.equal(
    expandWord(`'x' "y" \\z $A $B \${C:-d} \${D/a/b}`, e, raw).result,
    `'x' "y" \\z 1 $B \${C:-d} \${D/a/b}`,
  );
  const heredocBody = { escapeToken: "\\", skipProcessQuotes: true } as const;
  assert.equal(expandWord(`-- "\\$@" '$A' \\\\`, e, heredocBody).result, `-- "$@" '1' \\`);
});
