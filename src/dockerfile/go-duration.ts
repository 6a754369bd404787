const UNIT_NS: Readonly<Record<string, number>> = {
  ns: 1,
  us: 1e3,
  "\u00b5s": 1e3,
  "\u03bcs": 1e3,
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};

/** Go's time.ParseDuration (`1h30m`, `1.5s`, `300ms`), in nanoseconds; the error text is Go's. */
export function parseGoDuration(text: string): number | string {
  const invalid = `time: invalid duration ${JSON.stringify(text)}`;
  let s = text;
  let sign = 1;
  if (s.startsWith("-") || s.startsWith("+")) {
    if (s[0] === "-") sign = -1;
    s = s.slice(1);
  }
  if (s === "0") return 0;
  if (s === "") return invalid;
  let total = 0;
  while (s !== "") {
    const num = /^(\d*)(?:\.(\d*))?/.exec(s)!;
    if (num[0] === "" || num[0] === ".") return invalid;
    s = s.slice(num[0].length);
    const unit = /^[^\d.]+/.exec(s)?.[0];
    if (unit === undefined) return `time: missing unit in duration ${JSON.stringify(text)}`;
    const scale = UNIT_NS[unit];
    if (scale === undefined)
      return `time: unknown unit ${JSON.stringify(unit)} in duration ${JSON.stringify(text)}`;
    s = s.slice(unit.length);
    total += Number(`${num[1] || "0"}.${num[2] || "0"}`) * scale;
  }
  return sign * Math.round(total);
}
