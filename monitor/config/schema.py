"""Configuration: YAML with ``${VAR}`` / ``${VAR:-default}`` expansion, validated by pydantic.

Every problem is reported at once, each with its dotted path
(``models.credit-v1.features.salary: ...``); :func:`load_config` raises
:class:`~monitor.errors.ConfigError` listing them all.

>>> cfg = parse_config({"kafka": {"topic": "p"}, "models": {"m": {"features": {"x": "numeric"}}}})
>>> cfg.models["m"].features["x"].type, cfg.kafka.bootstrap_servers
('numeric', 'localhost:9092')
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from monitor.config.kinds import registry
from monitor.errors import ConfigError
from sinks.registry import PluginSinkConfig
from sinks.registry import builtin as builtin_sinks

FeatureType = Literal["numeric", "categorical"]
PREDICTION = "prediction"  # the series name under which the model's output is monitored

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- detector parameters ----------------------------------------------------------------
class OutlierParams(Strict):
    """Values far outside a numeric series' reference: beyond its 1st and 99th percentiles
    by more than ``fence_iqr`` interquartile ranges. They are counted (data quality,
    ``outliers``) and ADWIN sees them clipped to the fence, so that one absurd value
    (1e200) cannot widen its bound for the rest of the stream; KS and PSI, which only rank
    values, see them as they are. ``fence_iqr: null`` turns both off."""

    fence_iqr: float | None = Field(10.0, gt=0)


class DetectorParamsBase(Strict):
    """Parameters per detector kind (one block per kind of :mod:`monitor.config.kinds`, plus
    ``outliers``). In overrides, only the keys given replace the defaults.

    Thresholds (``alpha``, ``delta``, ``arl``) are left unset: they follow from the false
    alert target (``false_alerts_per_100k_events``); a value set here overrides it.
    """

    def of(self, kind: str) -> Any:
        """The parameters of detector kind ``kind``."""
        return getattr(self, kind)

    @property
    def outlier_fence_iqr(self) -> float | None:
        fence: float | None = self.of("outliers").fence_iqr
        return fence

    def merged(self, override: DetectorParamsBase | None) -> DetectorParamsBase:
        """These parameters with every key set in ``override`` replaced."""
        if override is None:
            return self
        parts: dict[str, Any] = {}
        for name in type(self).model_fields:
            base: BaseModel = getattr(self, name)
            if name in override.model_fields_set:
                over: BaseModel = getattr(override, name)
                data = base.model_dump()
                data.update({k: getattr(over, k) for k in over.model_fields_set})
                parts[name] = type(base)(**data)
            else:
                parts[name] = base
        return type(self)(**parts)


def _params_model() -> type[DetectorParamsBase]:
    fields: dict[str, Any] = {
        name: (kind.params, kind.params()) for name, kind in registry().items()
    }
    fields["outliers"] = (OutlierParams, OutlierParams())
    return create_model("DetectorParams", __base__=DetectorParamsBase, **fields)


DetectorParams = _params_model()


def _known_detectors(names: list[str] | None) -> list[str] | None:
    if names is None:
        return None
    known = registry()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown detector {unknown[0]!r}: known detectors are {', '.join(sorted(known))}"
        )
    return names


DetectorList = Annotated[list[str], AfterValidator(_known_detectors)]


# -- models ------------------------------------------------------------------------------
class ReferenceSpec(Strict):
    """Where a model's reference comes from: its first ``warmup`` events, or a file made by
    ``driftline reference build``."""

    warmup: int | None = Field(None, ge=20)
    file: Path | None = None
    keep_recent: int = Field(
        5000,
        ge=0,
        description="the model's most recent events kept for a re-baseline 'from recent' "
        "(about 8 bytes per numeric value; part of the checkpoint)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ReferenceSpec:
        if self.warmup is None and self.file is None:
            raise ValueError("give either warmup (a number of events) or file (a path)")
        if self.warmup is not None and self.file is not None:
            raise ValueError("give warmup or file, not both")
        return self


class FeatureSpec(Strict):
    type: FeatureType
    detectors: DetectorList | None = None
    params: DetectorParams | None = None  # type: ignore[valid-type]

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value


class OnlineModelConfig(Strict):
    """The online challenger (see monitor.online.learner)."""

    learner: Literal[
        "logistic_regression",
        "linear_regression",
        "hoeffding_adaptive_tree",
        "adaptive_random_forest",
    ]
    params: dict[str, Any] = Field(default_factory=dict, description="river estimator args")
    queue_size: int = Field(10_000, ge=1, description="pairs waiting; beyond, new pairs drop")
    retrain_max: int = Field(5_000, ge=1, description="pairs kept to retrain after a drift")


class ModelConfig(Strict):
    features: dict[str, FeatureSpec] = Field(min_length=1)
    task: Literal["classification", "regression"] | None = None  # inferred from labels
    online_model: OnlineModelConfig | None = None

    @model_validator(mode="after")
    def _learner_fits_task(self) -> ModelConfig:
        if self.online_model is None:
            return self
        if self.task is None:
            raise ValueError("online_model needs the model's task (classification or regression)")
        learner = self.online_model.learner
        if (learner, self.task) in (
            ("logistic_regression", "regression"),
            ("linear_regression", "classification"),
        ):
            raise ValueError(f"learner {learner} does not fit task {self.task}")
        return self

    prediction: FeatureSpec | None = None
    reference: ReferenceSpec | None = None
    detectors: DetectorList | None = None
    params: DetectorParams | None = None  # type: ignore[valid-type]
    false_alerts_per_100k_events: float | None = Field(None, gt=0, le=10_000)

    @field_validator("features")
    @classmethod
    def _no_reserved_name(cls, features: dict[str, FeatureSpec]) -> dict[str, FeatureSpec]:
        if PREDICTION in features:
            raise ValueError(
                f"'{PREDICTION}' is reserved for the model's output; rename the feature"
            )
        return features


DEFAULT_DETECTORS = ("cusum", "ks", "psi", "categorical", "categorical_cusum")


def _default_detectors() -> list[str]:
    return list(DEFAULT_DETECTORS)


class Defaults(Strict):
    reference: ReferenceSpec = ReferenceSpec(warmup=2000)
    detectors: DetectorList = Field(default_factory=_default_detectors)
    params: DetectorParams = DetectorParams()  # type: ignore[valid-type]
    # The false-alarm target every detector's threshold follows: false alerts per series
    # per 100,000 of its events under no drift, shared among the series' detectors.
    false_alerts_per_100k_events: float = Field(0.1, gt=0, le=10_000)


# -- alerting ----------------------------------------------------------------------------
class AlertingConfig(Strict):
    """The alert policy; periods count the model's events, so replays give the same alerts."""

    resolve_after_events: int = Field(5000, ge=1, description="quiet events before resolved")
    cooldown_events: int = Field(2000, ge=0, description="events before a key may fire again")
    critical_ratio: float = Field(2.0, gt=1, description="score / threshold that is critical")
    model_alert_min_features: int = Field(2, ge=2, description="features drifting together")


