import { KilnError, NotFoundError } from "../errors.ts";

/**
 * A build context could not be fetched. `temporary` when repeating the fetch may succeed (a refused
 * connection, a 5xx); otherwise the source itself is wrong and the build fails at once.
 */
export class SourceError extends KilnError {
  override readonly code: string = "KILN_ERR_SOURCE";
  readonly #temporary: boolean;
  constructor(message: string, options: ErrorOptions & { readonly temporary?: boolean } = {}) {
    super(message, options);
    this.#temporary = options.temporary ?? false;
  }
  override get temporary(): boolean {
    return this.#temporary;
  }
}

/** The source's server refused the credentials, or asked for some and none were given. */
export class SourceAuthError extends SourceError {
  override readonly code = "KILN_ERR_SOURCE_AUTH";
}

/** A git revision that is no branch, tag or commit of the repository. */
export class RevisionNotFoundError extends NotFoundError {
  override readonly code = "KILN_ERR_REVISION_NOT_FOUND";
  readonly revision: string;
  constructor(revision: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.revision = revision;
  }
}
