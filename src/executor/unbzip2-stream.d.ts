declare module "unbzip2-stream" {
  import type { Duplex } from "node:stream";
  /** A classic (`through`) stream that decompresses bzip2 input. */
  export default function unbzip2Stream(): Duplex;
}
