"""Which models a key (and its user) may call.

A ``models`` list holds model names, access-group names (from
``model_info.access_groups``), wildcards on the public model name
(``openai/*``) and ``all-proxy-models``. An empty list means every model.
A key's list narrows its user's list, never widens it: a model must pass
both lists.

Groups are resolved against the model table at call time, not stored on the
key or user, so a model added to a group in the config is usable by every
member of the group after the next restart.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from proxy.upstream.deployments import ModelTable

ALL_MODELS = "all-proxy-models"

ModelList = Iterable[str] | str | None


def _entries(models: ModelList) -> list[str] | None:
    """The list's usable entries, or ``None`` when the list allows every model.

    A stored list that is not empty but holds nothing usable (hand-edited
    rows, non-strings) allows nothing: access fails closed.
    """
    if models is None:
        return None
    if isinstance(models, str):
        models = [models]
    raw = list(models)
    if not raw:
        return None
    return [entry for entry in raw if isinstance(entry, str) and entry]


@functools.lru_cache(maxsize=1024)
def _wildcard(pattern: str) -> re.Pattern[str]:
    """``*`` matches any run of characters; everything else is literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def _entry_allows(entry: str, model: str, table: ModelTable) -> bool:
    if entry == ALL_MODELS or entry == model:
        return True
    if model in table.models_in_group(entry):
        return True
    return "*" in entry and _wildcard(entry).fullmatch(model) is not None


def list_allows(models: ModelList, model: str, table: ModelTable) -> bool:
    entries = _entries(models)
    if entries is None:
        return True
    return any(_entry_allows(entry, model, table) for entry in entries)


def model_allowed(
    model: str, key_models: ModelList, user_models: ModelList, table: ModelTable
) -> bool:
    return list_allows(key_models, model, table) and list_allows(user_models, model, table)


def refusing_list(
    model: str, key_models: ModelList, user_models: ModelList, table: ModelTable
) -> list[str] | None:
    """The list that refuses ``model`` (the key's first), or ``None`` if it is allowed.

    Error messages show this list, so a caller sees why the model is refused
    rather than a list that would allow it.
    """
    for models in (key_models, user_models):
        if not list_allows(models, model, table):
            return _entries(models) or []
    return None


def allowed_model_names(
    key_models: ModelList, user_models: ModelList, table: ModelTable
) -> list[str]:
    """The public model names both lists allow, in config order."""
    return [name for name in table.names() if model_allowed(name, key_models, user_models, table)]
