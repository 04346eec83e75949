"""What the routes answer, as pydantic models, for the OpenAPI document only.

The answers themselves are built by :mod:`proxy.api.admin.serializers` (admin), the
views and the upstream (LLM); these models describe them field by field so
that ``/openapi.json`` states each success shape and the one error shape.
schemathesis checks every answer of a live proxy against them (a missing or
retyped field fails it). Extra fields are allowed here, so that a client may
rely only on what the document names; that a field added to an admin
serializer without its line here fails CI is the job of
``tests/admin_api/test_answers_documented.py``, which walks every admin
answer against these models.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel


class Shape(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- the error shape ---------------------------------------------------------


class ErrorBody(Shape):
    message: str
    type: str = Field(description="auth_error, invalid_request_error, rate_limit_error, ...")
    param: str = Field(description='The field at fault, or the string "None".')
    code: str = Field(description="The HTTP status as a string.")


class ErrorResponse(Shape):
    """Every failure, from any route: OpenAI's error object."""

    error: ErrorBody


class AnthropicErrorBody(Shape):
    type: str = Field(description="authentication_error, invalid_request_error, ...")
    message: str


class AnthropicErrorResponse(Shape):
    """Every failure on ``/v1/messages``: Anthropic's error object (same messages)."""

    type: str = Field(description='Always "error".')
    error: AnthropicErrorBody


# --- keys --------------------------------------------------------------------


class KeyInfo(Shape):
    """A virtual key without its secret: ``token`` is the SHA-256 of the key."""

    key_name: str
    token: str
    expires: str | None
    user_id: str | None
    team_id: str | None
    key_alias: str | None
    models: list[str]
    max_budget: float | None
    soft_budget: float | None
    spend: float
    budget_duration: str | None
    budget_reset_at: str | None
    max_parallel_requests: int | None
    tpm_limit: int | None
    rpm_limit: int | None
    metadata: dict[str, Any]
    created_at: str | None
    blocked: bool


class GeneratedKey(KeyInfo):
    key: str = Field(description="The plain key, shown only by the call that makes it.")


class UpdatedKey(KeyInfo):
    key: str = Field(description="The key's token (SHA-256), never its secret.")


class KeyInfoResponse(Shape):
    key: str = Field(description="The key's token (SHA-256).")
    info: KeyInfo


class KeyDeleteResponse(Shape):
    deleted_keys: list[str]


class KeyListResponse(Shape):
    keys: list[str | KeyInfo] = Field(
        description="Tokens, or whole key objects with return_full_object=true."
    )
    total_count: int
    current_page: int
    total_pages: int


# --- internal users ----------------------------------------------------------


class UserInfo(Shape):
    user_id: str
    user_email: str | None
    team_id: str | None
    models: list[str]
    max_budget: float | None
    spend: float
    budget_duration: str | None
    budget_reset_at: str | None
    max_parallel_requests: int | None
    tpm_limit: int | None
    rpm_limit: int | None
    metadata: dict[str, Any]
    created_at: str | None
    blocked: bool = Field(description="Every call with one of the user's keys is refused.")


class NewUser(UserInfo):
    key: str = Field(description="The user's first key, shown only here.")
    expires: str | None
    key_name: str
    token: str


class TeamMemberRow(Shape):
    user_id: str
    user_email: str | None
    role: str = Field(description='"admin" or "user"')


class TeamInfo(Shape):
    team_id: str
    team_alias: str | None
    admins: list[str | None]
    members: list[str | None]
    members_with_roles: list[TeamMemberRow]
    metadata: dict[str, Any]
    models: list[str]
    max_budget: float | None
    spend: float
    budget_duration: str | None
    budget_reset_at: str | None
    max_parallel_requests: int | None
    tpm_limit: int | None
    rpm_limit: int | None
    blocked: bool
    created_at: str | None
    updated_at: str | None = Field(description="null for a team only a key's team_id made")


class TeamInfoResponse(Shape):
    team_id: str
    team_info: TeamInfo
    keys: list[KeyInfo]
    team_memberships: list[dict[str, Any]]


class TeamUpdateResponse(Shape):
    team_id: str
    data: TeamInfo


class TeamDeleteResponse(Shape):
    deleted_teams: list[str]
    deleted_keys: list[str] = Field(description="The tokens of the deleted teams' keys.")


class TeamList(RootModel[list[TeamInfo]]):
    pass


class TeamMemberAddResponse(TeamInfo):
    updated_users: list[UserInfo]
    updated_team_memberships: list[dict[str, Any]]


