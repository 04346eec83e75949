"""The config loader: env references, validation with key paths, defaults."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from proxy.cli import is_loopback, warn_if_trial_key_exposed
from proxy.config import ConfigError, build_config, load_config

SEED_MODEL_NAMES = {"gpt-3.5-turbo", "azure-gpt-3.5", "mistral", "text-embedding-ada-002"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No inherited settings and no stray ./config.yaml: each test sets what it needs."""
    for name in (
        "COMPTROLLER_CONFIG",
        "COMPTROLLER_MASTER_KEY",
        "LITELLM_MASTER_KEY",
        "DATABASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_env_references_resolve_in_nested_mappings_and_lists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("UP_BASE", "http://upstream.example/v1")
    monkeypatch.setenv("UP_KEY", "sk-upstream-secret")
    monkeypatch.setenv("UP_TIMEOUT", "7.5")
    monkeypatch.setenv("MASTER", "sk-master-from-env")
    monkeypatch.setenv("GROUP", "beta-models")
    monkeypatch.setenv("SKIP", "rate_limiter")
    path = write_config(
        tmp_path,
        """
        model_list:
          - model_name: gpt-4o
            litellm_params:
              model: openai/gpt-4o
              api_base: os.environ/UP_BASE
              api_key: os.environ/UP_KEY
              timeout: os.environ/UP_TIMEOUT
            model_info:
              access_groups: [os.environ/GROUP, fixed-group]
        general_settings:
          master_key: os.environ/MASTER
        plugins:
          disable: [os.environ/SKIP]
          settings:
            my_plugin: {token: os.environ/UP_KEY, nested: [{deep: os.environ/GROUP}]}
        """,
    )
    config = load_config(path)
    params = config.model_list[0].litellm_params
    assert params.api_base == "http://upstream.example/v1"
    assert params.api_key == "sk-upstream-secret"
    assert params.timeout == 7.5  # a string from the environment, read as a number
    assert config.model_list[0].model_info.access_groups == ["beta-models", "fixed-group"]
    assert config.master_key == "sk-master-from-env"
    assert config.plugins.disable == ["rate_limiter"]
    assert config.plugin_settings("my_plugin") == {
        "token": "sk-upstream-secret",
        "nested": [{"deep": "beta-models"}],
    }
    assert config.source == str(path)


def test_missing_env_variable_names_the_variable_and_the_key_path() -> None:
    raw = {
        "model_list": [
            {
                "model_name": "a",
                "litellm_params": {"model": "openai/a", "api_key": "os.environ/NOPE"},
            }
        ]
    }
    with pytest.raises(ConfigError) as err:
        build_config(raw)
    assert "model_list[0].litellm_params.api_key" in str(err.value)
    assert "NOPE" in str(err.value)


def test_missing_env_variable_inside_a_list_names_the_index() -> None:
    with pytest.raises(ConfigError, match=r"plugins\.disable\[1\].*MISSING_PLUGIN"):
        build_config({"plugins": {"disable": ["rate_limiter", "os.environ/MISSING_PLUGIN"]}})


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (
            {
                "model_list": [
                    {"model_name": "a", "litellm_params": {"model": "x", "timeout": "abc"}}
                ]
            },
            "model_list[0].litellm_params.timeout",
        ),
        (
            {
                "model_list": [
                    {"model_name": "a", "litellm_params": {"model": "x", "timeout": True}}
                ]
            },
            "model_list[0].litellm_params.timeout",
        ),
        (
            {"model_list": [{"model_name": "a", "litellm_params": {"model": "x", "timeout": -1}}]},
            "model_list[0].litellm_params.timeout",
        ),
        ({"model_list": [{"model_name": "a"}]}, "model_list[0].litellm_params"),
        ({"model_list": "gpt-4o"}, "model_list"),
        ({"general_settings": {"alerting": "webhook"}}, "general_settings.alerting"),
        ({"general_settings": {"master_key": 1234}}, "general_settings.master_key"),
        ({"litellm_settings": {"max_budget": "lots"}}, "litellm_settings.max_budget"),
        ({"litellm_settings": {"max_budget": True}}, "litellm_settings.max_budget"),
        ({"litellm_settings": {"budget_duration": "soon"}}, "litellm_settings.budget_duration"),
        ({"plugins": {"disable": "rate_limiter"}}, "plugins.disable"),
        ({"general_settings": "sk-1234"}, "general_settings"),
    ],
)
def test_wrong_type_stops_start_up_naming_the_key_path(raw: dict, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(raw)
    assert f"{path}:" in str(err.value)


def test_wrong_type_in_a_file_is_reported_by_load_config(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
        model_list:
          - model_name: a
            litellm_params: {model: openai/a}
          - model_name: b
            litellm_params: {model: openai/b, timeout: soon}
        """,
    )
    with pytest.raises(ConfigError, match=r"model_list\[1\]\.litellm_params\.timeout"):
        load_config(path)


def test_numbers_given_as_strings_are_accepted() -> None:
    config = build_config(
        {
            "model_list": [
                {
                    "model_name": "a",
                    "litellm_params": {"model": "openai/a", "input_cost_per_token": "1e-6"},
                }
            ],
            "litellm_settings": {"max_budget": "4.5"},
        }
    )
    assert config.model_list[0].litellm_params.input_cost_per_token == 1e-6
    assert config.litellm_settings.max_budget == 4.5


def test_unquoted_azure_api_version_date_is_read_as_text(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
        model_list:
          - model_name: azure-gpt
            litellm_params: {model: azure/dep, api_base: http://x, api_version: 2024-06-01}
        """,
    )
    assert load_config(path).model_list[0].litellm_params.api_version == "2024-06-01"


def test_unknown_keys_warn_with_their_path_and_are_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = {
        "model_list": [
            {
                "model_name": "a",
                "litellm_params": {"model": "openai/a", "order": 1},
                "deployment_id": "x",
            }
        ],
        "router_settings": {"routing_strategy": "simple-shuffle", "redis_host": "r"},
        "general_settings": {"proxy_batch_write_at": 10},
        "litellm_settings": {"drop_params": True},
    }
    with caplog.at_level(logging.WARNING, logger="comptroller.config"):
        config = build_config(raw)
    warned = caplog.text
    for path in (
        "router_settings.redis_host",
        "model_list[0].deployment_id",
        "model_list[0].litellm_params.order",
        "general_settings.proxy_batch_write_at",
        "litellm_settings.drop_params",
    ):
        assert f"unknown key {path} ignored" in warned
    # Ignored means: the known settings still load, and nothing about them changed.
    assert [m.model_name for m in config.model_list] == ["a"]
    assert config.model_list[0].litellm_params.timeout == 600.0


def test_known_keys_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="comptroller.config"):
        build_config(
            {
                "general_settings": {"master_key": "sk-real", "alerting": ["webhook"]},
                "litellm_settings": {"max_budget": 100, "budget_duration": "30d"},
                "plugins": {"disable": [], "settings": {}},
            }
        )
    assert "unknown key" not in caplog.text


