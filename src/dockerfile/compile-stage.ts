import { posix } from "node:path";
import { DockerfileError, describeError } from "../errors.ts";
import type { ContainerConfig } from "../oci/image-config.ts";
import { type CopyFrom, type CopyOp, type Mount, parseOwner, type Step } from "../plan/plan.ts";
import type {
  AddInstruction,
  CommandLine,
  CopyInstruction,
  HealthcheckSpec,
  Instruction,
  RunInstruction,
} from "./ast.ts";
import { exposedPorts } from "./compile-expose.ts";
import { expandInstruction, expandRunMounts } from "./expand.ts";
import { parseDockerfile } from "./parser.ts";
import type { RunMount } from "./run-mount.ts";
import { type Env, expandWord } from "./shell-lex.ts";
import { PROXY_ARGS, stageArgValue } from "./stage-resolution.ts";

/** containerd's default PATH for Linux, which BuildKit gives scratch images and RUN without a PATH. */
export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const DEFAULT_SHELL = ["/bin/sh", "-c"];

/** The config BuildKit starts a `FROM scratch` stage with. */
export function scratchConfig(os: string): ContainerConfig {
  return os === "windows" ? { WorkingDir: "/" } : { Env: [`PATH=${DEFAULT_PATH}`], WorkingDir: "/" };
}

/**
 * A stage's config as the plan carries it: the fields of `full`, and null for the fields the base had that
 * the stage dropped (an ENTRYPOINT resets the inherited CMD, ONBUILD triggers are not inherited).
 */
export function configDelta(base: ContainerConfig, full: ContainerConfig): ContainerConfig {
  const out: Record<string, unknown> = { ...full };
  for (const k of Object.keys(base)) if (!(k in full)) out[k] = null;
  return out as ContainerConfig;
}

/** How a stage reaches the others: `--from` names resolved (and compiled first) by the caller. */
export interface StageLinks {
  /** The plan name of the stage `ref` names, compiled before this one; undefined when no stage has that name. */
  stageRef(ref: string, line: number): Promise<string | undefined>;
  /** Checks that an image named by `--from` exists for the stage's platform. */
  imageRef(ref: string, line: number): Promise<void>;
}

export interface StageScope {
  readonly baseConfig: ContainerConfig;
  /** The global ARGs (and platform args) a stage ARG without a value inherits. */
  readonly globalScope: Env;
  readonly buildArgs: Env;
  readonly escapeToken: string;
  readonly links: StageLinks;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/**
 * One stage's instructions in order, as BuildKit dispatches them: the image config changes, the steps that
 * make layers, and the variables each word is expanded with. ENV goes to the config; ARG values only to
 * expansion and RUN's environment.
 */
export class StageCompiler {
  readonly steps: Step[] = [];
  author: string | undefined;
  readonly #scope: StageScope;
  readonly #config: Mutable<ContainerConfig>;
  /** The image's ENV, in config order. */
  readonly #env: Map<string, string>;
  /** What words expand against and RUN sees: ENV and ARG values, the last one set wins. */
  readonly #vars: Map<string, string>;
  /** ARGs declared in the stage that have a value: RUN's build-arg inputs. */
  readonly #args = new Map<string, string>();
  /** A CMD in this stage keeps an ENTRYPOINT from dropping it. */
  #cmdSet = false;

  constructor(scope: StageScope) {
    this.#scope = scope;
    const { Env, ...rest } = scope.baseConfig;
    this.#config = structuredClone(rest);
    this.#env = new Map(
      (Env ?? []).map((kv) => {
        const eq = kv.indexOf("=");
        return eq < 0 ? [kv, ""] : [kv.slice(0, eq), kv.slice(eq + 1)];
      }),
    );
    this.#vars = new Map(this.#env);
  }

