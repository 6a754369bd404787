import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { parseWwwAuthenticate } from "../../src/registry/www-authenticate.ts";

test("a bearer challenge with commas inside the quoted scope keeps the scope whole", () => {
  const header =
    'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push repository:c:pull"';
  assert.deepEqual(parseWwwAuthenticate(header), [
    {
      scheme: "bearer",
      params: {
        realm: "https://auth.example.com/token",
        service: "registry.example.com",
        scope: "repository:a/b:pull,push repository:c:pull",
      },
    },
  ]);
});

test("several challenges, token68, escapes, spaces around = and unquoted values", () => {
  const header =
    'Basic abc123==, Bearer realm = "http://x/t?a=\\"1\\"" , error=insufficient_scope, Basic realm="r"';
  assert.deepEqual(parseWwwAuthenticate(header), [
    { scheme: "basic", params: {} },
    { scheme: "bearer", params: { realm: 'http://x/t?a="1"', error: "insufficient_scope" } },
    { scheme: "basic", params: { realm: "r" } },
  ]);
});

test("scheme and parameter names are case-insensitive; garbage does not loop", () => {
  assert.deepEqual(parseWwwAuthenticate('BEARER Realm="r",SERVICE="s"'), [
    { scheme: "bearer", params: { realm: "r", service: "s" } },
  ]);
  assert.deepEqual(parseWwwAuthenticate(""), []);
  assert.deepEqual(parseWwwAuthenticate("@@@ ,,, ="), []);
});

test("any quoted value survives a round trip through the header syntax", () => {
  fc.assert(
    fc.property(
      fc.string({ unit: "grapheme-ascii" }),
      fc.string({ unit: "grapheme-ascii" }),
      (realm, scope) => {
        const q = (v: string) => `"${v.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
        const parsed = parseWwwAuthenticate(`Bearer realm=${q(realm)}, scope=${q(scope)}`);
        assert.deepEqual(parsed, [{ scheme: "bearer", params: { realm, scope } }]);
      },
    ),
  );
});