def test_no_config_file_starts_on_builtin_defaults(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("COMPTROLLER_MASTER_KEY", "sk-from-env")
    config = load_config()
    names = {m.model_name for m in config.model_list}
    assert SEED_MODEL_NAMES <= names
    assert {m.litellm_params.provider for m in config.model_list} == {"mock"}
    assert config.database_url.startswith("sqlite:///")
    assert config.master_key == "sk-from-env"
    assert config.source == "built-in defaults"
    assert not config.uses_trial_master_key


def test_litellm_master_key_variable_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-litellm-env")
    assert load_config().master_key == "sk-litellm-env"


def test_config_master_key_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPTROLLER_MASTER_KEY", "sk-from-env")
    assert build_config({"general_settings": {"master_key": "sk-file"}}).master_key == "sk-file"


def test_without_any_master_key_the_trial_key_is_used_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="comptroller.config"):
        config = load_config()
    assert config.master_key == "sk-1234"
    assert config.uses_trial_master_key
    assert "trial key sk-1234" in caplog.text


def test_trial_key_on_a_public_bind_warns_again(caplog: pytest.LogCaptureFixture) -> None:
    config = build_config({"general_settings": {"master_key": "sk-1234"}})
    with caplog.at_level(logging.WARNING, logger="comptroller"):
        assert not warn_if_trial_key_exposed(config, "127.0.0.1")
        assert not warn_if_trial_key_exposed(config, "localhost")
        assert "listens on" not in caplog.text
        assert warn_if_trial_key_exposed(config, "0.0.0.0")
    assert "listens on 0.0.0.0" in caplog.text


def test_a_real_master_key_on_a_public_bind_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    config = build_config({"general_settings": {"master_key": "sk-a-real-secret"}})
    with caplog.at_level(logging.WARNING, logger="comptroller"):
        assert not warn_if_trial_key_exposed(config, "0.0.0.0")
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("example.com", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_defaults_price_the_mock_models() -> None:
    from proxy.upstream.deployments import ModelTable

    table = ModelTable(build_config(None))
    chat, embedding = table.get("gpt-3.5-turbo"), table.get("text-embedding-ada-002")
    assert chat is not None and embedding is not None
    assert chat.price.input_cost_per_token > 0
    assert embedding.price.output_cost_per_token == 0


def test_config_file_without_model_list_gets_the_mock_models(tmp_path: Path) -> None:
    path = write_config(tmp_path, "general_settings:\n  master_key: sk-x\n")
    assert SEED_MODEL_NAMES <= {m.model_name for m in load_config(path).model_list}


def test_empty_sections_are_allowed(tmp_path: Path) -> None:
    path = write_config(tmp_path, "general_settings:\nlitellm_settings:\nplugins:\n")
    config = load_config(path)
    assert config.plugins.disable == []
    assert config.litellm_settings.max_budget is None


def test_comptroller_config_variable_selects_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    other = tmp_path / "elsewhere.yaml"
    other.write_text("general_settings: {master_key: sk-elsewhere}\n")
    monkeypatch.setenv("COMPTROLLER_CONFIG", str(other))
    assert load_config().master_key == "sk-elsewhere"


def test_a_named_config_file_that_does_not_exist_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    monkeypatch.setenv("COMPTROLLER_CONFIG", str(tmp_path / "also-missing.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config()


@pytest.mark.parametrize("text", ["model_list: [\n", "- just\n- a list\n", "plain text"])
def test_a_file_that_is_not_a_yaml_mapping_is_an_error(tmp_path: Path, text: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


def test_database_url_variable_selects_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/x")
    assert load_config().database_url == "postgresql://postgres@127.0.0.1:5432/x"
