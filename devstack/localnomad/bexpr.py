"""A small go-bexpr evaluator for the `filter=` query parameter of list endpoints.

Supports selectors (`Status`, `JobSummary.Summary.web.Running`), the operators
`==`, `!=`, `contains`, `not contains`, `in`, `not in`, `matches`, `is empty`,
`is not empty`, and `and`/`or`/`not`/parentheses. Values are quoted strings,
numbers or booleans. Enough for what platforms send; not the full grammar.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_TOK = re.compile(r'\s*("(?:[^"\\]|\\.)*"|`[^`]*`|==|!=|\(|\)|[A-Za-z0-9_.\-\[\]"/*]+)')

Predicate = Callable[[dict[str, Any]], bool]


class FilterError(ValueError):
    pass


def _tokens(expr: str) -> list[str]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOK.match(expr, pos)
        if m is None:
            raise FilterError(f"failed to parse filter {expr!r}")
        out.append(m.group(1))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    return out


def _select(obj: Any, path: str) -> Any:
    value = obj
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def _literal(tok: str) -> Any:
    if tok.startswith('"') or tok.startswith("`"):
        return tok[1:-1].replace('\\"', '"')
    if tok in ("true", "false"):
        return tok == "true"
    try:
        return int(tok)
    except ValueError:
        try:
            return float(tok)
        except ValueError:
            return tok


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a == b)
    if isinstance(a, int | float) and isinstance(b, str):
        try:
            return float(b) == a
        except ValueError:
            return False
    return str(a) == str(b) if a is not None else b in ("", None)


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.toks = tokens
        self.i = 0

    def peek(self, k: int = 0) -> str | None:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise FilterError("unexpected end of filter expression")
        self.i += 1
        return tok

    def expr(self) -> Predicate:
        left = self.term()
        while self.peek() == "or":
            self.take()
            right = self.term()
            left = (lambda a, b: lambda o: a(o) or b(o))(left, right)
        return left

    def term(self) -> Predicate:
        left = self.factor()
        while self.peek() == "and":
            self.take()
            right = self.factor()
            left = (lambda a, b: lambda o: a(o) and b(o))(left, right)
        return left

    def factor(self) -> Predicate:
        tok = self.peek()
        if tok == "not":
            self.take()
            inner = self.factor()
            return lambda o: not inner(o)
        if tok == "(":
            self.take()
            inner = self.expr()
            if self.take() != ")":
                raise FilterError("missing closing parenthesis")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        first = self.take()
        if first.startswith('"') and self.peek() in ("in", "not"):
            # "value" in Selector
            value = _literal(first)
            negate = False
            if self.peek() == "not":
                self.take()
                negate = True
            if self.take() != "in":
                raise FilterError("expected 'in'")
            sel = self.take()
            return lambda o: negate != _contains(_select(o, sel), value)
        sel = first
        op = self.take()
        if op == "is":
            neg = False
            if self.peek() == "not":
                self.take()
                neg = True
            if self.take() != "empty":
                raise FilterError("expected 'empty'")
            return lambda o: neg != (not _select(o, sel))
        negate = False
        if op == "not":
            negate = True
            op = self.take()
        value = _literal(self.take())
        if op == "==":
            return lambda o: _eq(_select(o, sel), value)
        if op == "!=":
            return lambda o: not _eq(_select(o, sel), value)
        if op in ("contains", "in"):
            return lambda o: negate != _contains(_select(o, sel), value)
        if op == "matches":
            rx = re.compile(str(value))
            return lambda o: negate != bool(rx.search(str(_select(o, sel) or "")))
        raise FilterError(f"unknown operator {op!r}")


def _contains(container: Any, value: Any) -> bool:
    if isinstance(container, dict):
        return value in container
    if isinstance(container, list | str):
        return value in container
    return False


def compile_filter(expr: str) -> Predicate:
    parser = _Parser(_tokens(expr))
    pred = parser.expr()
    if parser.peek() is not None:
        raise FilterError(f"unexpected token {parser.peek()!r} in filter")
    return pred
