"""Configuration: the example file, every error listed with its path, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.config.schema import load_config, parse_config
from monitor.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "examples" / "credit.yaml"
ENV = {"ALERT_WEBHOOK_URL": "http://127.0.0.1:9999/hook"}


def minimal(**extra: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "kafka": {"topic": "predictions"},
        "models": {"m": {"features": {"x": "numeric", "c": "categorical"}}},
    }
    doc.update(extra)
    return doc


def errors_of(document: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(document, env=env or {})
    return info.value.errors


def test_the_issue_example_is_accepted_as_written() -> None:
    cfg = load_config(EXAMPLE, env=ENV)
    assert cfg.kafka.bootstrap_servers == "localhost:9092"  # ${KAFKA_BOOTSTRAP:-...} default
    assert cfg.kafka.dead_letter_topic == "predictions.dlq"
    assert cfg.http.port == 9108
    assert cfg.reference_for("credit-v1").warmup == 2000
    assert list(cfg.feature_specs("credit-v1")) == ["salary", "age", "elevel", "prediction"]
    assert cfg.detectors_for("credit-v1", "salary") == ["cusum", "ks", "psi"]
    assert cfg.detectors_for("credit-v1", "elevel") == ["categorical", "categorical_cusum"]
    assert cfg.false_alert_rate("credit-v1") == pytest.approx(1e-6)
    assert [s.type for s in cfg.sinks] == ["webhook", "log"]


def test_environment_overrides_defaults() -> None:
    cfg = load_config(EXAMPLE, env={**ENV, "KAFKA_BOOTSTRAP": "10.0.0.1:9093"})
    assert cfg.kafka.bootstrap_servers == "10.0.0.1:9093"


def test_every_error_is_listed_with_its_path() -> None:
    bad = {
        "kafka": {"topic": ""},
        "http": {"port": 70000},
        "models": {
            "credit-v1": {
                "features": {
                    "salary": "numerc",
                    "age": {"type": "numeric", "params": {"ks": {"alpha": 2}}},
                },
                "reference": {},
            }
        },
        "sinks": [{"type": "webhook", "url": "ftp://example.org"}, {"type": "pager"}],
        "colour": "blue",
    }
    errors = errors_of(bad)
    paths = [e.split(":", 1)[0] for e in errors]
    assert paths == [
        "kafka.topic",
        "http.port",
        "models.credit-v1.features.salary.type",
        "models.credit-v1.features.age.params.ks.alpha",
        "models.credit-v1.reference",
        "sinks.0.url",
        "sinks.1.type",
        "colour",
    ]
    assert "unknown sink type 'pager'" in errors[-2] and "alertmanager" in errors[-2]


def test_unset_variable_is_named_once() -> None:
    errors = errors_of({**minimal(), "sinks": [{"type": "webhook", "url": "${HOOK}"}]})
    assert errors == ["sinks.0.url: environment variable HOOK is not set (or use ${HOOK:-default})"]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("kafka:\n  topic: [unclosed\n")
    with pytest.raises(ConfigError, match="line 3"):
        load_config(f, env={})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config("/nonexistent/driftline.yaml", env={})


def test_parameter_overrides_merge_defaults_model_and_feature() -> None:
    cfg = parse_config(
        minimal(
            defaults={"params": {"ks": {"window": 800}}},
            models={
                "m": {
                    "params": {"ks": {"alpha": 0.05}},
                    "detectors": ["ks"],
                    "features": {
                        "x": {"type": "numeric", "params": {"ks": {"stride": 7}}},
                        "y": "numeric",
                    },
                }
            },
        ),
        env={},
    )
    x = cfg.params_for("m", "x").ks
    y = cfg.params_for("m", "y").ks
    assert (x.window, x.alpha, x.stride) == (800, 0.05, 7)
    assert (y.window, y.alpha, y.stride) == (800, 0.05, 100)
    assert cfg.detectors_for("m", "x") == ["ks"]


def test_prediction_is_a_reserved_feature_name() -> None:
    errors = errors_of(minimal(models={"m": {"features": {"prediction": "numeric"}}}))
    assert errors[0].startswith("models.m.features:")


def test_reference_is_warmup_or_file_not_both() -> None:
    errors = errors_of(minimal(defaults={"reference": {"warmup": 100, "file": "r.json"}}))
    assert errors == ["defaults.reference: give warmup or file, not both"]


def test_an_unknown_key_is_named_with_the_nearest_valid_one_and_every_valid_one() -> None:
    errors = errors_of(
        {
            "kafka": {"topic": "t", "bootstrap_server": "b:9092"},
            "defaults": {"reference": {"warmpu": 500}, "params": {"ks": {"alpah": 1e-3}}},
            "models": {
                "m": {"features": {"x": "numerc", "y": {"type": "numeric", "detectros": []}}}
            },
            "sinks": [{"type": "webhook", "url": "http://h/", "tiemout_s": 3}],
            "alertng": {},
            "zzzz": 1,
        }
    )
    by_path = dict(e.split(": ", 1) for e in errors)
    assert by_path["kafka.bootstrap_server"].startswith(
        "unknown key 'bootstrap_server' (did you mean 'bootstrap_servers'?); valid keys here:"
    )
    assert (
        "(did you mean 'warmup'?); valid keys here: file, keep_recent, warmup"
        in by_path["defaults.reference.warmpu"]
    )
    assert "(did you mean 'alpha'?)" in by_path["defaults.params.ks.alpah"]
    assert by_path["models.m.features.x.type"].endswith("not 'numerc' (did you mean 'numeric'?)")
    assert "(did you mean 'detectors'?)" in by_path["models.m.features.y.detectros"]
    # a sink's keys are its own type's, not every sink's
    sink = by_path["sinks.0.tiemout_s"]
    assert "(did you mean 'timeout_s'?)" in sink and "bootstrap_servers" not in sink
    assert "(did you mean 'alerting'?)" in by_path["alertng"]
    assert "did you mean" not in by_path["zzzz"] and "kafka" in by_path["zzzz"]


def test_logging_is_text_at_info_unless_configured() -> None:
    assert (parse_config(minimal(), env={}).logging.format, "INFO") == (
        "text",
        parse_config(minimal(), env={}).logging.level,
    )
    cfg = parse_config(minimal(logging={"format": "json", "level": "debug"}), env={})
    assert (cfg.logging.format, cfg.logging.level) == ("json", "DEBUG")
    assert errors_of(minimal(logging={"format": "xml"}))[0].startswith("logging.format:")
