"""Cheaper app builds for the test session: the fast tier builds about a thousand
apps (one per test, ``make_app``), and most of an app's build was the same work
every time. Three caches remove it, each keyed by everything its result depends
on, so a test still gets a new app, a new database and new plugin objects, and
sees what a fresh build would have given it:

- URL rules: werkzeug compiles two URL-builder functions per rule with ``ast``
  and ``compile()`` (about 100 rules per app, over half of an app's build).
  The generated function depends only on the rule's text and parsed parts (it
  reads the rule's converters at call time, through its ``self`` argument);
  the first rule of each text compiles it, later rules reuse the function.
  Rules with defaults are compiled as before. Parsing a rule's text into its
  parts is kept the same way (each rule still gets converters of its own map).
- Entry points: ``importlib.metadata.entry_points()`` reads every installed
  distribution's metadata. Cached for as long as ``sys.path`` and the
  modification times of its folders are unchanged (a test that puts a
  distribution of its own on ``sys.path`` gets a fresh scan).
- Hook implementations: pluggy reads every attribute of every plugin
  (``inspect.getattr_static``, a few hundred per app) for its hookimpl marker.
  The marker is the attribute's own, so the options found are kept per
  attribute object (a module's entry, or the class attribute an instance
  serves); an instance's own attributes, slots and classes as plugins are read
  as before.
- The OpenAPI document's component schemas (pydantic's JSON Schemas of the
  request and answer models, by model classes; each caller gets a deep copy).
- SQLite schemas: the first app on a new SQLite file with a given set of
  migrations (core and plugins) and plugin tables runs them; the file it left
  is kept, and a later new file with the same set starts as a copy of it. The
  only value of its own time a migration writes (``proxy_spend.created_at``,
  m0001's seed row) is set to the copy's time, as the migration would have.
  The log lines and the names returned are those of the real run.

``install()`` applies them for the session (``tests/conftest.py``).
"""

from __future__ import annotations

import copy
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable
from types import MemberDescriptorType, ModuleType
from typing import Any

# --- URL rules -------------------------------------------------------------------


# The rule caches below lean on how werkzeug's Rule compiles itself (its parts,
# trace and builders); checked on this release line only. On any other, rules are
# compiled as werkzeug does it: the tests stay right and are only slower.
KNOWN_WERKZEUG = ("3.1.",)


def _cache_url_builders() -> None:
    from importlib.metadata import version

    from werkzeug.routing.rules import Rule

    if not version("werkzeug").startswith(KNOWN_WERKZEUG):
        return
    original = getattr(Rule, "_compile_builder", None)
    if original is None or getattr(original, "_cached", False):
        return  # another werkzeug: builds stay uncached, only slower
    builders: dict[tuple[Any, ...], Callable[..., Any]] = {}

    def compile_builder(self: Rule, append_unknown: bool = True) -> Callable[..., Any]:
        trace = getattr(self, "_trace", None)
        if self.defaults or trace is None:
            return original(self, append_unknown)
        key = (self.rule, tuple(trace), append_unknown)
        builder = builders.get(key)
        if builder is None:
            builder = builders[key] = original(self, append_unknown)
        return builder

    compile_builder._cached = True  # type: ignore[attr-defined]
    Rule._compile_builder = compile_builder  # type: ignore[method-assign]
    _cache_rule_parsing(Rule)


def _cache_rule_parsing(rule_class: Any) -> None:
    """``Rule.compile`` parses the rule text into parts (regex pieces and
    weights) and converters. The parts and the converters' names and arguments
    depend only on the text, the map's converter classes and its matching
    settings: the first rule of a kind is parsed, a later one gets copies of
    its parts and new converters of its own map, as parsing would make them."""
    original = rule_class.compile
    if getattr(original, "_cached", False):
        return
    parsed: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def compile(self: Any) -> None:
        map_ = self.map
        key = (
            self.rule,
            self.host,
            self.subdomain,
            self.merge_slashes,
            map_.host_matching,
            tuple(map_.converters.items()),
        )
        known = parsed.get(key)
        if known is None:
            made: list[tuple[Any, ...]] = []
            before = set(self.arguments)

            def get_converter(name: str, converter: str, args: Any, kwargs: Any) -> Any:
                made.append((name, converter, args, dict(kwargs)))
                return type(self).get_converter(self, name, converter, args, kwargs)

            self.get_converter = get_converter
            try:
                original(self)
            finally:
                del self.get_converter
            parsed[key] = (
                tuple(self._parts),
                tuple(self._trace),
                tuple(made),
                frozenset(set(self.arguments) - before),
            )
            return
        parts, trace, converters, arguments = known
        self._parts = list(parts)
        self._trace = list(trace)
        self._converters = {
            name: self.get_converter(name, converter, args, kwargs)
            for name, converter, args, kwargs in converters
        }
        self.arguments.update(arguments)
        self._build = self._compile_builder(False).__get__(self, None)
        self._build_unknown = self._compile_builder(True).__get__(self, None)

    compile._cached = True  # type: ignore[attr-defined]
    rule_class.compile = compile


# --- entry points ----------------------------------------------------------------


def _path_state() -> tuple[Any, ...]:
    state: list[Any] = []
    for entry in sys.path:
        try:
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            state.append((entry, None))
    return tuple(state)


def _cache_entry_points() -> None:
    import proxy.plugins

    scan = proxy.plugins.entry_points
    if getattr(scan, "_cached", False):
        return
    found: dict[tuple[Any, ...], Any] = {}

    def entry_points(**params: Any) -> Any:
        key = (tuple(sorted(params.items())), _path_state())
        if key not in found:
            found.clear()  # only the current state is ever asked again
            found[key] = scan(**params)
        return found[key]

    entry_points._cached = True  # type: ignore[attr-defined]
    proxy.plugins.entry_points = entry_points  # type: ignore[assignment]


