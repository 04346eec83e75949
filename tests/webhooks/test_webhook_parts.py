"""Pure parts of the webhook alerter: signatures, projections, settings, backoff."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from plugins.webhook_alerter.projection import MIN_ELAPSED_FRACTION, period_start, project
from plugins.webhook_alerter.settings import WebhookSettings, load_settings
from plugins.webhook_alerter.signing import sign
from proxy.config import ConfigError, build_config


def test_signature_matches_the_standard_webhooks_test_vector():
    # The published vector of the Standard Webhooks specification.
    signature = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_plain_secret_signs_with_its_own_bytes():
    assert sign("plain", "id", 1, b"{}") != sign("other", "id", 1, b"{}")
    assert sign("plain", "id", 1, b"{}") != sign("plain", "id", 2, b"{}")
    assert sign("plain", "id", 1, b"{}").startswith("v1,")


# --- projections ---------------------------------------------------------------

HOUR = 3600.0


def test_spending_half_the_budget_in_a_quarter_period_projects_double():
    result = project(spend=5.0, max_budget=10.0, start=0.0, end=4 * HOUR, now=HOUR)
    assert result is not None
    assert result.projected_spend == pytest.approx(20.0)
    assert result.exceeded_at == pytest.approx(2 * HOUR)


def test_on_track_spend_projects_nothing():
    assert project(spend=2.0, max_budget=10.0, start=0.0, end=4 * HOUR, now=HOUR) is None


def test_spend_already_over_budget_is_not_a_projection():
    assert project(spend=10.0, max_budget=10.0, start=0.0, end=4 * HOUR, now=HOUR) is None


def test_the_first_moments_of_a_period_count_as_a_minimum_elapsed_time():
    length = 30 * 24 * HOUR
    # One second after the reset, a cent of a $100 budget is not an alarm...
    assert project(0.01, 100.0, start=0.0, end=length, now=1.0) is None
    # ...but spending a tenth of it that fast is.
    result = project(10.0, 100.0, start=0.0, end=length, now=1.0)
    assert result is not None
    assert result.projected_spend == pytest.approx(10.0 / MIN_ELAPSED_FRACTION)


def test_exceeded_date_is_iso_8601_utc():
    result = project(spend=5.0, max_budget=10.0, start=0.0, end=4 * HOUR, now=HOUR)
    assert result is not None
    assert result.exceeded_date == "1970-01-01T02:00:00+00:00"


def test_period_start_is_one_period_before_the_reset():
    assert period_start(10 * HOUR, "2h", created_at=None) == 8 * HOUR
    assert period_start(10 * HOUR, "2h", created_at=9 * HOUR) == 9 * HOUR


def test_monthly_period_start_steps_back_whole_months():
    reset = datetime(2025, 3, 31, 12, tzinfo=timezone.utc).timestamp()
    start = datetime.fromtimestamp(period_start(reset, "1mo", None), tz=timezone.utc)
    assert start == datetime(2025, 2, 28, 12, tzinfo=timezone.utc)
    reset = datetime(2025, 1, 15, tzinfo=timezone.utc).timestamp()
    start = datetime.fromtimestamp(period_start(reset, "2mo", None), tz=timezone.utc)
    assert start == datetime(2024, 11, 15, tzinfo=timezone.utc)


# --- settings ------------------------------------------------------------------


def test_alerting_off_means_no_settings(monkeypatch):
    monkeypatch.setenv("WEBHOOK_URL", "http://127.0.0.1:9/hook")
    assert load_settings(build_config({})) is None
    assert load_settings(build_config({"general_settings": {"alerting": ["slack"]}})) is None


def test_webhook_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("WEBHOOK_URL", "https://example.com/hook")
    config = build_config({"general_settings": {"alerting": ["webhook"], "webhook_secret": "s"}})
    settings = load_settings(config)
    assert settings is not None
    assert settings.url == "https://example.com/hook" and settings.secret == "s"


def test_a_url_that_is_not_http_is_a_startup_error(monkeypatch):
    monkeypatch.setenv("WEBHOOK_URL", "ftp://example.com/hook")
    with pytest.raises(ConfigError, match="http"):
        load_settings(build_config({"general_settings": {"alerting": ["webhook"]}}))


def test_a_wrong_setting_type_names_its_key(monkeypatch):
    monkeypatch.setenv("WEBHOOK_URL", "https://example.com/hook")
    raw = {
        "general_settings": {"alerting": ["webhook"]},
        "plugins": {"settings": {"webhook_alerter": {"timeout": "soon"}}},
    }
    with pytest.raises(ConfigError, match=r"plugins\.settings\.webhook_alerter\.timeout"):
        load_settings(build_config(raw))


def test_backoff_doubles_up_to_its_cap():
    settings = WebhookSettings(backoff_base=1.0, max_backoff=10.0)
    assert [settings.backoff(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_claim_outlasts_a_whole_batch_of_slow_posts():
    settings = WebhookSettings(batch_size=4, timeout=10.0)
    assert settings.claim_seconds > 4 * 10.0
