"""Which models a key (and its user) may call.

A ``models`` list holds model names, access-group names (from
``model_info.access_groups``), wildcards on the public model name
(``openai/*``) and ``all-proxy-models``. An empty list means every model.
A key's list narrows its user's list, never widens it.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from proxy.deployments import ModelTable

ALL_MODELS = "all-proxy-models"


def _list_allows(entries: Iterable[str] | None, model: str, table: ModelTable) -> bool:
    entries = list(entries or [])
    if not entries:
        return True
    for entry in entries:
        if entry in (ALL_MODELS, "*", model):
            return True
        if model in table.groups.get(entry, ()):
            return True
        if "*" in entry and fnmatchcase(model, entry):
            return True
    return False


def model_allowed(
    model: str,
    key_models: Iterable[str] | None,
    user_models: Iterable[str] | None,
    table: ModelTable,
) -> bool:
    return _list_allows(key_models, model, table) and _list_allows(user_models, model, table)


def allowed_model_names(
    key_models: Iterable[str] | None, user_models: Iterable[str] | None, table: ModelTable
) -> list[str]:
    key_list, user_list = list(key_models or []), list(user_models or [])
    return [name for name in table.names() if model_allowed(name, key_list, user_list, table)]