# --- hook implementations --------------------------------------------------------

_ABSENT = object()


def _static_value(plugin: Any, name: str) -> tuple[str, Any]:
    """What ``inspect.getattr_static(plugin, name)`` finds, when that is one plain
    dictionary entry: a module's own (not a dunder, which ModuleType may serve
    itself), or an instance's class attribute (never the instance's own, nor a
    slot). ``("", _ABSENT)`` otherwise."""
    if isinstance(plugin, ModuleType):
        if name.startswith("__"):
            return "", _ABSENT
        return "module", vars(plugin).get(name, _ABSENT)
    if isinstance(plugin, type):
        return "", _ABSENT
    try:
        own = object.__getattribute__(plugin, "__dict__")
    except AttributeError:
        own = {}
    if name in own:
        return "", _ABSENT
    for klass in type(plugin).__mro__:
        if name in klass.__dict__:
            value = klass.__dict__[name]
            if isinstance(value, MemberDescriptorType):
                return "", _ABSENT  # a slot: its value is the instance's
            return "instance", value
    return "", _ABSENT


def _cache_hookimpl_lookups() -> None:
    import pluggy

    original = pluggy.PluginManager.parse_hookimpl_opts
    if getattr(original, "_cached", False):
        return
    found: dict[tuple[Any, ...], tuple[Any, Any]] = {}

    def parse_hookimpl_opts(self: pluggy.PluginManager, plugin: Any, name: str) -> Any:
        kind, value = _static_value(plugin, name)
        if value is _ABSENT:
            return original(self, plugin, name)
        key = (self.project_name, kind, name, id(value))
        hit = found.get(key)
        if hit is None or hit[0] is not value:
            # The options come from the attribute alone (its marker); the value is
            # kept with them so that its id cannot be reused by another object.
            hit = found[key] = (value, original(self, plugin, name))
        return hit[1]

    parse_hookimpl_opts._cached = True  # type: ignore[attr-defined]
    pluggy.PluginManager.parse_hookimpl_opts = parse_hookimpl_opts  # type: ignore[method-assign]


# --- the OpenAPI document's schemas ------------------------------------------------


def _cache_component_schemas() -> None:
    """``/openapi.json`` is built once per app; most of a build (~55 of ~80 ms) is
    pydantic's JSON Schemas of the request and answer models, which depend on
    the model classes alone. Each call gets its own deep copy."""
    import proxy.api.openapi.document as document

    generate = document.models_json_schema
    if getattr(generate, "_cached", False):
        return
    made: dict[tuple[Any, ...], Any] = {}

    def models_json_schema(models: Any, **options: Any) -> Any:
        pairs = tuple(models)
        try:
            key = (pairs, tuple(sorted(options.items())))
            hash(key)
        except TypeError:
            return generate(pairs, **options)
        if key not in made:
            made[key] = generate(pairs, **options)
        return copy.deepcopy(made[key])

    models_json_schema._cached = True  # type: ignore[attr-defined]
    document.models_json_schema = models_json_schema  # type: ignore[assignment]


# --- SQLite schemas --------------------------------------------------------------

_migrate_log = logging.getLogger("comptroller.migrate")


def _sqlite_file() -> str | None:
    """The file of the current database, when it is a SQLite file."""
    from peewee import SqliteDatabase

    from proxy.storage.db import database

    db = database.obj
    if not isinstance(db, SqliteDatabase):
        return None
    path = str(db.database)
    if path in ("", ":memory:") or path.startswith("file:"):
        return None
    return path


def _schema_key(tables: list[Any], declared: list[Any]) -> tuple[Any, ...] | None:
    import migrations
    from proxy.storage.migrate import migration_names, plugin_packages

    try:
        sources = [("", migrations), *plugin_packages(declared)]
    except Exception:
        return None  # the real run raises it
    return (
        tuple((ns, pkg.__name__, tuple(migration_names(pkg))) for ns, pkg in sources),
        tuple(tables),  # the classes themselves: a model defined anew is another key
    )


def _cache_sqlite_schemas() -> None:
    import proxy.storage.schema_gate as gate

    migrate = gate.migrate
    if getattr(migrate, "_cached", False):
        return
    templates: dict[tuple[Any, ...], tuple[bytes, list[str]]] = {}

    def cached_migrate(
        plugin_tables: Iterable[Any] = (), plugin_migrations: Iterable[Any] = ()
    ) -> list[str]:
        tables, declared = list(plugin_tables), list(plugin_migrations)
        path = _sqlite_file()
        new_file = path is not None and not os.path.exists(path)
        key = _schema_key(tables, declared) if new_file else None
        if key is None or path is None:
            return migrate(tables, declared)
        template = templates.get(key)
        if template is None:
            applied = migrate(tables, declared)
            # The file as the migrations left it; a WAL still beside it (a connection
            # left open) would make the copy incomplete: no template then.
            if not os.path.exists(path + "-wal"):
                with open(path, "rb") as made:
                    templates[key] = (made.read(), list(applied))
            return applied
        content, applied = template
        with open(path, "xb") as copy:
            copy.write(content)
        connection = sqlite3.connect(path)
        try:
            with connection:
                connection.execute("UPDATE proxy_spend SET created_at = ?", (time.time(),))
        finally:
            connection.close()
        for name in applied:
            _migrate_log.info("migration %s applied", name)
        return list(applied)

    cached_migrate._cached = True  # type: ignore[attr-defined]
    gate.migrate = cached_migrate  # type: ignore[assignment]


def install() -> None:
    _cache_url_builders()
    _cache_entry_points()
    _cache_hookimpl_lookups()
    _cache_component_schemas()
    _cache_sqlite_schemas()