  /** The stage's final config. */
  config(): ContainerConfig {
    const out: Mutable<ContainerConfig> = { ...this.#config };
    if (this.#env.size > 0 || this.#scope.baseConfig.Env !== undefined) {
      out.Env = [...this.#env].map(([k, v]) => `${k}=${v}`);
    }
    return out;
  }

  /**
   * Runs the base image's ONBUILD triggers right after FROM (errors point at the FROM line), then forgets
   * them: a child image does not inherit its parent's triggers.
   */
  async onBuildTriggers(triggers: readonly string[], fromLine: number): Promise<void> {
    for (const trigger of triggers) {
      let instructions: readonly Instruction[];
      try {
        instructions = parseDockerfile(trigger).instructions;
      } catch (err) {
        throw new DockerfileError(
          fromLine,
          `ONBUILD trigger ${JSON.stringify(trigger)} of the base image: ${describeError(err)}`,
          { cause: err },
        );
      }
      for (const ins of instructions) {
        if (ins.kind === "FROM" || ins.kind === "ONBUILD" || ins.kind === "MAINTAINER") {
          throw new DockerfileError(fromLine, `${ins.kind} isn't allowed as an ONBUILD trigger`);
        }
        await this.instruction({ ...ins, location: { startLine: fromLine, endLine: fromLine } });
      }
    }
    delete this.#config.OnBuild;
  }

  async instruction(ins: Exclude<Instruction, { kind: "FROM" }>): Promise<void> {
    const line = ins.location.startLine;
    const esc = this.#scope.escapeToken;
    const expand = <I extends Instruction>(i: I): I => expandInstruction(i, this.#vars, esc).instruction;
    switch (ins.kind) {
      case "ARG": {
        const shown: string[] = [];
        for (const arg of ins.args) {
          const value = stageArgValue(arg, ins, {
            buildArgs: this.#scope.buildArgs,
            globalScope: this.#scope.globalScope,
            stageEnv: this.#vars,
            escapeToken: esc,
          });
          shown.push(arg.value === undefined ? arg.key : `${arg.key}=${arg.value}`);
          if (value === undefined) continue;
          this.#args.set(arg.key, value);
          this.#vars.set(arg.key, value);
        }
        return this.#history(line, `ARG ${shown.join(" ")}`);
      }
      case "ENV": {
        const { pairs } = expand(ins);
        for (const { key, value } of pairs) {
          this.#env.set(key, value);
          this.#vars.set(key, value);
        }
        return this.#history(line, `ENV ${pairs.map((p) => `${p.key}=${p.value}`).join(" ")}`);
      }
      case "LABEL": {
        const { pairs } = expand(ins);
        this.#config.Labels = {
          ...(this.#config.Labels ?? {}),
          ...Object.fromEntries(pairs.map((p) => [p.key, p.value])),
        };
        return this.#history(line, `LABEL ${pairs.map((p) => `${p.key}=${p.value}`).join(" ")}`);
      }
      case "EXPOSE": {
        const { ports } = expand(ins);
        const keys = exposedPorts(ports, line);
        this.#config.ExposedPorts = {
          ...(this.#config.ExposedPorts ?? {}),
          ...Object.fromEntries(keys.map((k) => [k, {}])),
        };
        return this.#history(line, `EXPOSE ${ports.join(" ")}`);
      }
      case "VOLUME": {
        const { volumes } = expand(ins);
        if (volumes.some((v) => v.trim() === ""))
          throw new DockerfileError(line, "VOLUME specified can not be an empty string");
        this.#config.Volumes = {
          ...(this.#config.Volumes ?? {}),
          ...Object.fromEntries(volumes.map((v) => [v, {}])),
        };
        return this.#history(line, `VOLUME [${volumes.join(" ")}]`);
      }
      case "USER": {
        const { user } = expand(ins);
        this.#config.User = user;
        return this.#history(line, `USER ${user}`);
      }
      case "WORKDIR": {
        const { path } = expand(ins);
        // As BuildKit: an absolute WORKDIR is recorded as written (a trailing slash stays), a relative one is
        // joined to the current one and cleaned.
        const wd = path.startsWith("/") ? path : posix.join("/", this.#config.WorkingDir || "/", path);
        this.#config.WorkingDir = wd;
        const createdBy = `WORKDIR ${wd}`;
        const dir = posix.resolve(wd);
        if (dir === "/") return this.#history(line, createdBy);
        const user = this.#config.User;
        this.steps.push({
          kind: "mkdir",
          line,
          createdBy,
          path: dir,
          ...(user ? { owner: parseOwner(user) } : {}),
        });
        return;
      }
      case "SHELL":
        this.#config.Shell = [...ins.shell];
        return this.#history(line, `SHELL [${ins.shell.join(" ")}]`);
      case "STOPSIGNAL": {
        const { signal } = expand(ins);
        this.#config.StopSignal = signal;
        return this.#history(line, `STOPSIGNAL ${signal}`);
      }
      case "HEALTHCHECK":
        this.#config.Healthcheck = healthcheckConfig(ins.health);
        return this.#history(line, `HEALTHCHECK ${ins.original.replace(/^\S+\s*/, "")}`);
      case "ONBUILD":
        this.#config.OnBuild = [...(this.#config.OnBuild ?? []), ins.expression];
        return this.#history(line, `ONBUILD ${ins.expression}`);
      case "MAINTAINER":
        this.author = ins.maintainer;
        return this.#history(line, `MAINTAINER ${ins.maintainer}`);
      case "CMD": {
        const cmd = this.#argv(ins.command);
        this.#config.Cmd = cmd;
        this.#cmdSet = true;
        return this.#history(line, `CMD ${JSON.stringify(cmd)}`);
      }
      case "ENTRYPOINT": {
        const entrypoint = this.#argv(ins.command);
        this.#config.Entrypoint = entrypoint;
        if (!this.#cmdSet) delete this.#config.Cmd;
        return this.#history(line, `ENTRYPOINT ${JSON.stringify(entrypoint)}`);
      }
      case "COPY":
      case "ADD":
        this.steps.push(await this.#copy(ins));
        return;
      case "RUN":
        this.steps.push(await this.#run(ins));
        return;
    }
  }

  #history(line: number, createdBy: string): void {
    this.steps.push({ kind: "config", line, createdBy });
  }

  /** Exec form as written; shell form handed to the current SHELL. */
  #argv(command: CommandLine): string[] {
    if (command.form === "exec") return [...command.args];
    return [...(this.#config.Shell ?? DEFAULT_SHELL), command.script];
  }

  #expandWord(word: string, line: number): string {
    try {
      return expandWord(word, this.#vars, { escapeToken: this.#scope.escapeToken }).result;
    } catch (err) {
      throw new DockerfileError(line, describeError(err), { cause: err });
    }
  }

  async #copy(raw: CopyInstruction | AddInstruction): Promise<Step> {
    const line = raw.location.startLine;
    const ins = expandInstruction(raw, this.#vars, this.#scope.escapeToken).instruction;
    const fail = (detail: string): never => {
      throw new DockerfileError(line, `${ins.kind} ${detail}`);
    };
    const chmod = raw.chmod === undefined ? undefined : this.#expandWord(raw.chmod, line);
    if (chmod !== undefined && !/^[0-7]{3,4}$/.test(chmod)) {
      fail(`--chmod=${chmod}: expected an octal mode such as 0755`);
    }
    if (ins.chown === "") fail("--chown: empty user");
    const exclude = ins.exclude.map((e) => this.#expandWord(e, line));
    const common = {
      dest: destPath(ins.dest, this.#config.WorkingDir || "/"),
      ...(ins.chown !== undefined ? { chown: parseOwner(ins.chown) } : {}),
      ...(chmod !== undefined ? { chmod } : {}),
      exclude,
      parents: ins.kind === "COPY" && ins.parents,
    };
    const urls = ins.kind === "ADD" ? ins.sources.filter(isUrl) : [];
    const paths = ins.sources.filter((s) => !urls.includes(s));
    if (ins.kind === "ADD") {
      for (const s of ins.sources) {
        if (isGitSource(s)) fail(`${s}: git sources are not supported`);
      }
      if (ins.checksum !== undefined && (urls.length !== 1 || paths.length > 0)) {
        fail("--checksum needs exactly one http(s) source");
      }
      if (ins.checksum !== undefined && !/^sha(256|384|512):[a-f0-9]+$/.test(ins.checksum)) {
        fail(`--checksum=${ins.checksum}: expected sha256:<hex>`);
      }
    } else if (ins.sources.some(isUrl)) {
      fail("cannot copy from a URL: use ADD");
    }
    const ops: CopyOp[] = [];
    if (paths.length > 0) {
      const from = await this.#copySource(ins, line);
      const extract = ins.kind === "ADD" && from.kind === "context" && ins.unpack !== false;
      ops.push({ ...common, from, sources: paths, extract });
    }
    for (const url of urls) {
      const checksum = ins.kind === "ADD" ? ins.checksum : undefined;
      ops.push({
        ...common,
        from: { kind: "url", url, ...(checksum !== undefined ? { checksum } : {}) },
        sources: [url],
        extract: ins.kind === "ADD" && ins.unpack === true,
      });
    }
    if (ins.inlineFiles.length > 0) {
      const files = ins.inlineFiles.map((f) => ({ name: f.path, content: f.data }));
      ops.push({
        ...common,
        from: { kind: "inline", files },
        sources: files.map((f) => f.name),
        extract: false,
      });
    }
    const shown = [
      ins.kind,
      ...(ins.kind === "COPY" && ins.from !== undefined ? [`--from=${ins.from}`] : []),
      ...(ins.chown !== undefined ? [`--chown=${ins.chown}`] : []),
      ...(chmod !== undefined ? [`--chmod=${chmod}`] : []),
      ...ins.sources,
      ...ins.inlineFiles.map((f) => `<<${f.path}`),
      ins.dest,
    ];
    return { kind: "copy", line, createdBy: `${shown.join(" ")} # buildkit`, ops };
  }

  async #copySource(ins: CopyInstruction | AddInstruction, line: number): Promise<CopyFrom> {
    if (ins.kind !== "COPY" || ins.from === undefined) return { kind: "context" };
    return this.#fromRef(ins.from, line);
  }

  async #fromRef(ref: string, line: number): Promise<CopyFrom> {
    const stage = await this.#scope.links.stageRef(ref, line);
    if (stage !== undefined) return { kind: "stage", stage };
    await this.#scope.links.imageRef(ref, line);
    return { kind: "image", image: ref };
  }

  async #run(ins: RunInstruction): Promise<Step> {
    const line = ins.location.startLine;
    const { mounts } = expandRunMounts(ins, this.#vars, this.#scope.escapeToken);
    const argv = this.#argv(runCommand(ins));
    const env = new Map(this.#vars);
    for (const name of PROXY_ARGS) {
      const v = this.#scope.buildArgs.get(name);
      if (v !== undefined && !env.has(name)) env.set(name, v);
    }
    if (!env.has("PATH")) env.set("PATH", DEFAULT_PATH);
    const planMounts: Mount[] = [];
    for (const m of mounts) planMounts.push(await this.#mount(m, line));
    return {
      kind: "run",
      line,
      createdBy: `RUN ${argv.join(" ")} # buildkit`,
      argv,
      env: [...env].map(([k, v]) => `${k}=${v}`),
      user: this.#config.User ?? "",
      workdir: this.#config.WorkingDir || "/",
      mounts: planMounts,
      network: ins.network ?? "default",
      usedArgs: Object.fromEntries(this.#args),
    };
  }

  async #mount(m: RunMount, line: number): Promise<Mount> {
    const target = m.target ?? "";
    switch (m.type) {
      case "secret": {
        const id = m.id ?? posix.basename(target);
        return {
          type: "secret",
          id,
          target: m.target ?? `/run/secrets/${id}`,
          required: m.required,
          mode: m.mode ?? 0o400,
          uid: m.uid ?? 0,
          gid: m.gid ?? 0,
          ...(m.env !== undefined ? { env: m.env } : {}),
        };
      }
      case "cache":
        return {
          type: "cache",
          id: m.id ?? target,
          target,
          sharing: m.sharing ?? "shared",
          ...(m.from !== undefined ? { from: m.from } : {}),
          ...(m.source !== undefined ? { source: m.source } : {}),
          readOnly: m.readOnly,
          mode: m.mode ?? 0o755,
          uid: m.uid ?? 0,
          gid: m.gid ?? 0,
        };
      case "bind":
        return {
          type: "bind",
          target,
          ...(m.from !== undefined ? { from: await this.#fromRef(m.from, line) } : {}),
          source: m.source ?? "/",
          readWrite: !m.readOnly,
        };
      case "tmpfs":
        return { type: "tmpfs", target, ...(m.sizeLimit !== undefined ? { size: m.sizeLimit } : {}) };
      case "ssh":
        throw new DockerfileError(line, "RUN --mount=type=ssh is not supported");
    }
  }
}

/**
 * A RUN's command with its heredocs: a RUN that is only `<<EOF` runs the body as the script; otherwise the
 * bodies follow the command line as shell here-documents.
 */
function runCommand(ins: RunInstruction): CommandLine {
  const { command, heredocs } = ins;
  if (command.form === "exec" || heredocs.length === 0) return command;
  const only = heredocs[0]!;
  if (heredocs.length === 1 && /^<<-?(['"]?)[^'"\s]+\1$/.test(command.script.trim())) {
    return { form: "shell", script: only.content };
  }
  const bodies = heredocs.map((h) => `${h.content}${h.name}\n`).join("");
  return { form: "shell", script: `${command.script}\n${bodies}` };
}

function healthcheckConfig(h: HealthcheckSpec): NonNullable<ContainerConfig["Healthcheck"]> {
  if (h.kind === "none") return { Test: ["NONE"] };
  return {
    Test: [...h.test],
    ...(h.intervalNs ? { Interval: h.intervalNs } : {}),
    ...(h.timeoutNs ? { Timeout: h.timeoutNs } : {}),
    ...(h.startPeriodNs ? { StartPeriod: h.startPeriodNs } : {}),
    ...(h.startIntervalNs ? { StartInterval: h.startIntervalNs } : {}),
    ...(h.retries ? { Retries: h.retries } : {}),
  };
}

/**
 * A COPY/ADD destination made absolute against the working directory; a trailing `/` (or a destination
 * of `.`) keeps meaning "into this directory".
 */
export function destPath(dest: string, workdir: string): string {
  const abs = posix.resolve(workdir, dest);
  const dirLike = dest === "." || dest === "" || dest.endsWith("/") || dest.endsWith("/.");
  return dirLike && abs !== "/" ? `${abs}/` : abs;
}

function isUrl(s: string): boolean {
  return /^https?:\/\//i.test(s);
}

function isGitSource(s: string): boolean {
  return /^git@|^git:\/\/|^https?:\/\/\S+\.git(#.*)?$/i.test(s);
}