class LabelsConfig(Strict):
    """Joining delayed labels to predictions, and measuring the production model."""

    max_pending: int = Field(100_000, ge=1, description="predictions awaiting a label")
    max_age_s: float = Field(86_400.0, gt=0, description="event-time age before expiry")
    window: int = Field(1000, ge=10, description="labelled pairs in the sliding metrics")
    decay: float = Field(0.001, gt=0, lt=1, description="weight of a new pair, decayed")
    delta: float = Field(0.002, gt=0, lt=1, description="ADWIN on the error stream")


class StateConfig(Strict):
    """Where checkpoints go: ``changelog_topic`` (a Kafka topic keyed by
    group/topic/partition, for scale-out: any instance of the group can restore any
    partition), ``path`` (a local directory, a sidecar's volume), or, with neither, the
    directory ``data/`` under the working directory. ``memory_only: true`` keeps no state
    (a restart re-warms every reference; the daemon warns at start). The directory must be
    writable by the daemon alone. One checkpoint per owned partition is taken every
    ``checkpoint_every_events`` processed events or ``checkpoint_every_s`` seconds,
    whichever comes first, on partition revocation and at clean shutdown."""

    path: Path | None = None
    changelog_topic: str | None = Field(None, min_length=1)
    memory_only: bool = False
    changelog_chunk_bytes: int = Field(512 * 1024, ge=1024, le=4 * 1024 * 1024)
    checkpoint_every_events: int = Field(50_000, ge=1)
    checkpoint_every_s: float = Field(30.0, gt=0)
    checkpoint_flush_timeout_s: float = Field(10.0, ge=0)

    @model_validator(mode="after")
    def _one_store(self) -> StateConfig:
        if self.path is not None and self.changelog_topic is not None:
            raise ValueError("set either path (local directory) or changelog_topic, not both")
        if self.memory_only and (self.path is not None or self.changelog_topic is not None):
            raise ValueError("memory_only keeps no state: remove path and changelog_topic")
        return self


