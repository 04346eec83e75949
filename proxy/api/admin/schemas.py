"""Request bodies and query strings of the admin API, as pydantic v2 models.

Every model ignores unknown fields (LiteLLM clients send many) and only its
declared fields are ever stored. Types are strict where a wrong type would
silently change meaning (``1`` as a model name, ``"true"`` as a flag). One
rule for every number: a JSON number or a string holding one (``4``,
``"4"``, ``"4.5"``), as the seeds send money both ways and the config file
reads numbers; never a boolean; counts (``rpm_limit``, ``tpm_limit``,
``max_parallel_requests``) must be whole (``4.0`` and ``"4"`` are 4, ``4.5``
is refused). Bounds mirror the database columns, so a valid request can
never fail on insert (a too-long string or an int32 overflow would be a 500
otherwise).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    StringConstraints,
    ValidationError,
    model_validator,
)

from proxy.durations import DurationError, parse_duration
from proxy.errors import BadRequest

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it here rather than fail on insert.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


_NUMBER_TYPES = 'must be a number or a numeric string such as "4.5"'


def _number(value: Any) -> float | int | None:
    """A finite number from a JSON number or a numeric string (the one rule for numbers)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(_NUMBER_TYPES)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)  # exact, however large
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _money(value: Any) -> float | None:
    """A non-negative amount of US dollars."""
    amount = _number(value)
    if amount is None:
        return None
    if amount < 0:
        raise ValueError("must not be negative")
    return float(amount)


def _count(value: Any) -> int | None:
    """A whole number (a limit or a count of requests); bounds are the field's."""
    number = _number(value)
    if number is None or isinstance(number, int):
        return number
    if not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(number)


def _custom_key(value: str) -> str:
    """A key value chosen by the caller (keys carried over from another proxy)."""
    if not value.startswith("sk-"):
        raise ValueError("must start with 'sk-'")
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError("must be printable ASCII without spaces")
    return value


