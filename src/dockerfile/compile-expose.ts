import { DockerfileError } from "../errors.ts";

const PROTOCOLS = new Set(["tcp", "udp", "sctp"]);
const MAX_PORT = 65535;

/**
 * The ExposedPorts keys of EXPOSE's (expanded) words, as Docker's nat.ParsePortSpecs gives them: `80` is
 * `80/tcp`, the protocol is lower-cased, and a range `7000-7002/udp` is one key per port.
 */
export function exposedPorts(specs: readonly string[], line: number): string[] {
  const keys: string[] = [];
  for (const spec of specs) {
    const slash = spec.indexOf("/");
    const ports = slash < 0 ? spec : spec.slice(0, slash);
    const proto = (slash < 0 ? "" : spec.slice(slash + 1)).toLowerCase() || "tcp";
    if (!PROTOCOLS.has(proto)) throw new DockerfileError(line, `EXPOSE ${spec}: invalid proto: ${proto}`);
    const m = /^(\d+)(?:-(\d+))?$/.exec(ports);
    if (m === null) throw new DockerfileError(line, `EXPOSE ${spec}: invalid containerPort: ${ports}`);
    const start = Number(m[1]);
    const end = m[2] === undefined ? start : Number(m[2]);
    if (start > MAX_PORT || end > MAX_PORT || end < start) {
      throw new DockerfileError(line, `EXPOSE ${spec}: invalid port range: ${ports}`);
    }
    for (let p = start; p <= end; p++) keys.push(`${p}/${proto}`);
  }
  return keys;
}