class EventsConfig(Strict):
    """What an event may carry: ``ts`` at most ``max_future_s`` after the wall clock (a
    timestamp from the far future would age every waiting prediction out of the label
    join); ``null`` accepts any time from 1970 to the year 5138."""

    max_future_s: float | None = Field(86_400.0, gt=0)


class LoggingConfig(Strict):
    """The daemon's own log lines, on stderr: ``text`` for people, ``json`` (one object per
    line, with fields such as ``model``, ``reason``, ``topic``, ``partition``, ``offset``)
    for log pipelines. ``driftline run --log-level`` overrides ``level``."""

    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("level", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


# -- I/O ---------------------------------------------------------------------------------
class KafkaConfig(Strict):
    bootstrap_servers: str = "localhost:9092"
    topic: str = Field(min_length=1)
    labels_topic: str | None = Field(None, min_length=1, description="delayed labels")
    group_id: str = Field("driftline", min_length=1)
    dead_letter_topic: str | None = None
    client_id: str = "driftline"
    max_batch_records: int = Field(5000, ge=1)
    max_record_bytes: int = Field(1_000_000, ge=64)
    fetch_timeout_ms: int = Field(500, ge=1)
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # Passed to every Kafka client (consumer, producers, admin, changelog, kafka sink).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None

    @model_validator(mode="after")
    def _security(self) -> KafkaConfig:
        sasl = self.security_protocol.startswith("SASL")
        if sasl and (self.sasl_mechanism is None or self.sasl_plain_username is None):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism and "
                "sasl_plain_username (and sasl_plain_password)"
            )
        if not sasl and self.sasl_mechanism is not None:
            raise ValueError("sasl_mechanism is set but security_protocol is not SASL_*")
        return self


class HttpConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)
    token: SecretStr | None = Field(
        None, description="bearer token required by /status and /models/*/predict"
    )


def _sink_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in builtin_sinks() else "plugin"


# Every built-in sink's own configuration model (sinks.registry), then plugins'.
if TYPE_CHECKING:
    SinkConfig = PluginSinkConfig  # what every member has: a type, a name, the delivery settings
else:
    SinkConfig = Annotated[
        Union[
            (
                *(Annotated[k.config, Tag(k.name)] for k in builtin_sinks().values()),
                Annotated[PluginSinkConfig, Tag("plugin")],
            )
        ],
        Discriminator(_sink_tag),
    ]


class OutboxConfig(Strict):
    """Where sinks keep alerts not yet delivered (``<path>/<sink>.outbox``). Default:
    ``<state directory>/outbox`` (``state.path``, or ``data/``); with the changelog store
    or ``state.memory_only``, in memory only (lost on a crash) unless this is set."""

    path: Path | None = None


class Config(Strict):
    kafka: KafkaConfig
    http: HttpConfig = HttpConfig()
    defaults: Defaults = Defaults()
    models: dict[str, ModelConfig] = Field(min_length=1)
    sinks: list[SinkConfig] = Field(default_factory=list)
    outbox: OutboxConfig = OutboxConfig()
    alerting: AlertingConfig = AlertingConfig()
    labels: LabelsConfig = LabelsConfig()
    state: StateConfig = StateConfig()
    events: EventsConfig = EventsConfig()
    logging: LoggingConfig = LoggingConfig()
    shutdown_timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _sink_names(self) -> Config:
        names = [s.name for s in self.sinks if s.name is not None]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"sinks: names must be unique, repeated: {', '.join(twice)}")
        return self

    def feature_specs(self, model: str) -> dict[str, FeatureSpec]:
        """The model's monitored series: its features, then its prediction if monitored."""
        m = self.models[model]
        specs = dict(m.features)
        if m.prediction is not None:
            specs[PREDICTION] = m.prediction
        return specs

    def detectors_for(self, model: str, feature: str) -> list[str]:
        """Detectors run on a series: the feature's list, else the model's, else the
        defaults, keeping the kinds that watch its type; a categorical series whose list
        names no categorical kind gets the default ones."""
        spec = self.feature_specs(model)[feature]
        kinds = registry()
        m = self.models[model]
        names = spec.detectors or m.detectors or self.defaults.detectors
        mine = [d for d in names if kinds[d].series == spec.type]
        if spec.type == "categorical" and not mine:
            mine = [d for d in DEFAULT_DETECTORS if kinds[d].series == "categorical"]
        return mine

    def false_alert_rate(self, model: str) -> float:
        """The target as false alerts per event per series."""
        own = self.models[model].false_alerts_per_100k_events
        return (own if own is not None else self.defaults.false_alerts_per_100k_events) / 1e5

    def params_for(self, model: str, feature: str) -> DetectorParamsBase:
        """Defaults, then the model's overrides, then the feature's."""
        m = self.models[model]
        spec = self.feature_specs(model)[feature]
        base: DetectorParamsBase = self.defaults.params
        return base.merged(m.params).merged(spec.params)

    def reference_for(self, model: str) -> ReferenceSpec:
        return self.models[model].reference or self.defaults.reference