def _duration(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parse_duration(value)
    except DurationError as err:
        raise ValueError(str(err)) from None
    return value.strip()


def _utc_representable(value: datetime) -> datetime:
    # Answers show times in UTC: 9999-12-31T23:00-05:00 is past the last one there.
    try:
        (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("must be before the year 10000 in UTC") from None
    return value


Id = Annotated[
    StrictStr,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    AfterValidator(_no_nul),
]
Text = Annotated[StrictStr, StringConstraints(max_length=255), AfterValidator(_no_nul)]
Money = Annotated[float | None, BeforeValidator(_money)]
# The bounds apply to a number only: ``null`` (no limit, or "clear it" in an update) passes.
Limit = Annotated[Annotated[int, Field(ge=0, le=INT64_MAX)] | None, BeforeValidator(_count)]
Parallel = Annotated[Annotated[int, Field(ge=0, le=INT32_MAX)] | None, BeforeValidator(_count)]
Duration = Annotated[StrictStr | None, Field(max_length=32), AfterValidator(_duration)]
ModelList = list[Annotated[StrictStr, StringConstraints(min_length=1, max_length=255)]]
Metadata = dict[str, Any]
IdList = Annotated[list[Id], Field(min_length=1)]


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    def given(self, *exclude: str) -> dict[str, Any]:
        """The fields the client actually sent (``null`` included), minus ``exclude``."""
        return {name: getattr(self, name) for name in self.model_fields_set if name not in exclude}


class BudgetFields(Request):
    """The budget and limit fields shared by keys, users, customers and budget rows."""

    max_budget: Money = None
    soft_budget: Money = None
    max_parallel_requests: Parallel = None
    tpm_limit: Limit = None
    rpm_limit: Limit = None
    budget_duration: Duration = None


BUDGET_FIELDS = tuple(BudgetFields.model_fields)


# --- keys ------------------------------------------------------------------


class KeyFields(BudgetFields):
    models: ModelList | None = None
    user_id: Id | None = None
    team_id: Id | None = None
    key_alias: Text | None = None
    duration: Duration = None
    expires: Annotated[datetime, AfterValidator(_utc_representable)] | None = None
    metadata: Metadata | None = None


# A chosen key is a password: long enough not to be guessed, and its display
# name (``sk-...`` and its last 4 characters) never shows most of it.
CUSTOM_KEY_MIN_LENGTH = 16
CustomKey = Annotated[
    StrictStr,
    StringConstraints(min_length=CUSTOM_KEY_MIN_LENGTH, max_length=255),
    AfterValidator(_custom_key),
]


class KeyGenerate(KeyFields):
    # The key's own value (default: a random one), e.g. to carry keys over unchanged.
    key: CustomKey | None = None


class KeyUpdate(KeyFields):
    key: Id
    blocked: StrictBool | None = None


class KeyRef(Request):
    """One key by its plain value or its hash (``/key/block``, ``/key/unblock``)."""

    key: Id


class KeyRegenerate(KeyRef):
    # The new secret's own value (default: a random one), as /key/generate's ``key``.
    new_key: CustomKey | None = None


class KeyDelete(Request):
    """Keys by value or hash, and/or every key with one of ``key_aliases``."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"anyOf": [{"required": ["keys"]}, {"required": ["key_aliases"]}]},
    )

    keys: IdList | None = None
    key_aliases: Annotated[list[Text], Field(min_length=1)] | None = None


class HealthQuery(Request):
    """``GET /health?model=``: the deployments of one model only."""

    model: Id | None = None


class KeyInfoQuery(Request):
    key: Id | None = None


class Listing(Request):
    """Search and sort of a list route (see :mod:`proxy.api.admin.listing`)."""

    search: Annotated[StrictStr, StringConstraints(max_length=255)] | None = None
    sort: Annotated[StrictStr, StringConstraints(max_length=64)] | None = None
    order: Literal["asc", "desc"] = "asc"


class PageQuery(Request):
    page: int = Field(default=1, ge=1, le=INT32_MAX)
    size: int = Field(default=10, ge=1, le=1000)


class KeyListQuery(PageQuery, Listing):
    user_id: Id | None = None
    team_id: Id | None = None
    return_full_object: bool = False


# --- internal users --------------------------------------------------------


class UserFields(Request):
    user_email: Text | None = None
    models: ModelList | None = None
    team_id: Id | None = None
    max_budget: Money = None
    budget_duration: Duration = None
    max_parallel_requests: Parallel = None
    tpm_limit: Limit = None
    rpm_limit: Limit = None
    metadata: Metadata | None = None
    blocked: StrictBool | None = None


class UserNew(UserFields):
    user_id: Id | None = None
    # For the user's first key.
    key_alias: Text | None = None
    duration: Duration = None


class UserUpdate(UserFields):
    user_id: Id


class UserIds(Request):
    user_ids: IdList


class UserInfoQuery(Request):
    user_id: Id


class UserListQuery(Listing):
    page: int = Field(default=1, ge=1, le=INT32_MAX)
    page_size: int = Field(default=25, ge=1, le=1000)
    team_id: Id | None = None


# --- teams -----------------------------------------------------------------


class TeamMember(Request):
    """A member as LiteLLM's ``members_with_roles`` holds it: by user id and/or email."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"anyOf": [{"required": ["user_id"]}, {"required": ["user_email"]}]},
    )

    role: Literal["admin", "user"] = "user"
    user_id: Id | None = None
    user_email: Text | None = None

    @model_validator(mode="after")
    def _named(self) -> TeamMember:
        if self.user_id is None and not self.user_email:
            raise ValueError("a member needs a 'user_id' or a 'user_email'")
        return self


class TeamFields(Request):
    team_alias: Text | None = None
    models: ModelList | None = None
    max_budget: Money = None
    budget_duration: Duration = None
    max_parallel_requests: Parallel = None
    tpm_limit: Limit = None
    rpm_limit: Limit = None
    metadata: Metadata | None = None


class TeamNew(TeamFields):
    team_id: Id | None = None
    members_with_roles: list[TeamMember] | None = None
    blocked: StrictBool = False


class TeamUpdate(TeamFields):
    team_id: Id
    blocked: StrictBool | None = None


class TeamRef(Request):
    team_id: Id


class TeamIds(Request):
    team_ids: IdList


class TeamListQuery(Listing):
    user_id: Id | None = None
    page: int = Field(default=1, ge=1, le=INT32_MAX)
    page_size: int = Field(default=1000, ge=1, le=1000)


class TeamMemberAdd(Request):
    team_id: Id
    member: Annotated[list[TeamMember], Field(min_length=1)] | TeamMember


class TeamMemberDelete(Request):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"anyOf": [{"required": ["user_id"]}, {"required": ["user_email"]}]},
    )

    team_id: Id
    user_id: Id | None = None
    user_email: Text | None = None


# --- customers (end users) -------------------------------------------------


class CustomerFields(BudgetFields):
    alias: Text | None = None
    budget_id: Id | None = None
    allowed_model_region: Literal["eu", "us"] | None = None
    default_model: Text | None = None


class CustomerNew(CustomerFields):
    user_id: Id
    blocked: StrictBool = False


class CustomerUpdate(CustomerFields):
    user_id: Id
    blocked: StrictBool | None = None


class CustomerListQuery(Listing):
    """Without ``page_size`` every customer (LiteLLM's answer); with it, one page,
    and the number of matching customers in the ``x-total-count`` header."""

    page: int = Field(default=1, ge=1, le=INT32_MAX)
    page_size: int | None = Field(default=None, ge=1, le=1000)


class CustomerInfoQuery(Request):
    end_user_id: Id


# --- budgets ---------------------------------------------------------------


