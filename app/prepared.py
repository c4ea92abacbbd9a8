"""Record: the hot path's statements, compiled once per dialect and run on the DB-API cursor.

SQLAlchemy spends about 0.15 ms around each execution on these machines, several times what
SQLite itself takes for a primary-key insert; a message needs about twenty statements. The
statements stay SQLAlchemy constructs (one schema, both dialects, the same type conversions);
only their execution skips the per-call machinery. They run inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

from app.models import UTCDateTime

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Form:
    sql: str
    names: tuple[str, ...]  # placeholders in order, as the compiled SQL names them
    keys: tuple[str, ...]  # the parameter each placeholder takes
    fixed: dict[str, Any]  # values written into the statement itself (LIMIT 1), and defaults
    generated: dict[str, Callable[[Any], Any]]  # column defaults computed per execution
    results: tuple[Processor, ...]
    positional: bool
    integrity_error: type[Exception]
    converted: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, processor): few
    convert_results: bool


class Prepared:
    """One statement; `rows`, `first`, `scalar` and `run` execute it on a Connection."""

    def __init__(self, statement: sa.Executable, *, keys: Sequence[str] = ()) -> None:
        self.statement = statement
        self.keys = tuple(keys)  # for INSERT ... VALUES: the columns given
        self._forms: dict[str, _Form] = {}

    def rows(self, conn: sa.Connection, params: Mapping[str, Any] | None = None) -> list[Any]:
        form = self._form(conn.dialect)
        cursor = self._execute(conn, form, params or {})
        rows: list[Any] = cursor.fetchall()
        if rows and form.convert_results:
            return [
                tuple(p(v) if p else v for p, v in zip(form.results, row, strict=True))
                for row in rows
            ]
        return rows

    def first(self, conn: sa.Connection, params: Mapping[str, Any] | None = None) -> Any:
        rows = self.rows(conn, params)
        return rows[0] if rows else None

    def scalar(self, conn: sa.Connection, params: Mapping[str, Any] | None = None) -> Any:
        row = self.first(conn, params)
        return row[0] if row is not None else None

    def run(self, conn: sa.Connection, params: Mapping[str, Any]) -> None:
        """Execute a statement that returns nothing."""
        self._execute(conn, self._form(conn.dialect), params)

    def run_many(self, conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute a statement that returns nothing once per row, in one driver call."""
        if not rows:
            return
        form = self._form(conn.dialect)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(form.sql, [self._arguments(form, params) for params in rows])
        except form.integrity_error as error:
            raise sa.exc.IntegrityError(form.sql, None, error) from error

    def _execute(self, conn: sa.Connection, form: _Form, params: Mapping[str, Any]) -> Any:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(form.sql, self._arguments(form, params))
        except form.integrity_error as error:
            # Callers handle a lost race the same way whichever way the statement ran.
            raise sa.exc.IntegrityError(form.sql, None, error) from error
        return cursor

    @staticmethod
    def _arguments(form: _Form, params: Mapping[str, Any]) -> Any:
        if form.fixed or form.generated:
            made = {key: make(None) for key, make in form.generated.items() if key not in params}
            params = form.fixed | made | dict(params)
        values = [params[k] for k in form.keys]
        for position, process in form.converted:
            values[position] = process(values[position])
        return values if form.positional else dict(zip(form.names, values, strict=True))

    def _form(self, dialect: Dialect) -> _Form:
        form = self._forms.get(dialect.name)
        if form is None:
            form = self._forms[dialect.name] = self._compile(dialect)
        return form

    def _compile(self, dialect: Dialect) -> _Form:
        assert isinstance(self.statement, sa.ClauseElement)
        compiled = self.statement.compile(dialect=dialect, column_keys=list(self.keys) or None)
        assert isinstance(compiled, SQLCompiler)
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(by_name)
        binds = [by_name[name] for name in names]
        columns = getattr(self.statement, "exported_columns", ())
        # A value given in the statement itself (LIMIT 1); not the REQUIRED marker of an
        # INSERT column left to the caller.
        fixed = {b.key: b.effective_value for b in binds if b.value is not None and not b.required}
        generated: dict[str, Callable[[Any], Any]] = {}
        # Columns left out of an INSERT get their Python-side defaults, as SQLAlchemy would.
        for column in [*compiled.insert_prefetch, *compiled.update_prefetch]:
            default = column.default if compiled.isinsert else column.onupdate
            if default is None or (not default.is_scalar and not default.is_callable):
                continue
            if default.is_callable:
                generated[column.key] = default.arg  # type: ignore[attr-defined]
            else:
                fixed[column.key] = default.arg  # type: ignore[attr-defined]
        processors = tuple(_bind_processor(b, dialect) for b in binds)
        results = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        )
        return _Form(
            sql=compiled.string,
            names=names,
            keys=tuple(bind.key for bind in binds),
            fixed=fixed,
            generated=generated,
            results=results,
            positional=compiled.positional,
            integrity_error=dialect.loaded_dbapi.IntegrityError,
            converted=tuple((i, p) for i, p in enumerate(processors) if p is not None),
            convert_results=any(results),
        )


def _bind_processor(bind: sa.BindParameter[Any], dialect: Dialect) -> Processor:
    process: Processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
    if process is None or not isinstance(bind.type, UTCDateTime):
        return process
    return _timestamps(dialect.name, process)


_TIMESTAMPS: dict[str, Callable[[Any], Any]] = {}


def _timestamps(dialect: str, process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A timestamp's conversion, remembered: to UTC and then (SQLite) to text costs 2.6 us,
    and a message binds about ten timestamps, most of them the same instant (its `now`, its
    Date). Shared by every UTCDateTime column of the dialect, as their conversion is one and
    the same; equal instants convert alike, whatever their offset. At most 256 remembered,
    in memory only."""
    remembered = _TIMESTAMPS.get(dialect)
    if remembered is not None:
        return remembered
    memory: dict[Any, Any] = {}

    def convert(value: Any) -> Any:
        found = memory.get(value, memory)
        if found is memory:  # not remembered (a naive datetime raises here, every time)
            found = process(value)
            if len(memory) >= 256:
                memory.clear()
            memory[value] = found
        return found

    remembered = _TIMESTAMPS[dialect] = convert
    return remembered


class PreparedIn:
    """A statement with one `IN (...)` list, prepared once for each list length up to CHUNK;
    longer lists run in chunks. `build` gets the list's bound parameters."""

    CHUNK = 32

    def __init__(self, build: Callable[[list[sa.BindParameter[Any]]], sa.Executable]) -> None:
        self.build = build
        self._by_length: dict[int, Prepared] = {}

    def rows(
        self,
        conn: sa.Connection,
        values: Sequence[Any],
        params: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        found: list[Any] = []
        for start in range(0, len(values), self.CHUNK):
            chunk = values[start : start + self.CHUNK]
            prepared = self._by_length.get(len(chunk))
            if prepared is None:
                binds: list[sa.BindParameter[Any]] = [
                    sa.bindparam(f"in_{i}") for i in range(len(chunk))
                ]
                prepared = self._by_length[len(chunk)] = Prepared(self.build(binds))
            arguments = dict(params or {}) | {f"in_{i}": v for i, v in enumerate(chunk)}
            found.extend(prepared.rows(conn, arguments))
        return found
