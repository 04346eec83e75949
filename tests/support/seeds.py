"""The seed document's examples that several test files replay."""

from __future__ import annotations

from typing import Any

from proxy.call.auth import hash_key

# The first seed's curl body, exactly as the document shows it (inline comment included).
CUSTOMER_CURL_BODY = """ {
        "model": "azure-gpt-3.5",
        "user": "ishaan3", # \U0001f448 CUSTOMER ID
        "messages": [
            {
            "role": "user",
            "content": "what time is it"
            }
        ]
        }"""

# The model access seed's /user/new curl body, as written (comment and tabs included).
USER_NEW_ACCESS_GROUP_BODY = """{"models": ["beta-models"], # \U0001f448 Model Access Group
\t\t\t"max_budget": 0}"""

# The webhook seed's call, and the fields of the ``spend_tracked`` payload it sends.
WEBHOOK_CALL_BODY = {
    "model": "mistral",
    "messages": [{"role": "user", "content": "What's the weather like in Boston today?"}],
    "user": "krrish12",
}
# In the seed's order.
WEBHOOK_FIELDS = [
    "spend", "max_budget", "token", "customer_id", "user_id", "team_id", "user_email",
    "key_alias", "projected_exceeded_date", "projected_spend", "event", "event_group",
    "event_message",
]  # fmt: skip


def webhook_spend_tracked_payload(spend: float) -> dict[str, Any]:
    """The payload the webhook seed's call (with the master key) sends for ``spend``."""
    return {
        "spend": spend,
        "max_budget": None,
        "token": hash_key("sk-1234"),  # the master key, hashed, as the seed shows
        "customer_id": "krrish12",
        "user_id": None,
        "team_id": None,
        "user_email": None,
        "key_alias": None,
        "projected_exceeded_date": None,
        "projected_spend": None,
        "event": "spend_tracked",
        "event_group": "customer",
        "event_message": f"Customer spend tracked. Customer=krrish12, spend={spend!r}",
    }


def azure_embedding_seed_model() -> dict[str, Any]:
    """The model access seed's Azure embedding deployment, in the ``beta-models`` group;
    its base URL and key come from AZURE_API_BASE and AZURE_API_KEY."""
    return {
        "model_name": "text-embedding-ada-002",
        "litellm_params": {
            "model": "azure/azure-embedding-model",
            "api_base": "os.environ/AZURE_API_BASE",
            "api_key": "os.environ/AZURE_API_KEY",
            "api_version": "2023-07-01-preview",
        },
        "model_info": {"access_groups": ["beta-models"]},
    }