class UserInfoResponse(Shape):
    user_id: str
    user_info: UserInfo
    keys: list[KeyInfo]
    teams: list[TeamInfo] = Field(description="The user's team and its keys' teams.")


class UserDeleteResponse(Shape):
    deleted_users: list[str]
    deleted_keys: list[str]


class UserListResponse(Shape):
    users: list[UserInfo]
    total: int
    page: int
    page_size: int
    total_pages: int


# --- budgets and customers -----------------------------------------------------


class BudgetRow(Shape):
    budget_id: str
    max_budget: float | None
    soft_budget: float | None
    max_parallel_requests: int | None
    tpm_limit: int | None
    rpm_limit: int | None
    budget_duration: str | None
    created_at: str | None
    updated_at: str | None


class BudgetList(RootModel[list[BudgetRow]]):
    pass


class CustomerInfo(Shape):
    user_id: str
    blocked: bool
    alias: str | None
    spend: float
    allowed_model_region: str | None
    default_model: str | None
    litellm_budget_table: BudgetRow | None


class CustomerList(RootModel[list[CustomerInfo]]):
    pass


class CustomerDeleteResponse(Shape):
    deleted_customers: list[str]


class CustomerBlockResponse(Shape):
    blocked_users: list[str]


class CustomerUnblockResponse(Shape):
    unblocked_users: list[str]


# --- spend ---------------------------------------------------------------------


class SpendLogRow(Shape):
    request_id: str
    call_type: str
    api_key: str | None
    user: str | None
    team_id: str | None
    end_user: str | None
    model: str
    model_group: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    spend: float
    startTime: str | None
    endTime: str | None
    status: str


class SpendLogList(RootModel[list[SpendLogRow]]):
    pass


class GlobalSpend(Shape):
    spend: float
    max_budget: float | None


class DaySpend(Shape):
    date: str
    spend: float
    requests: int


class DailySpend(Shape):
    days: list[DaySpend]
    total_spend: float
    total_requests: int


class CustomerSpend(Shape):
    end_user: str | None
    spend: float
    requests: int


class TopCustomers(RootModel[list[CustomerSpend]]):
    pass


class KeySpend(Shape):
    token: str
    is_master_key: bool = Field(description="The master key's calls (it has no key row).")
    key_name: str | None
    key_alias: str | None
    user_id: str | None
    spend: float
    requests: int


class TopKeys(RootModel[list[KeySpend]]):
    pass


class ModelSpend(Shape):
    model: str
    spend: float
    total_tokens: int
    requests: int


class ReportGroup(Shape):
    """One group of a day: its id field is named after ``group_by`` (``team_name``,
    ``customer``, ``api_key``, ``user`` or ``model``), null for rows without one."""

    team_name: str | None = Field(default=None, description="group_by=team")
    customer: str | None = Field(default=None, description="group_by=customer")
    api_key: str | None = Field(default=None, description="group_by=api_key (the key's hash)")
    user: str | None = Field(default=None, description="group_by=user")
    model: str | None = Field(default=None, description="group_by=model")
    total_spend: float
    total_tokens: int
    requests: int
    metadata: list[ModelSpend] = Field(description="The group's spend per model.")


class ReportDay(Shape):
    """One UTC day; its groups are under ``teams``, ``customers``, ``api_keys``,
    ``users`` or ``models`` (after ``group_by``)."""

    group_by_day: str
    teams: list[ReportGroup] | None = None
    customers: list[ReportGroup] | None = None
    api_keys: list[ReportGroup] | None = None
    users: list[ReportGroup] | None = None
    models: list[ReportGroup] | None = None


class SpendReport(RootModel[list[ReportDay]]):
    pass


class SpendLogCsv(Shape):
    """Never JSON: the answer is ``text/csv``."""


class UnpricedModelCount(Shape):
    """Calls charged 0 because the model has no price, over every worker and host."""

    model: str = Field(description="The model_name (model group) the calls named.")
    upstream_model: str
    calls: int
    tokens: int = Field(description="Prompt + completion tokens of those calls.")
    first_seen: str | None = Field(description="None for a model not called yet.")
    last_seen: str | None


class CostOverruns(Shape):
    """Calls an upstream billed more than their worst case, over every worker and host."""

    calls: int
    usd: float = Field(description="US dollars billed beyond those calls' worst cases.")


