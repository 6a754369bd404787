import { runCommand } from "./command.ts";

/** Debian's skopeo, without a signature policy (the tests only copy between local directories). */
export async function skopeo(...args: string[]): Promise<string> {
  return (await runCommand("skopeo", ["--insecure-policy", ...args])).toString("utf8");
}

/** `skopeo inspect` of an image, parsed. */
export async function skopeoInspect(
  ...args: string[]
): Promise<{ Digest: string; Architecture: string; Os: string; Layers: string[] }> {
  return JSON.parse(await skopeo("inspect", ...args));
}
