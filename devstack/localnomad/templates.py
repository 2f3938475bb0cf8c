"""Task `template` blocks: a small Go-template interpreter with Vault KV lookups.

Supports what deploy platforms put in Nomad templates: plain text, `{{ with secret
"kv/data/app?version=N" }}...{{ else }}...{{ end }}`, `{{ if }}`, `{{ range $k, $v :=
.Data.data }}`, field access (`.Data.data.password`, `$v`), pipelines with `toJSON`,
`toUpper`, `toLower`, `trimSpace`, `base64Encode`, `env "NAME"`, and `{{-`/`-}}` trim
markers. Secrets are read from a real Vault/OpenBao through hvac. Rendered files go
under the task directory (`secrets/`, `local/`); `Envvars` templates are parsed as
env files into the task's environment. It is not a full text/template: no
`define`/`template`, no comparison functions, no Consul lookups, no `nomadVar`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NO_VALUE = "<no value>"


class TemplateError(Exception):
    """The template cannot be rendered; the task must not start."""


# ---- parsing ---------------------------------------------------------------------------
@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    pipeline: list[list[str]]


@dataclass
class _Block:
    kind: str  # with | if | range
    pipeline: list[list[str]]
    variables: list[str] = field(default_factory=list)
    body: list[Any] = field(default_factory=list)
    else_body: list[Any] = field(default_factory=list)


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|\$[\w.]*|\.[\w.]*|[\w.\-]+|:=|\||,')


def _lex_action(src: str) -> list[str]:
    return _TOKEN.findall(src)


def _split_pipeline(tokens: list[str]) -> list[list[str]]:
    cmds: list[list[str]] = [[]]
    for tok in tokens:
        if tok == "|":
            cmds.append([])
        else:
            cmds[-1].append(tok)
    if any(not c for c in cmds):
        raise TemplateError("missing command in pipeline")
    return cmds


def parse(src: str, left: str = "{{", right: str = "}}") -> list[Any]:
    pieces: list[tuple[str, str]] = []
    pos = 0
    while True:
        start = src.find(left, pos)
        if start < 0:
            pieces.append(("text", src[pos:]))
            break
        end = src.find(right, start + len(left))
        if end < 0:
            raise TemplateError("unclosed action")
        text = src[pos:start]
        inner = src[start + len(left):end]
        if inner.startswith("-") and (len(inner) == 1 or inner[1] in " \t\n"):
            text = text.rstrip()
            inner = inner[1:]
        trim_right = inner.endswith("-") and (len(inner) == 1 or inner[-2] in " \t\n")
        if trim_right:
            inner = inner[:-1]
        pieces.append(("text", text))
        pieces.append(("action", inner.strip()))
        pos = end + len(right)
        if trim_right:
            while pos < len(src) and src[pos] in " \t\r\n":
                pos += 1
    root: list[Any] = []
    stack: list[_Block] = []

    def current() -> list[Any]:
        if not stack:
            return root
        blk = stack[-1]
        return blk.else_body if getattr(blk, "_in_else", False) else blk.body

    for kind, value in pieces:
        if kind == "text":
            if value:
                current().append(_Text(value))
            continue
        if value.startswith("/*"):
            continue
        tokens = _lex_action(value)
        if not tokens:
            raise TemplateError(f"empty action: {value!r}")
        head = tokens[0]
        if head in ("with", "if", "range"):
            rest = tokens[1:]
            variables: list[str] = []
            if ":=" in rest:
                idx = rest.index(":=")
                variables = [t for t in rest[:idx] if t != ","]
                rest = rest[idx + 1:]
            blk = _Block(head, _split_pipeline(rest), variables)
            current().append(blk)
            stack.append(blk)
        elif head == "else":
            if not stack:
                raise TemplateError("unexpected {{else}}")
            blk = stack[-1]
            if len(tokens) > 1 and tokens[1] in ("if", "with"):
                nested = _Block(tokens[1], _split_pipeline(tokens[2:]))
                blk._in_else = True  # type: ignore[attr-defined]
                blk.else_body.append(nested)
                nested._chained = True  # type: ignore[attr-defined]
                stack.append(nested)
            else:
                blk._in_else = True  # type: ignore[attr-defined]
        elif head == "end":
            if not stack:
                raise TemplateError("unexpected {{end}}")
            blk = stack.pop()
            while getattr(blk, "_chained", False) and stack:
                blk = stack.pop()
        else:
            current().append(_Action(_split_pipeline(tokens)))
    if stack:
        raise TemplateError("unexpected EOF")
    return root


# ---- evaluation ------------------------------------------------------------------------
def to_json(value: Any) -> str:
    out = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    # Go's json.Marshal escapes HTML-significant characters.
    return out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _truthy(v: Any) -> bool:
    return bool(v) and v != NO_VALUE


def _fmt(v: Any) -> str:
    if v is None:
        return NO_VALUE
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{_fmt(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(_fmt(x) for x in v) + "]"
    return str(v)


class _Renderer:
    def __init__(self, secrets: dict[str, Any], env: dict[str, str], missing_key_error: bool):
        self.secrets = secrets
        self.env = env
        self.strict = missing_key_error

    def field(self, base: Any, path: str) -> Any:
        value = base
        for name in [p for p in path.split(".") if p]:
            if isinstance(value, dict):
                if name not in value:
                    if self.strict:
                        raise TemplateError(f"map has no entry for key \"{name}\"")
                    return None
                value = value[name]
            else:
                if value is None and not self.strict:
                    return None
                raise TemplateError(f"can't evaluate field {name} in type {type(value).__name__}")
        return value

    def arg(self, tok: str, dot: Any, scope: dict[str, Any]) -> Any:
        if tok.startswith('"'):
            return json.loads(tok)
        if tok.startswith("`"):
            return tok[1:-1]
        if tok.startswith("$"):
            name, _, rest = tok.partition(".")
            if name not in scope:
                raise TemplateError(f"undefined variable: {name}")
            return self.field(scope[name], rest) if rest else scope[name]
        if tok.startswith("."):
            return self.field(dot, tok[1:]) if tok != "." else dot
        if re.fullmatch(r"-?\d+", tok):
            return int(tok)
        if tok in ("true", "false"):
            return tok == "true"
        if tok == "nil":
            return None
        raise TemplateError(f"function \"{tok}\" not defined")

    def command(self, cmd: list[str], dot: Any, scope: dict[str, Any], piped: Any,
                has_piped: bool) -> Any:
        head = cmd[0]
        if head[0] in '".$`' or head[0].isdigit() or head in ("true", "false", "nil"):
            if len(cmd) > 1 or has_piped:
                raise TemplateError(f"can't give argument to non-function {head}")
            return self.arg(head, dot, scope)
        args = [self.arg(t, dot, scope) for t in cmd[1:]]
        if has_piped:
            args.append(piped)
        return self.call(head, args)

    def call(self, name: str, args: list[Any]) -> Any:
        if name == "secret":
            if not args:
                raise TemplateError("secret: wrong number of args")
            return self.secrets[str(args[0])]
        if name == "toJSON":
            return to_json(args[-1])
        if name == "toJSONPretty":
            return json.dumps(args[-1], indent=2, sort_keys=True)
        if name == "toUpper":
            return _fmt(args[-1]).upper()
        if name == "toLower":
            return _fmt(args[-1]).lower()
        if name == "trimSpace":
            return _fmt(args[-1]).strip()
        if name == "base64Encode":
            return base64.b64encode(_fmt(args[-1]).encode()).decode()
        if name == "base64Decode":
            return base64.b64decode(_fmt(args[-1])).decode()
        if name == "env":
            return self.env.get(str(args[0]), "")
        if name == "printf":
            fmt = str(args[0]).replace("%v", "%s").replace("%q", '"%s"')
            return fmt % tuple(_fmt(a) for a in args[1:])
        if name in ("not",):
            return not _truthy(args[-1])
        raise TemplateError(f"function \"{name}\" not defined")

    def pipeline(self, pipe: list[list[str]], dot: Any, scope: dict[str, Any]) -> Any:
        value: Any = None
        for i, cmd in enumerate(pipe):
            value = self.command(cmd, dot, scope, value, i > 0)
        return value

    def render(self, nodes: list[Any], dot: Any, scope: dict[str, Any], out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Action):
                out.append(_fmt(self.pipeline(node.pipeline, dot, scope)))
            elif isinstance(node, _Block):
                self.block(node, dot, scope, out)

    def block(self, blk: _Block, dot: Any, scope: dict[str, Any], out: list[str]) -> None:
        value = self.pipeline(blk.pipeline, dot, scope)
        if blk.kind == "range":
            items: list[tuple[Any, Any]]
            if isinstance(value, dict):
                items = [(k, value[k]) for k in sorted(value)]
            elif isinstance(value, list):
                items = list(enumerate(value))
            else:
                items = []
            if not items:
                self.render(blk.else_body, dot, scope, out)
            for k, v in items:
                inner = dict(scope)
                if len(blk.variables) == 2:
                    inner[blk.variables[0]], inner[blk.variables[1]] = k, v
                elif len(blk.variables) == 1:
                    inner[blk.variables[0]] = v
                self.render(blk.body, v, inner, out)
            return
        if _truthy(value):
            inner = dict(scope)
            for var in blk.variables:
                inner[var] = value
            self.render(blk.body, value if blk.kind == "with" else dot, inner, out)
        else:
            self.render(blk.else_body, dot, scope, out)


def secret_paths(nodes: list[Any]) -> list[str]:
    """Every literal path given to `secret` (they are fetched before rendering)."""
    paths: list[str] = []

    def visit_pipe(pipe: list[list[str]]) -> None:
        for cmd in pipe:
            if cmd[0] == "secret" and len(cmd) > 1 and cmd[1].startswith('"'):
                paths.append(json.loads(cmd[1]))

    def visit(ns: list[Any]) -> None:
        for n in ns:
            if isinstance(n, _Action):
                visit_pipe(n.pipeline)
            elif isinstance(n, _Block):
                visit_pipe(n.pipeline)
                visit(n.body)
                visit(n.else_body)

    visit(nodes)
    return paths


def render(src: str, secrets: dict[str, Any], env: dict[str, str] | None = None,
           missing_key_error: bool = False, left: str = "{{", right: str = "}}") -> str:
    nodes = parse(src, left, right)
    out: list[str] = []
    _Renderer(secrets, env or {}, missing_key_error).render(nodes, None, {}, out)
    return "".join(out)


def parse_env_file(text: str) -> dict[str, str]:
    """An env file as Nomad reads `Envvars` templates (godotenv rules, the common part)."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        env[key] = value
    return env