class Metrics(Shape):
    """``/metrics`` with ``Accept: application/json``; otherwise the same numbers come in
    the Prometheus text format."""

    unpriced_models: list[UnpricedModelCount]
    cost_overruns: CostOverruns
    proxy_spend: float = Field(description="The proxy-wide spend counter, in US dollars.")


# --- models and health ---------------------------------------------------------


class DeploymentParams(Shape):
    model: str
    api_base: str | None
    api_version: str | None
    timeout: float | None
    rpm: int | None = None
    tpm: int | None = None
    weight: float | None = None


class DeploymentHealth(Shape):
    """As every worker and host sees it (shared): ``cooldown`` until when, if so."""

    status: str
    cooldown_until: float | None
    fails_this_minute: int
    last_error: str | None = None


class PriceTier(Shape):
    """Prices for every token of a call whose prompt is above ``above_input_tokens``."""

    above_input_tokens: int
    input_cost_per_token: float
    output_cost_per_token: float
    cache_read_input_token_cost: float | None
    cache_creation_input_token_cost: float | None


class DeploymentInfo(Shape):
    """The prices in use (USD per token; a null part costs the input or output price)
    and where they came from (``price_source``: the bundled price data set and its
    version, ``litellm_params``, or ``unpriced``)."""

    id: str
    provider: str
    endpoint: str | None
    health: DeploymentHealth
    access_groups: list[str]
    mode: str | None
    priced_as: str | None
    input_cost_per_token: float | None
    output_cost_per_token: float | None
    cache_read_input_token_cost: float | None
    cache_creation_input_token_cost: float | None
    input_cost_per_audio_token: float | None
    output_cost_per_audio_token: float | None
    price_tiers: list[PriceTier]
    max_output_tokens: int | None
    context_window: int | None
    priced: bool
    price_source: str


class ModelDeployment(Shape):
    """A configured model, without its upstream api_key (never shown)."""

    model_name: str
    litellm_params: DeploymentParams
    model_info: DeploymentInfo


class ModelInfoResponse(Shape):
    data: list[ModelDeployment]


class CheckedEndpoint(Shape):
    model: str
    model_name: str
    model_id: str
    api_base: str | None
    error: str | None = None


class DeploymentsHealth(Shape):
    healthy_endpoints: list[CheckedEndpoint]
    unhealthy_endpoints: list[CheckedEndpoint]
    healthy_count: int
    unhealthy_count: int


class Liveliness(Shape):
    status: str


class Readiness(Shape):
    status: str
    db: str


# --- the OpenAI-compatible routes ----------------------------------------------


class Model(Shape):
    id: str
    object: str
    created: int
    owned_by: str


class ModelList(Shape):
    object: str
    data: list[Model]


class Usage(Shape):
    prompt_tokens: int
    completion_tokens: int | None = None
    total_tokens: int


class ChatChoice(Shape):
    index: int
    message: dict[str, Any]
    finish_reason: str | None


class ChatCompletion(Shape):
    """The upstream's answer, passed through unchanged."""

    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class TextChoice(Shape):
    text: str
    index: int
    finish_reason: str | None = None


class TextCompletion(Shape):
    """``text_completion``: the upstream's answer, passed through unchanged."""

    id: str
    object: str
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage | None = None


class ResponseUsage(Shape):
    input_tokens: int
    output_tokens: int
    total_tokens: int | None = None
    input_tokens_details: dict[str, Any] | None = None
    output_tokens_details: dict[str, Any] | None = None


class ResponseObject(Shape):
    """A Responses API ``response``: the upstream's answer, passed through unchanged."""

    id: str
    object: str
    created_at: float
    status: str | None = None
    model: str
    output: list[dict[str, Any]]
    usage: ResponseUsage | None = None


class ItemList(Shape):
    object: str
    data: list[dict[str, Any]]
    has_more: bool | None = None


class ResponseDeleted(Shape):
    id: str
    object: str
    deleted: bool


class AnthropicUsage(Shape):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class AnthropicMessage(Shape):
    """An Anthropic ``message``: the upstream's answer, passed through unchanged."""

    id: str
    type: str
    role: str
    model: str
    content: list[dict[str, Any]]
    stop_reason: str | None = None
    usage: AnthropicUsage


class TokenCount(Shape):
    input_tokens: int


class Embedding(Shape):
    object: str
    index: int
    embedding: list[float] | str


class EmbeddingList(Shape):
    """The upstream's answer, passed through unchanged."""

    object: str
    data: list[Embedding]
    model: str
    usage: Usage | None = None