class BudgetNew(BudgetFields):
    budget_id: Id | None = None


class BudgetUpdate(BudgetFields):
    budget_id: Id


class BudgetInfo(Request):
    budgets: IdList


class BudgetDelete(Request):
    id: Id


# --- spend logs ------------------------------------------------------------

# A query string turns an unencoded "+02:00" into " 02:00"; put the sign back.
_LOST_PLUS = re.compile(r" (\d\d:?\d\d)$")


def parse_moment(text: str) -> tuple[datetime, bool]:
    """``YYYY-MM-DD`` (a whole UTC day: ``True``) or an ISO 8601 time (naive = UTC)."""
    text = text.strip()
    if len(text) == 10:
        day = date.fromisoformat(text)
        return datetime(day.year, day.month, day.day, tzinfo=timezone.utc), True
    moment = datetime.fromisoformat(_LOST_PLUS.sub(r"+\1", text.replace("Z", "+00:00")))
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)), False


def _moment_text(value: str) -> str:
    try:
        parse_moment(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD) or an ISO 8601 time") from None
    return value


MomentText = Annotated[StrictStr, StringConstraints(max_length=64), AfterValidator(_moment_text)]


# /spend/logs answers at most this many rows per page (the default page is as large:
# a client that reads one page, as LiteLLM's do, gets as much as it can).
SPEND_LOGS_PAGE_SIZE = 1000


class SpendLogsQuery(Request):
    page: int = Field(default=1, ge=1, le=INT32_MAX)
    page_size: int = Field(default=SPEND_LOGS_PAGE_SIZE, ge=1, le=SPEND_LOGS_PAGE_SIZE)
    api_key: Id | None = None
    user_id: Id | None = None
    end_user: Id | None = None
    request_id: Id | None = None
    team_id: Id | None = None
    model: Id | None = None
    status: Id | None = None
    start_date: MomentText | None = None
    end_date: MomentText | None = None
    # Oldest first by default (LiteLLM's order); the admin UI asks for the newest first.
    order: Literal["asc", "desc"] = "asc"

    def window(self) -> tuple[float | None, float | None]:
        """``[start, end)`` in epoch seconds: a date-only ``end_date`` covers its
        whole day, an ``end_date`` instant is included."""
        start = parse_moment(self.start_date)[0].timestamp() if self.start_date else None
        end = None
        if self.end_date:
            moment, whole_day = parse_moment(self.end_date)
            end = (moment + timedelta(days=1)).timestamp() if whole_day else moment.timestamp()
            if not whole_day:
                end = math.nextafter(end, math.inf)
        if start is not None and end is not None and start >= end:
            raise BadRequest("'start_date' must be before 'end_date'", param="start_date")
        return start, end


# --- reports (/global/spend/daily, /global/spend/top_*) --------------------


class ReportWindow(Request):
    days: int = Field(default=30, ge=1, le=366)


class TopQuery(ReportWindow):
    limit: int = Field(default=10, ge=1, le=100)


def _day(value: str) -> str:
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None
    return value


DateText = Annotated[
    StrictStr, StringConstraints(strip_whitespace=True, max_length=10), AfterValidator(_day)
]


class SpendReportQuery(Request):
    """``/global/spend/report``: whole UTC days from ``start_date`` to ``end_date``
    (both included; default the last 30 days), per day and ``group_by`` value."""

    start_date: DateText | None = None
    end_date: DateText | None = None
    group_by: Literal["team", "customer", "api_key", "user", "model"] = "team"

    def days(self, today: date) -> tuple[date, date]:
        end = date.fromisoformat(self.end_date) if self.end_date else today
        if self.start_date:
            start = date.fromisoformat(self.start_date)
        else:
            start = end - timedelta(29) if end > date.min + timedelta(29) else date.min
        if start > end:
            raise BadRequest("'start_date' must not be after 'end_date'", param="start_date")
        if (end - start).days >= 366:
            raise BadRequest("A report covers at most 366 days", param="start_date")
        return start, end


# --- parsing ---------------------------------------------------------------

R = TypeVar("R", bound=Request)


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def bad_request(err: ValidationError) -> BadRequest:
    """The first validation problem as a 400 whose ``param`` is the field name."""
    first = err.errors(include_url=False, include_input=False)[0]
    loc = tuple(first["loc"])
    param = str(loc[0]) if loc else "body"
    field = _field_path(loc) or "body"
    if first["type"] == "missing":
        return BadRequest(f"'{field}' is required", param=param)
    message = str(first["msg"]).removeprefix("Value error, ")
    return BadRequest(f"Invalid value for '{field}': {message}", param=param)


def parse(schema: type[R], data: Mapping[str, Any]) -> R:
    """Validate ``data`` against ``schema``; a :class:`BadRequest` naming the field if not."""
    try:
        return schema.model_validate(dict(data))
    except ValidationError as err:
        raise bad_request(err) from None