class TemplateRenderer:
    """Renders a task's templates into its directory; secrets come from Vault."""

    def __init__(self, vault_addr: str | None, vault_token: str | None,
                 retries: int = 3, retry_delay_s: float = 0.2) -> None:
        self.vault_addr = vault_addr
        self.vault_token = vault_token
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self._client: Any = None

    def _vault(self) -> Any:
        if self._client is None:
            import hvac  # imported lazily: most runs never touch Vault

            self._client = hvac.Client(url=self.vault_addr, token=self.vault_token, timeout=5)
        return self._client

    def _read_secret_sync(self, path: str) -> dict[str, Any]:
        import hvac.exceptions

        if not self.vault_addr:
            raise TemplateError(f"vault.read({path}): Vault is not configured on localnomad "
                                f"(start it with --vault-addr)")
        try:
            result = self._vault().read(path)
        except hvac.exceptions.InvalidPath:
            result = None
        except hvac.exceptions.VaultError as exc:
            raise TemplateError(f"vault.read({path}): {exc}") from None
        if not result:
            raise TemplateError(f"vault.read({path}): no secret exists at {path}")
        if isinstance(result, dict):
            # consul-template exposes Vault's JSON under Go field names: .Data, .LeaseID...
            return {"Data": result.get("data"), "LeaseID": result.get("lease_id", ""),
                    "LeaseDuration": result.get("lease_duration", 0),
                    "Renewable": result.get("renewable", False),
                    "Warnings": result.get("warnings")}
        raise TemplateError(f"vault.read({path}): unexpected response")

    async def read_secret(self, path: str) -> dict[str, Any]:
        last: Exception | None = None
        for attempt in range(self.retries):
            try:
                return await asyncio.to_thread(self._read_secret_sync, path)
            except TemplateError as exc:
                if "no secret exists" in str(exc) or "not configured" in str(exc):
                    raise
                last = exc
            except Exception as exc:  # connection refused and friends: retried like vault_retry
                last = TemplateError(f"vault.read({path}): {exc}")
            if attempt + 1 < self.retries:
                await asyncio.sleep(self.retry_delay_s * (2 ** attempt))
        assert last is not None
        raise last

    async def render_task(self, task: dict[str, Any], task_dir: Path,
                          alloc: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for tmpl in task.get("Templates") or []:
            src = tmpl.get("EmbeddedTmpl") or ""
            if not src and tmpl.get("SourcePath"):
                try:
                    src = (task_dir / tmpl["SourcePath"]).read_text()
                except OSError as exc:
                    raise TemplateError(f"failed to read template source: {exc}") from None
            left = tmpl.get("LeftDelim") or "{{"
            right = tmpl.get("RightDelim") or "}}"
            nodes = parse(src, left, right)
            secrets = {p: await self.read_secret(p) for p in secret_paths(nodes)}
            out: list[str] = []
            task_env = dict(task.get("Env") or {})
            _Renderer(secrets, task_env, bool(tmpl.get("ErrMissingKey"))).render(
                nodes, None, {}, out)
            text = "".join(out)
            dest = _dest_path(task_dir, tmpl.get("DestPath") or "local/template")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            perms = tmpl.get("Perms") or "0644"
            with contextlib.suppress(ValueError):
                os.chmod(dest, int(perms, 8))
            if tmpl.get("Envvars"):
                env.update(parse_env_file(text))
        return env


def _dest_path(task_dir: Path, dest: str) -> Path:
    rel = Path(dest.lstrip("/"))
    if ".." in rel.parts:
        raise TemplateError(f"template destination {dest!r} escapes the task directory")
    return task_dir / rel
