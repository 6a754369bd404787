/**
 * The typed Dockerfile AST. Words are kept as written (quotes, escapes and `$VAR` unprocessed) wherever the
 * builder expands them later (see expand.ts); exec-form arguments are already JSON-decoded.
 */

/** 1-based lines of an instruction, from its keyword to its last continuation or heredoc line. */
export interface SourceRange {
  readonly startLine: number;
  readonly endLine: number;
}

/** A here-document attached to RUN, COPY or ADD (`<<EOF`, `<<-EOF`, `<<'EOF'`, `3<<EOF`). */
export interface Heredoc {
  /** The delimiter word with quotes removed; COPY/ADD use it as the file name. */
  readonly name: string;
  /** The body, each line with its line ending; leading tabs already removed when `chomp`. */
  readonly content: string;
  /** False when the delimiter was quoted: the body is used verbatim. */
  readonly expand: boolean;
  /** `<<-`: leading tabs are stripped from the body and the delimiter line. */
  readonly chomp: boolean;
  /** `3<<EOF` → 3; 0 when not given. */
  readonly fileDescriptor: number;
}

/** Exec form (a JSON string array) runs directly; shell form is handed to the stage's SHELL. */
export type CommandLine =
  | { readonly form: "exec"; readonly args: readonly string[] }
  | { readonly form: "shell"; readonly script: string };

export interface KeyValue {
  readonly key: string;
  readonly value: string;
}

export interface ArgDeclaration {
  readonly key: string;
  /** undefined: `ARG NAME` without a default. */
  readonly value: string | undefined;
}

/** One `--mount=` of RUN, CSV-split into its fields, values as written (expanded by expandRunMounts). */
export interface RunMountSpec {
  readonly fields: readonly (readonly [key: string, value: string | undefined])[];
}

export type HealthcheckSpec =
  | { readonly kind: "none" }
  | {
      readonly kind: "cmd";
      /** `["CMD", ...args]` for exec form, `["CMD-SHELL", script]` for shell form, as in the image config. */
      readonly test: readonly string[];
      /** Nanoseconds; 0 when not given. */
      readonly intervalNs: number;
      readonly timeoutNs: number;
      readonly startPeriodNs: number;
      readonly startIntervalNs: number;
      readonly retries: number;
    };

interface Base<K extends string> {
  readonly kind: K;
  readonly location: SourceRange;
  /** The instruction's logical line (continuations joined, comments dropped), trimmed. */
  readonly original: string;
}

export interface FromInstruction extends Base<"FROM"> {
  readonly image: string;
  /** Lower-cased stage name from `AS name`. */
  readonly stageName: string | undefined;
  readonly platform: string | undefined;
}

export interface RunInstruction extends Base<"RUN"> {
  readonly command: CommandLine;
  readonly heredocs: readonly Heredoc[];
  readonly mounts: readonly RunMountSpec[];
  readonly network: "default" | "none" | "host" | undefined;
  readonly security: "sandbox" | "insecure" | undefined;
}

export interface CmdInstruction extends Base<"CMD"> {
  readonly command: CommandLine;
}

export interface EntrypointInstruction extends Base<"ENTRYPOINT"> {
  readonly command: CommandLine;
}

/** A heredoc source of COPY/ADD: a file named after its delimiter. */
export interface InlineFile {
  readonly path: string;
  readonly data: string;
  readonly expand: boolean;
}

interface CopyLike<K extends string> extends Base<K> {
  readonly sources: readonly string[];
  readonly inlineFiles: readonly InlineFile[];
  readonly dest: string;
  readonly chown: string | undefined;
  readonly chmod: string | undefined;
  readonly link: boolean;
  readonly exclude: readonly string[];
  /** Whether the arguments were a JSON array (JSON escapes applied, no shell-style word splitting). */
  readonly json: boolean;
}

export interface CopyInstruction extends CopyLike<"COPY"> {
  readonly from: string | undefined;
  readonly parents: boolean;
}

export interface AddInstruction extends CopyLike<"ADD"> {
  readonly keepGitDir: boolean;
  readonly checksum: string | undefined;
  /** undefined: `--unpack` not given (archives from the context are unpacked, URLs are not). */
  readonly unpack: boolean | undefined;
}

export interface ArgInstruction extends Base<"ARG"> {
  readonly args: readonly ArgDeclaration[];
}

export interface EnvInstruction extends Base<"ENV"> {
  readonly pairs: readonly KeyValue[];
}

export interface LabelInstruction extends Base<"LABEL"> {
  readonly pairs: readonly KeyValue[];
}

export interface ExposeInstruction extends Base<"EXPOSE"> {
  /** Sorted as BuildKit sorts them before expansion. */
  readonly ports: readonly string[];
}

export interface VolumeInstruction extends Base<"VOLUME"> {
  readonly volumes: readonly string[];
  readonly json: boolean;
}

export interface UserInstruction extends Base<"USER"> {
  readonly user: string;
}

export interface WorkdirInstruction extends Base<"WORKDIR"> {
  readonly path: string;
}

export interface ShellInstruction extends Base<"SHELL"> {
  readonly shell: readonly string[];
}

export interface StopSignalInstruction extends Base<"STOPSIGNAL"> {
  readonly signal: string;
}

export interface HealthcheckInstruction extends Base<"HEALTHCHECK"> {
  readonly health: HealthcheckSpec;
}

export interface OnbuildInstruction extends Base<"ONBUILD"> {
  /** The trigger as it is stored in the image config's OnBuild list. */
  readonly expression: string;
  readonly trigger: Instruction;
}

export interface MaintainerInstruction extends Base<"MAINTAINER"> {
  readonly maintainer: string;
}

export type Instruction =
  | FromInstruction
  | RunInstruction
  | CmdInstruction
  | EntrypointInstruction
  | CopyInstruction
  | AddInstruction
  | ArgInstruction
  | EnvInstruction
  | LabelInstruction
  | ExposeInstruction
  | VolumeInstruction
  | UserInstruction
  | WorkdirInstruction
  | ShellInstruction
  | StopSignalInstruction
  | HealthcheckInstruction
  | OnbuildInstruction
  | MaintainerInstruction;

export type InstructionKind = Instruction["kind"];

export interface Dockerfile {
  /** `\` unless `# escape=` set the backtick. */
  readonly escapeToken: "\\" | "`";
  /** Parser directives found at the top (`syntax`, `escape`, `check`), names lower-cased. */
  readonly directives: ReadonlyMap<string, string>;
  readonly instructions: readonly Instruction[];
  /** Lines that joined an empty continuation line (BuildKit warns; a future release will reject them). */
  readonly emptyContinuationLines: readonly number[];
}
