"""Settings: flags over ZEROHOP_* variables over defaults, and errors that name the flag or variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.app.settings import (
    OTHER_VARIABLES,
    LogFormat,
    Settings,
    SettingsError,
    misspelled_variables,
    reference_markdown,
    resolve_warm_path,
)
from extproc.core.registry import InFlightMode
from extproc.core.warmpath import WarmPathMode

ROOT = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    settings = Settings.from_args([], env={})
    assert settings.hold_timeout == 60
    assert settings.ext_proc_address == "127.0.0.1:9000"
    assert settings.scaler_address == "127.0.0.1:9090"
    assert settings.admin_address == "127.0.0.1:9091"
    assert settings.max_message_timeout == 65
    assert settings.in_flight is InFlightMode.CONCURRENCY
    assert settings.autoscale is True


def test_environment_then_flags() -> None:
    env = {"ZEROHOP_HOLD_TIMEOUT": "90s", "ZEROHOP_LOG_FORMAT": "JSON", "ZEROHOP_AUTOSCALE": "off"}
    settings = Settings.from_args(["--hold-timeout", "2m"], env=env)
    assert settings.hold_timeout == 120
    assert settings.log_format is LogFormat.JSON
    assert settings.autoscale is False
    assert Settings.from_args([], env=env).hold_timeout == 90


def test_list_and_path_settings() -> None:
    settings = Settings.from_args(
        ["--envoy-admin", "http://a:1/, http://b:2", "--config", "x.yaml", "--in-flight", "all"], env={}
    )
    assert settings.envoy_admin == ("http://a:1", "http://b:2")
    assert settings.config == Path("x.yaml")
    assert settings.in_flight is InFlightMode.ALL


def test_kube_api_limits_from_flags_and_environment() -> None:
    settings = Settings.from_args(["--kube-api-qps", "0"], env={"ZEROHOP_KUBE_API_BURST": "400"})
    assert (settings.kube_api_qps, settings.kube_api_burst) == (0, 400)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--hold-timeout", "soon"], {}, "--hold-timeout: not a duration"),
        ([], {"ZEROHOP_MAX_HELD_TOTAL": "0"}, "ZEROHOP_MAX_HELD_TOTAL: must be >= 1"),
        (["--ext-proc-address", "9000"], {}, "--ext-proc-address: expected HOST:PORT"),
        (["--in-flight", "some"], {}, "--in-flight: 'some' is not one of concurrency, all"),
        (["--autoscale", "perhaps"], {}, "--autoscale: expected true or false"),
        (["--kube-api-qps", "-1"], {}, "--kube-api-qps: must be >= 0"),
        ([], {"ZEROHOP_KUBE_API_BURST": "0"}, "ZEROHOP_KUBE_API_BURST: must be >= 1"),
    ],
)
def test_errors_name_their_source(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_args(argv, env=env)
    assert message in str(raised.value)


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    assert reference_markdown() in readme, "README's configuration table is stale: paste reference_markdown()"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ext-proc-address", "127.0.0.1:9000", "--scaler-address", "127.0.0.1:9000"], "--scaler-address"),
        (["--ext-proc-address", "0.0.0.0:9300", "--scaler-address", "127.0.0.1:9300"], "--ext-proc-address"),
        (["--scaler-address", "localhost:9091"], "--admin-address"),
        (["--provider", "kubernetes", "--ext-proc-address", "[::]:9092"], "--peer-address"),
    ],
)
def test_two_servers_on_one_port_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match="same port") as raised:
        Settings.from_args(argv, env={})
    assert message in str(raised.value)


def test_distinct_or_ephemeral_ports_are_accepted() -> None:
    Settings.from_args(["--ext-proc-address", "127.0.0.1:0", "--scaler-address", "127.0.0.1:0"], env={})
    # The peer API only listens with the Kubernetes provider.
    Settings.from_args(["--ext-proc-address", "127.0.0.1:9092"], env={})
    Settings.from_args(["--ext-proc-address", "127.0.0.1:9100", "--scaler-address", "127.0.0.2:9100"], env={})


def test_a_negative_duration_is_rejected_as_negative() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_args(["--hold-timeout", "-5s"], env={})
    assert str(raised.value) == "--hold-timeout: must be > 0, got '-5s'"


def test_misspelled_variables_are_named_with_the_nearest_setting() -> None:
    env = {
        "ZEROHOP_HOLD_TIMOUT": "5s",
        "ZEROHOP_HOLD_TIMEOUT": "5s",
        "ZEROHOP_ADMIN_URL": "http://127.0.0.1:9091",
        "ZEROHOP_ENVOY_BIN": "/usr/bin/envoy",
        "ZEROHOP_XYZZY": "1",
        "HOME": "/root",
    }
    assert misspelled_variables(env) == [
        "ZEROHOP_HOLD_TIMOUT is not a zerohop setting and is ignored; did you mean ZEROHOP_HOLD_TIMEOUT?",
        "ZEROHOP_XYZZY is not a zerohop setting and is ignored",
    ]


def test_the_other_known_variables_are_the_ones_their_commands_read() -> None:
    from extproc.app.statuscli import ADMIN_URL_ENV
    from extproc.dev.envoyproc import ENVOY_BIN_ENV

    assert set(OTHER_VARIABLES) == {ADMIN_URL_ENV, ENVOY_BIN_ENV}


def test_warm_path_open_needs_what_it_switches_and_reads() -> None:
    kube = ["--provider", "kubernetes", "--warm-path", "open"]
    with pytest.raises(SettingsError, match="--warm-path open needs --manage-envoyfilters true"):
        Settings.from_args([*kube, "--manage-envoyfilters", "false"], env={})
    with pytest.raises(SettingsError, match="needs --gateway-stats-port and no --envoy-admin"):
        Settings.from_args([*kube, "--manage-envoyfilters", "true", "--gateway-stats-port", "0"], env={})
    with pytest.raises(SettingsError, match="needs --gateway-stats-port and no --envoy-admin"):
        Settings.from_args([*kube, "--manage-envoyfilters", "true", "--envoy-admin", "http://gw:9901"], env={})
    settings = Settings.from_args([*kube, "--manage-envoyfilters", "true"], env={})
    assert settings.gateway_probe_port == 8080


def test_warm_path_auto_is_open_wherever_the_provider_can_switch_and_count() -> None:
    assert Settings.from_args([], env={}).warm_path is WarmPathMode.AUTO
    local = Settings.from_args(["--config", "x.yaml"], env={})
    mode, why = resolve_warm_path(local)
    assert mode is WarmPathMode.EXT_PROC
    assert why is not None
    assert "--envoy-admin" in why
    admin = Settings.from_args(["--config", "x.yaml", "--envoy-admin", "http://127.0.0.1:9901"], env={})
    assert resolve_warm_path(admin) == (WarmPathMode.OPEN, None)
    kube = Settings.from_args(["--provider", "kubernetes"], env={})
    mode, why = resolve_warm_path(kube)
    assert mode is WarmPathMode.EXT_PROC
    assert why is not None
    assert "--manage-envoyfilters" in why
    managed = Settings.from_args(["--provider", "kubernetes", "--manage-envoyfilters", "true"], env={})
    assert resolve_warm_path(managed) == (WarmPathMode.OPEN, None)
    chosen = managed.replace(warm_path=WarmPathMode.EXT_PROC)
    assert resolve_warm_path(chosen) == (WarmPathMode.EXT_PROC, None)
    with pytest.raises(SettingsError, match="--warm-path open needs --envoy-admin"):
        Settings.from_args(["--config", "x.yaml", "--warm-path", "open"], env={})
    settings = Settings.from_args(["--warm-path", "open", "--envoy-admin", "http://127.0.0.1:9901"], env={})
    assert settings.warm_path.value == "open"
    assert Settings.from_args([], env={}).warm_path.value == "auto"
