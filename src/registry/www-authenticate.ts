/** One challenge from a `WWW-Authenticate` header (RFC 9110 §11.6.1): a scheme and its parameters. */
export interface Challenge {
  /** Lower-cased: `basic`, `bearer`, … */
  readonly scheme: string;
  /** Parameter names lower-cased, values unquoted. */
  readonly params: Readonly<Record<string, string>>;
}

const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/**
 * Parses every challenge in a header value. Quoted values may hold commas and escaped quotes
 * (`scope="repository:a:pull,push"`), which a split on "," would break.
 */
export function parseWwwAuthenticate(header: string): Challenge[] {
  const challenges: { scheme: string; params: Record<string, string> }[] = [];
  let i = 0;
  const skipSpace = () => {
    while (i < header.length && (header[i] === " " || header[i] === "\t")) i++;
  };
  const readToken = () => {
    const start = i;
    while (i < header.length && TOKEN_CHAR.test(header[i]!)) i++;
    return header.slice(start, i);
  };
  const readQuoted = () => {
    let value = "";
    i++; // opening quote
    while (i < header.length && header[i] !== '"') {
      if (header[i] === "\\" && i + 1 < header.length) i++;
      value += header[i];
      i++;
    }
    i++; // closing quote
    return value;
  };

  while (i < header.length) {
    skipSpace();
    if (header[i] === ",") {
      i++;
      continue;
    }
    const word = readToken();
    if (word === "") {
      i++; // not a token character: skip it rather than loop forever
      continue;
    }
    skipSpace();
    const current = challenges.at(-1);
    if (header[i] === "=" && current !== undefined && header[i + 1] !== "=") {
      // `name=value` continues the current challenge's parameter list.
      i++;
      skipSpace();
      current.params[word.toLowerCase()] = header[i] === '"' ? readQuoted() : readToken();
      continue;
    }
    challenges.push({ scheme: word.toLowerCase(), params: {} });
    // token68 form (`Basic abc==`) carries no named parameters kiln uses; skip it.
    const save = i;
    const t = readToken();
    if (t !== "" && /^=*\s*(,|$)/.test(header.slice(i))) {
      while (header[i] === "=") i++;
    } else {
      i = save;
    }
  }
  return challenges;
}