# -- loading -----------------------------------------------------------------------------
def _expand(value: Any, path: str, env: dict[str, str], errors: list[str]) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed document."""
    if isinstance(value, dict):
        return {
            k: _expand(v, f"{path}.{k}" if path else str(k), env, errors) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expand(v, f"{path}.{i}", env, errors) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        errors.append(
            f"{path}: environment variable {name} is not set (or use ${{{name}:-default}})"
        )
        return ""

    return _VAR.sub(sub, value)


_TAGS = frozenset({*builtin_sinks(), "plugin"})


def _location(loc: tuple[int | str, ...]) -> str:
    """Dotted path of an error, without pydantic's union tags (sinks.0.webhook.url ->
    sinks.0.url) and validator markers."""
    parts: list[str] = []
    for i, p in enumerate(loc):
        if p in ("function-after", "function-before"):
            continue
        if i >= 2 and loc[i - 2] == "sinks" and isinstance(loc[i - 1], int) and p in _TAGS:
            continue
        parts.append(str(p))
    return ".".join(parts) or "(top level)"


def _members(t: Any) -> list[Any]:
    """The concrete types a (possibly Annotated, Optional or Union) annotation stands for."""
    origin = get_origin(t)
    if origin is Annotated:
        return _members(get_args(t)[0])
    if origin in (Union, types.UnionType):
        return [m for a in get_args(t) for m in _members(a)]
    return [t]


def keys_at(loc: Sequence[int | str]) -> list[str]:
    """The keys valid where ``loc`` points (the parent of its last part), for suggestions.

    >>> keys_at(("defaults", "reference", "warmpu"))
    ['file', 'keep_recent', 'warmup']
    """
    current: list[Any] = [Config]
    for i, part in enumerate(loc[:-1]):
        sinks = builtin_sinks()
        if i >= 2 and loc[i - 2] == "sinks" and isinstance(loc[i - 1], int) and part in sinks:
            current = [sinks[str(part)].config]  # the sink union's tag: that sink's model
            continue
        nxt: list[Any] = []
        for t in (m for c in current for m in _members(c)):
            origin = get_origin(t)
            if isinstance(t, type) and issubclass(t, BaseModel):
                field = t.model_fields.get(str(part))
                if field is not None:
                    nxt.append(field.annotation)
            elif origin is dict:
                nxt.append(get_args(t)[1])
            elif origin is list and isinstance(part, int):
                nxt.append(get_args(t)[0])
        if nxt:
            current = nxt  # else a union's tag or a validator's marker: same place
    names = {
        name
        for t in (m for c in current for m in _members(c))
        if isinstance(t, type) and issubclass(t, BaseModel)
        for name in t.model_fields
    }
    return sorted(names)


def _explain(err: Any) -> str:
    """One pydantic error in words: what was expected, and the nearest valid key."""
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "literal_error" and isinstance(err.get("input"), str):
        choices = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        close = difflib.get_close_matches(err["input"], choices, n=1, cutoff=0.6)
        return f"{msg}, not {err['input']!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    if err["type"] != "extra_forbidden":
        return msg
    key = str(err["loc"][-1])
    valid = keys_at(err["loc"])
    if not valid:
        return f"unknown key {key!r}"
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}; valid keys here: {', '.join(valid)}"


def parse_config(document: Any, env: dict[str, str] | None = None) -> Config:
    """Validate a parsed YAML document; raises ConfigError listing every problem."""
    if not isinstance(document, dict):
        raise ConfigError(["(top level): the configuration must be a mapping of sections"])
    errors: list[str] = []
    expanded = _expand(document, "", dict(os.environ) if env is None else env, errors)
    try:
        config = Config.model_validate(expanded)
    except ValidationError as exc:
        unset = {e.split(":", 1)[0] for e in errors}  # already explained by a missing variable
        for err in exc.errors():
            where = _location(err["loc"])
            if where not in unset:
                errors.append(f"{where}: {_explain(err)}")
        raise ConfigError(errors) from None
    if errors:
        raise ConfigError(errors)
    return config


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    """Read and validate a YAML configuration file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read the file ({exc.strerror})"]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from None
    return parse_config(document, env)
