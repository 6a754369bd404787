// Go's unicode.IsSpace, which BuildKit's parser and lexer use: JavaScript's \s differs (it has U+FEFF and
// lacks U+0085).
const GO_SPACE = /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$/u;
const GO_LEADING_SPACE = /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/u;
const GO_TRAILING_SPACE = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/u;

export const isGoSpace = (ch: string): boolean => GO_SPACE.test(ch);

/** Go's bytes.TrimLeftFunc(s, unicode.IsSpace). */
export const trimLeadingSpace = (s: string): string => s.replace(GO_LEADING_SPACE, "");

/** Go's strings.TrimSpace. */
export const trimSpace = (s: string): string => trimLeadingSpace(s).replace(GO_TRAILING_SPACE, "");

/** The separator BuildKit splits whitespace-delimited arguments on (`[\t\v\f\r ]+`). */
export const WHITESPACE_RUN = /[\t\v\f\r ]+/;
