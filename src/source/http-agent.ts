import { Agent, type Dispatcher, interceptors } from "undici";

/**
 * The HTTP client for git and http sources: redirects followed (hosting services move repositories and
 * archives; undici drops the Authorization header when a redirect leaves the origin), bounded waits.
 */
export function newHttpAgent(): Dispatcher {
  return new Agent({ connect: { timeout: 30_000 }, headersTimeout: 120_000, bodyTimeout: 120_000 }).compose(
    interceptors.redirect({ maxRedirections: 5 }),
  );
}
