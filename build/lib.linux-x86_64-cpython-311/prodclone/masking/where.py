"""A rules ``where:`` is one boolean expression over its own table, nothing else.

The author's text is parsed with Postgres's own grammar (pglast) inside a fixed
``SELECT 1 FROM t WHERE (...)``; the tree must be exactly that statement, and the
expression may only use an allow-list of node kinds and side-effect-free
built-in functions. SQL only ever sees pglast's re-deparsed text, never the
author's, so a typo or an injection cannot become a statement.
"""

from __future__ import annotations

import functools

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

from prodclone.errors import RulesError

_PREFIX = "SELECT 1 FROM t WHERE (\n"
_SUFFIX = "\n)"  # on its own line: a trailing `--` comment cannot swallow the closing parenthesis
_SKELETON = parse_sql("SELECT 1 FROM t")[0].stmt

# Built-ins that read only their arguments and change nothing (comparison,
# string, math, date). The grammar turns SQL syntax such as EXTRACT, SUBSTRING
# ... FROM, TRIM, POSITION, AT TIME ZONE and SIMILAR TO into pg_catalog calls.
SAFE_FUNCTIONS = frozenset({
    "abs", "age", "array_length", "btrim", "cardinality", "ceil", "ceiling", "char_length", "character_length",
    "date_part", "date_trunc", "div", "extract", "floor", "hashtext", "initcap", "left", "length", "lower", "lpad",
    "ltrim", "make_date", "md5", "mod", "now", "octet_length", "position", "replace", "reverse", "right", "round",
    "rpad", "rtrim", "sign", "similar_to_escape", "split_part", "starts_with", "strpos", "substr", "substring",
    "timezone", "trunc", "upper",
})

# Node kinds an expression over one row may contain. Everything else (SubLink,
# ParamRef, A_Indirection, window and JSON/XML constructs, ...) is refused.
_ALLOWED = (
    ast.A_ArrayExpr, ast.A_Const, ast.A_Expr, ast.BoolExpr, ast.BooleanTest, ast.CaseExpr, ast.CaseWhen,
    ast.CoalesceExpr, ast.CollateClause, ast.ColumnRef, ast.FuncCall, ast.MinMaxExpr, ast.NullTest, ast.RowExpr,
    ast.SQLValueFunction, ast.TypeCast, ast.TypeName, ast.String, ast.Integer, ast.Float, ast.Boolean,
    ast.BitString,
)
_FUNC_EXTRAS = ("agg_order", "agg_filter", "over", "agg_star", "agg_distinct", "func_variadic", "agg_within_group")


def _bounded(check):
    """``check`` with Python's recursion limit (a deeply nested expression) reported as a RulesError."""
    @functools.wraps(check)
    def bounded(text: str):
        try:
            return check(text)
        except RecursionError:
            raise RulesError("is nested too deeply to check: simplify it") from None
    return bounded


@_bounded
@functools.lru_cache(maxsize=1024)
def normalize(text: str) -> str:
    """The author's ``where`` as pglast re-deparses it, after checking it is one allowed
    expression; raises RulesError saying what is not allowed."""
    deparsed = RawStream()(_expression(text))
    _expression(deparsed)  # the deparsed text must itself pass: SQL only ever sees this
    return deparsed


@_bounded
def columns(text: str) -> set[str]:
    """The column names an (allowed) ``where`` reads."""
    return {n.fields[0].sval for n in _walk(_expression(text)) if isinstance(n, ast.ColumnRef)}


def _expression(text: str) -> ast.Node:
    try:
        stmts = parse_sql(_PREFIX + text + _SUFFIX)
    except ParseError as exc:
        at = exc.args[1] - len(_PREFIX) + 1 if len(exc.args) > 1 else None
        where = f" (at character {at})" if at is not None and 0 < at <= len(text) + 1 else ""
        raise RulesError(f"is not one SQL expression: {exc.args[0]}{where}") from None
    stmt = stmts[0].stmt if len(stmts) == 1 else None
    expr = getattr(stmt, "whereClause", None)
    if not isinstance(stmt, ast.SelectStmt) or expr is None:
        raise RulesError("must be exactly one boolean expression, not more SQL")
    stmt.whereClause = None
    if stmt != _SKELETON:
        raise RulesError("must be exactly one boolean expression, not more SQL (no UNION, ORDER BY, LIMIT, ...)")
    for node in _walk(expr):
        _check(node)
    return expr


def _walk(node):
    """``node`` and every node below it."""
    if isinstance(node, (tuple, list)):
        for item in node:
            yield from _walk(item)
    elif isinstance(node, ast.Node):
        yield node
        for slot in type(node).__slots__:
            yield from _walk(getattr(node, slot))


def _check(node: ast.Node) -> None:
    if not isinstance(node, _ALLOWED):
        what = "a subquery" if isinstance(node, ast.SubLink) else type(node).__name__
        raise RulesError(f"may not contain {what}: a where reads only its own row's columns")
    if isinstance(node, ast.ColumnRef) and not (len(node.fields) == 1 and isinstance(node.fields[0], ast.String)):
        raise RulesError("names columns by their plain name only (no table prefix, no *)")
    if isinstance(node, ast.FuncCall):
        name = _unqualified(node.funcname, "function")
        if name not in SAFE_FUNCTIONS:
            raise RulesError(f"may not call {name}(): allowed functions are {', '.join(sorted(SAFE_FUNCTIONS))}")
        if any(getattr(node, a) for a in _FUNC_EXTRAS):
            raise RulesError(f"may not use aggregate, window or VARIADIC syntax in {name}()")
    elif isinstance(node, ast.A_Expr):
        _unqualified(node.name, "operator")
    elif isinstance(node, ast.TypeName):
        _unqualified(node.names, "type")
    elif isinstance(node, ast.CollateClause):
        _unqualified(node.collname, "collation")


def _unqualified(names, kind: str) -> str:
    """The name of a function, operator, type or collation, which may be qualified only by
    pg_catalog (the export resolves names there alone)."""
    parts = [n.sval for n in names]
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "pg_catalog"):
        raise RulesError(f"may not use the schema-qualified {kind} {'.'.join(parts)}: use built-ins, unqualified")
    return parts[-1]
