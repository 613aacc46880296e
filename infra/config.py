"""Node configuration: `config.yaml` defaults, environment overrides, secrets.

Precedence, highest first: environment (`BYBIT_NODE_<FIELD>`, nested with `__`,
e.g. `BYBIT_NODE_RISK__MAX_LEVERAGE=3`), then the YAML file, then the defaults
below. API credentials come only from `BYBIT_API_KEY` / `BYBIT_API_SECRET`;
a YAML file that holds them is refused. The simulator's throwaway credentials
(section `sim`) are the one exception: they guard nothing.

`load_config` either returns a fully valid `NodeConfig` or raises
`ConfigError` whose `problems` name every bad field and why.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from messages.types import Interval

ENV_PREFIX = "BYBIT_NODE_"  # not NODE_: Node.js owns NODE_OPTIONS, NODE_EXTRA_CA_CERTS, ...
ENV_NESTED = "__"
API_KEY_ENV = "BYBIT_API_KEY"
API_SECRET_ENV = "BYBIT_API_SECRET"


_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}USDT$")
_SECRET_KEY_RE = re.compile(r"(api[_-]?key|api[_-]?secret|secret|password|token)", re.I)

PositiveDecimal = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
NonNegativeDecimal = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class Venue(StrEnum):
    SIM = "sim"
    TESTNET = "testnet"
    DEMO = "demo"
    MAINNET = "mainnet"


class TradingMode(StrEnum):
    PAPER = "paper"
    LIVE = "live"


# Which trading mode each venue admits. Paper money lives on the simulator,
# demo and testnet; real money only on mainnet. Nothing else is allowed.
VENUE_MODE: Mapping[Venue, TradingMode] = {
    Venue.SIM: TradingMode.PAPER,
    Venue.TESTNET: TradingMode.PAPER,
    Venue.DEMO: TradingMode.PAPER,
    Venue.MAINNET: TradingMode.LIVE,
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SymbolConfig(_Section):
    intervals: tuple[Interval, ...] = Field(min_length=1)
    tickers: bool = True

    @field_validator("intervals")
    @classmethod
    def _unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError("intervals must not repeat")
        return v


class RiskConfig(_Section):
    """Every limit must be set: the live preflight refuses a missing one."""

    max_daily_loss_usd: PositiveDecimal = Decimal("100")
    max_position_usd: PositiveDecimal = Decimal("1000")
    max_total_exposure_usd: PositiveDecimal = Decimal("2000")
    max_open_positions: int = Field(default=2, ge=1, le=50)
    max_leverage: PositiveDecimal = Field(default=Decimal("5"), le=100)
    max_price_deviation_pct: PositiveDecimal = Field(default=Decimal("1.0"), le=50)
    min_balance_usd: NonNegativeDecimal = Decimal("50")
    # Entries are blocked while equity is this far (percent) below today's peak equity.
    max_drawdown_pct: PositiveDecimal = Field(default=Decimal("5"), le=100)
    # Funding an entry would pay over this many hours must stay below max_funding_cost_usd.
    funding_horizon_hours: PositiveDecimal = Field(default=Decimal("24"), le=720)
    max_funding_cost_usd: NonNegativeDecimal = Decimal("10")
    # Hours between two funding settlements (Bybit: 8 for most linear perpetuals).
    funding_interval_hours: PositiveDecimal = Field(default=Decimal("8"), le=24)
    # Protective levels an entry gets when its signal names none (percent from the
    # entry's reference price; 0: none). Sent in the create request itself.
    default_stop_loss_pct: NonNegativeDecimal = Field(default=Decimal("2"), le=50)
    default_take_profit_pct: NonNegativeDecimal = Field(default=Decimal("4"), le=500)
    # Order size when a signal names neither qty nor usd.
    default_order_usd: PositiveDecimal = Decimal("100")
    # A price older than this (stream, or the reader's REST fallback) blocks an entry.
    max_quote_age_s: PositiveDecimal = Field(default=Decimal("5"), le=300)
    # An entry whose signal was made longer ago than this is refused: it was decided on a market
    # that has moved on (queued behind a slow venue call, or delivered late). Closes have no age limit.
    max_signal_age_s: PositiveDecimal = Field(default=Decimal("10"), le=3600)
    # How often Risk re-reads equity (peak, daily loss latch) between signals.
    evaluate_interval_s: PositiveDecimal = Field(default=Decimal("1"), le=60)
    # Executor's asks to StateStore / Risk; Panic's close gets close_timeout_s.
    ask_timeout_s: PositiveDecimal = Field(default=Decimal("2"), le=60)
    close_timeout_s: PositiveDecimal = Field(default=Decimal("30"), le=300)
    # Fill confirmation: wait this long for the private stream, then poll REST,
    # and give up (error event, order left to reconciliation) after fill_timeout_s.
    fill_stream_wait_s: PositiveDecimal = Field(default=Decimal("2"), le=60)
    fill_timeout_s: PositiveDecimal = Field(default=Decimal("15"), le=600)

    @model_validator(mode="after")
    def _coherent(self) -> "RiskConfig":
        if self.max_position_usd > self.max_total_exposure_usd:
            raise ValueError("max_position_usd cannot exceed max_total_exposure_usd")
        if self.default_order_usd > self.max_position_usd:
            raise ValueError("default_order_usd cannot exceed max_position_usd: every default order would be blocked")
        if self.fill_stream_wait_s >= self.fill_timeout_s:
            raise ValueError("fill_stream_wait_s must be shorter than fill_timeout_s")
        return self


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # auto: pretty on a terminal, plain key=value otherwise; off: file only.
    console: Literal["auto", "pretty", "plain", "json", "off"] = "auto"
    file: str = "logs/node.jsonl"
    # The running node starts a new file once this one reaches file_max_mb, keeping the
    # newest file_backups old ones (node.jsonl.1 is the newest): a node that runs for months
    # must not fill its disk with log. 0: one file that grows without bound.
    file_max_mb: NonNegativeDecimal = Decimal("100")
    file_backups: int = Field(default=10, ge=1, le=1000)
    metrics_interval_s: PositiveDecimal = Decimal("30")

    @property
    def file_max_bytes(self) -> int:
        return int(self.file_max_mb * 1024 * 1024)


class SupervisorConfig(_Section):
    check_interval_s: PositiveDecimal = Decimal("1")
    public_stale_after_s: PositiveDecimal = Decimal("30")
    private_stale_after_s: PositiveDecimal = Decimal("60")
    # A child that leaves a heartbeat Ping unanswered this long is stuck and replaced.
    heartbeat_timeout_s: PositiveDecimal = Decimal("30")
    max_restarts: int = Field(default=5, ge=1)
    restart_window_s: PositiveDecimal = Decimal("60")
    restart_backoff_s: NonNegativeDecimal = Decimal("1")
    restart_backoff_max_s: PositiveDecimal = Decimal("30")
    # Past max_restarts within restart_window_s: trading goes no higher than this.
    escalate_to: Literal["REDUCING", "HALTED"] = "REDUCING"
    ask_timeout_s: PositiveDecimal = Decimal("5")


class StateConfig(_Section):
    # Closed bars kept in memory per (symbol, interval); one size for every key.
    bar_buffer_len: int = Field(default=1000, ge=1, le=1_000_000)


class DbWriterConfig(_Section):
    flush_max_bars: int = Field(default=500, ge=1)
    flush_interval_ms: int = Field(default=250, ge=1)
    # How long sync/gaps/heal wait for the history file before saying who holds it.
    lock_timeout_s: PositiveDecimal = Decimal("30")
    # How long one DbWriter flush waits for the file before it keeps the bars and retries later.
    lock_wait_ms: int = Field(default=200, ge=0, le=10_000)
    # Retries of a failed flush back off from flush_interval_ms up to this.
    retry_max_ms: int = Field(default=2000, ge=1)
    # At stop, keep trying to write what is held for this long (stays below shutdown.graceful_timeout_s).
    drain_timeout_s: PositiveDecimal = Decimal("8")
    # At start (with a venue source), refetch from each configured series' last stored bar to now;
    # a series with nothing stored starts this many days back (0: only series already stored).
    catch_up_days: int = Field(default=1, ge=0, le=3650)


class ExchangeConfig(_Section):
    """How the node talks to the venue. URLs default per venue (see infra.bybit)."""

    rest_url: str | None = None
    ws_public_url: str | None = None
    ws_private_url: str | None = None
    rest_timeout_s: PositiveDecimal = Decimal("10")
    recv_window_ms: int = Field(default=5000, ge=1000, le=60000)
    dcp_window_s: int = Field(default=10, ge=3, le=300)
    max_clock_skew_ms: int = Field(default=1000, ge=1)
    rest_connect_timeout_s: PositiveDecimal = Decimal("3")
    # Our own ceiling on Bybit's 600 requests per 5 s per IP (a breach is a 403 ban).
    ip_limit_per_5s: int = Field(default=500, ge=10, le=600)
    # How long every lane pauses after an HTTP 403 that does not say (Bybit: >= 10 min).
    ip_ban_pause_s: PositiveDecimal = Decimal("600")
    # Longest a request waits for the rate limiter before failing with RateLimited.
    lane_wait_s: PositiveDecimal = Decimal("10")
    # History paging (sync, heal, the start-up catch-up): kline requests on the wire at once.
    # Each is still admitted by the rate limiter's backfill lane; more helps against a distant venue.
    kline_requests_in_flight: int = Field(default=2, ge=1, le=8)
    # Reads, cancels and idempotent settings: attempts on transient errors, backoff cap.
    read_attempts: int = Field(default=4, ge=1, le=10)
    retry_max_wait_s: PositiveDecimal = Decimal("5")
    # After an order create without an answer: how long to look for it by orderLinkId.
    order_lookup_window_s: PositiveDecimal = Decimal("5")
    # true: an account without disconnect-cancel-all fails the preflight (else a warning).
    require_dcp: bool = False


class SimConfig(_Section):
    """The built-in venue. Its credentials are throwaway values: they guard nothing."""

    api_key: str = "sim-api-key"
    api_secret: str = "sim-api-secret"
    seed: int = 7
    port: int = Field(default=0, ge=0, le=65535)
    dcp_available: bool = True
    starting_balance_usdt: PositiveDecimal = Decimal("10000")
    # Pause before a WebSocket subscribe ack: pybit stores the req_id only after
    # send() returns, so an instant loopback ack can kill its socket.
    ws_ack_delay_ms: int = Field(default=30, ge=0, le=1000)
    # Bybit's IP limit: this many REST requests per 5 s, then HTTP 403 for ip_ban_s.
    ip_limit_per_5s: int = Field(default=600, ge=1)
    ip_ban_s: PositiveDecimal = Decimal("600")


class PanicConfig(_Section):
    """The Panic actor: how hard a close tries, how long a panic may take, how often to reconcile."""

    close_attempts: int = Field(default=5, ge=1, le=20)
    close_deadline_s: PositiveDecimal = Decimal("10")
    fill_timeout_s: PositiveDecimal = Decimal("5")
    deadline_s: PositiveDecimal = Decimal("30")
    verify_rounds: int = Field(default=3, ge=1, le=10)
    # Venue orders and positions against the live state; 0 switches the periodic pass off.
    reconcile_interval_s: NonNegativeDecimal = Decimal("60")
    snapshot_timeout_s: PositiveDecimal = Decimal("2")
    # The control directory (<data_dir>/run/<venue>.control/) is polled this often.
    control_poll_ms: int = Field(default=100, ge=10, le=5000)


class StrategyConfig(_Section):
    """THE EXAMPLE STRATEGY (a moving-average cross on closed 1-minute bars): a demonstration, not advice."""

    enabled: bool = False
    # It runs only on these venues even when enabled: an example never trades real money by accident.
    venues: tuple[Venue, ...] = (Venue.SIM,)
    # Empty: every configured symbol that follows the "1" interval.
    symbols: tuple[str, ...] = ()
    fast: int = Field(default=3, ge=1, le=500)
    slow: int = Field(default=8, ge=2, le=1000)
    order_usd: PositiveDecimal = Decimal("100")
    take_profit_pct: PositiveDecimal = Field(default=Decimal("1.0"), le=50)
    stop_loss_pct: PositiveDecimal = Field(default=Decimal("0.5"), le=50)
    poll_interval_s: PositiveDecimal = Decimal("2")

    @field_validator("slow")
    @classmethod
    def _slow_above_fast(cls, v: int, info: Any) -> int:
        fast = info.data.get("fast")
        if fast is not None and v <= fast:
            raise ValueError(f"slow ({v}) must be longer than fast ({fast})")
        return v
class PrivateWsConfig(_Section):
    """The private socket: auth first, subscribe after its answer, reseed over REST after every (re)connect."""

    # Longest wait for the `auth` answer (and then for the subscribe acks) on one connection.
    auth_timeout_s: PositiveDecimal = Decimal("10")
    # Validity of the auth signature; pybit's default of 1 s fails under clock skew (pybit#300).
    auth_expire_s: int = Field(default=10, ge=1, le=60)
    # Reconnects and failed reseeds back off from this, doubling, up to the max.
    reconnect_backoff_s: PositiveDecimal = Decimal("0.5")
    reconnect_backoff_max_s: PositiveDecimal = Decimal("30")
    # With no execution seen yet, the first reseed reads executions this many hours back.
    executions_lookback_h: PositiveDecimal = Field(default=Decimal("24"), le=24 * 30)


class MarketDataConfig(_Section):
    """Price reads for Risk and the Executor (DATA-023): the stream when fresh, else one REST call, cached."""

    # A value older than its field's TTL is not used (stream or REST cache); REST is asked instead.
    price_ttl_s: PositiveDecimal = Decimal("5")
    funding_ttl_s: PositiveDecimal = Decimal("60")


class ShutdownConfig(_Section):
    graceful_timeout_s: PositiveDecimal = Decimal("10")


class Credentials(BaseModel):
    """API credentials, read from the environment (or the simulator section)."""

    model_config = ConfigDict(frozen=True)
    api_key: SecretStr
    api_secret: SecretStr
    source: Literal["environment", "simulator"]

    def secret_values(self) -> tuple[str, ...]:
        return (self.api_key.get_secret_value(), self.api_secret.get_secret_value())


class NodeConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    venue: Venue = Venue.SIM
    trading_mode: TradingMode = TradingMode.PAPER
    # Real money needs this set explicitly (config, env or --i-mean-live).
    live_confirmed: bool = False
    data_dir: Path = Path("data")
    symbols: dict[str, SymbolConfig] = Field(
        default_factory=lambda: {"BTCUSDT": SymbolConfig(intervals=("1",))}, min_length=1
    )
    risk: RiskConfig = RiskConfig()
    log: LogConfig = LogConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    state: StateConfig = StateConfig()
    db_writer: DbWriterConfig = DbWriterConfig()
    exchange: ExchangeConfig = ExchangeConfig()
    sim: SimConfig = SimConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    panic: PanicConfig = PanicConfig()
    strategy: StrategyConfig = StrategyConfig()
    private_ws: PrivateWsConfig = PrivateWsConfig()
    market_data: MarketDataConfig = MarketDataConfig()

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):  # noqa: D102
        # The YAML arrives as init kwargs; the environment must beat it.
        return (env_settings, init_settings)

    @field_validator("symbols")
    @classmethod
    def _symbol_names(cls, v: dict[str, SymbolConfig]) -> dict[str, SymbolConfig]:
        bad = [s for s in v if not _SYMBOL_RE.match(s)]
        if bad:
            raise ValueError(f"not a USDT perpetual symbol (e.g. BTCUSDT): {', '.join(bad)}")
        return v

    @property
    def db_path(self) -> Path:
        """One DuckDB file per venue: data of different venues never mix."""
        return self.data_dir / f"{self.venue.value}.duckdb"

    @property
    def log_path(self) -> Path:
        return self.data_dir / self.log.file


class AppConfig(BaseModel):
    """What the rest of the program receives: settings plus credentials."""

    model_config = ConfigDict(frozen=True)
    node: NodeConfig
    credentials: Credentials | None
    source: str

    def secret_values(self) -> tuple[str, ...]:
        return self.credentials.secret_values() if self.credentials else ()


class ConfigError(Exception):
    """The configuration is unusable. `problems` lists (field, reason) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(f"{f}: {r}" for f, r in problems))

    def render(self) -> str:
        from_env = any(field.startswith("$") for field, _ in self.problems)
        where = f"{self.source} and the environment" if from_env else self.source
        lines = [f"configuration error in {where}:"]
        lines += [f"  - {field}: {reason}" for field, reason in self.problems]
        return "\n".join(lines)


def load_config(path: str | os.PathLike[str] = "config.yaml") -> AppConfig:
    """Read, override from os.environ and validate; raise ConfigError naming every bad field.

    A field set in the environment is reported under its variable
    (`$BYBIT_NODE_RISK__MAX_LEVERAGE`), one from the file under its dotted
    name. `BYBIT_NODE_SYMBOLS` replaces the file's `symbols` as a whole: the
    node follows exactly the symbols the variable lists.
    """
    env = os.environ
    source = str(path)
    raw = _read_yaml(Path(path))
    if _env_name(env, "symbols") is not None:
        raw = {k: v for k, v in raw.items() if k != "symbols"}
    problems = _secrets_in_yaml(raw) + _unknown_env_overrides(env)
    # Fields already explained above must not be reported again as pydantic's "unknown setting".
    explained = {f.lstrip("$").removeprefix(ENV_PREFIX).lower().replace(ENV_NESTED, ".") for f, _ in problems} | {
        f for f, _ in problems
    }
    node: NodeConfig | None = None
    try:
        node = NodeConfig(**raw)
    except SettingsError as exc:
        problems.append(_unparsable_env(exc, env))
    except ValidationError as exc:
        errors = exc.errors()
        failed_locs = [tuple(err.get("loc", ())) for err in errors]
        for err in errors:
            field = _field_name(err)
            if err.get("type") == "extra_forbidden" and field.lower() in explained:
                continue
            loc = tuple(err.get("loc", ()))
            if err.get("type") == "too_short" and any(len(o) > len(loc) and o[: len(loc)] == loc for o in failed_locs):
                continue  # "at least 1 item" only because its items were refused: said already
            problems.append((_labelled(field, err.get("loc", ()), env), _reason(err)))
    if node is not None:
        problems += [(_labelled(f, f.split("."), env), r)
                     for f, r in _mode_matches_venue(node) + _live_confirmation(node) + _strategy_symbols(node)]
    credentials = None
    if node is not None:
        credentials, cred_problems = _credentials(node, env)
        problems += cred_problems
    if problems:
        raise ConfigError(source, problems)
    assert node is not None
    return AppConfig(node=node, credentials=credentials, source=source)


def _env_name(env: Mapping[str, str], *loc: Any) -> str | None:
    """The variable that sets the field at `loc` (or one of its parents), if the environment has one."""
    names = {n.upper(): n for n in env}
    parts = [str(p).upper() for p in loc]
    for depth in range(len(parts), 0, -1):
        name = ENV_PREFIX + ENV_NESTED.join(parts[:depth])
        if name in names:
            return names[name]
    return None


def _labelled(field: str, loc: Any, env: Mapping[str, str]) -> str:
    name = _env_name(env, *loc)
    return f"${name} ({field})" if name else field


def _unparsable_env(exc: SettingsError, env: Mapping[str, str]) -> tuple[str, str]:
    """pydantic-settings raises (not collects) when a variable of a nested field is not JSON."""
    match = re.search(r'field "([^"]+)"', str(exc))
    field = match.group(1) if match else "?"
    name = _env_name(env, field) or f"{ENV_PREFIX}{field.upper()}"
    cause = exc.__cause__ or exc.__context__
    why = f": {cause}" if cause is not None else ""
    return (f"${name}", f"not valid JSON{why}; e.g. {name}='{{\"BTCUSDT\": {{\"intervals\": [\"1\"]}}}}'"
            if field == "symbols" else f"not valid JSON{why}")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [("<file>", "no such file")]) from None
    except OSError as exc:
        raise ConfigError(str(path), [("<file>", f"cannot read: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), [(where, f"not valid YAML: {problem}")]) from None
    if data is None:
        # Not a silent run on built-in defaults, which differ from the shipped config.yaml.
        raise ConfigError(str(path), [(
            "<file>", "the file is empty (no settings); copy the repository's config.yaml and edit it, "
            "or point --config at a file with at least one setting"
        )])
    if not isinstance(data, dict):
        raise ConfigError(str(path), [("<file>", "the top level must be a mapping of settings")])
    return data


def _secrets_in_yaml(raw: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    found = []
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if name.startswith("sim."):
            continue  # throwaway simulator credentials are allowed
        if isinstance(value, Mapping):
            found += _secrets_in_yaml(value, f"{name}.")
        elif _SECRET_KEY_RE.search(str(key)):
            found.append(
                (name, f"secrets are never read from a file; set {API_KEY_ENV} and {API_SECRET_ENV} in the environment")
            )
    return found


def _unknown_env_overrides(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """pydantic-settings ignores BYBIT_NODE_* variables it cannot place; a typo must not pass silently."""
    problems = []
    for name in env:
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX):].lower().split(ENV_NESTED)
        model: Any = NodeConfig
        for part in path:
            fields = getattr(model, "model_fields", None)
            if fields is None:
                break  # a dict-valued field (symbols): pydantic validates the content
            if part not in fields:
                problems.append((f"${name}", "unknown setting; no such field in the configuration"))
                break
            model = fields[part].annotation
    return problems


def mode_problems(venue: Venue, mode: TradingMode) -> list[tuple[str, str]]:
    """Paper money only on sim/testnet/demo, real money only on mainnet."""
    wanted = VENUE_MODE[venue]
    if mode is wanted:
        return []
    return [(
        "trading_mode",
        f"{mode.value!r} is not allowed on venue {venue.value!r}, which takes only {wanted.value!r}",
    )]


def _mode_matches_venue(node: NodeConfig) -> list[tuple[str, str]]:
    return mode_problems(node.venue, node.trading_mode)


def _strategy_symbols(node: NodeConfig) -> list[tuple[str, str]]:
    """The example strategy trades on closed 1-minute bars: its symbols must follow that interval."""
    if not node.strategy.enabled:
        return []
    bad = [s for s in node.strategy.symbols if s not in node.symbols or "1" not in node.symbols[s].intervals]
    return [("strategy.symbols", f"{s} is not a configured symbol with interval \"1\"") for s in bad]


def _live_confirmation(node: NodeConfig) -> list[tuple[str, str]]:
    if node.trading_mode is TradingMode.LIVE and not node.live_confirmed:
        return [("live_confirmed", "live trading needs live_confirmed: true (or --i-mean-live); refusing real money by default")]
    return []


def _credentials(node: NodeConfig, env: Mapping[str, str]) -> tuple[Credentials | None, list[tuple[str, str]]]:
    if node.venue is Venue.SIM:
        # The simulator always gets its own throwaway pair: a real key exported
        # for another venue is never sent anywhere, not even to loopback.
        return (
            Credentials(api_key=SecretStr(node.sim.api_key), api_secret=SecretStr(node.sim.api_secret), source="simulator"),
            [],
        )
    key, secret = env.get(API_KEY_ENV, "").strip(), env.get(API_SECRET_ENV, "").strip()
    if key and secret:
        return Credentials(api_key=SecretStr(key), api_secret=SecretStr(secret), source="environment"), []
    missing = [n for n, v in ((API_KEY_ENV, key), (API_SECRET_ENV, secret)) if not v]
    return None, [(f"${n}", f"venue {node.venue.value!r} needs API credentials in the environment") for n in missing]


def _field_name(err: Mapping[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ())]
    return ".".join(loc) if loc else "<top level>"


def _reason(err: Mapping[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    if err.get("type") == "extra_forbidden":
        return "unknown setting (a typo?)"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if "input" in err and err.get("type") not in ("missing", "model_type", "dict_type"):
        value = err["input"]
        if not isinstance(value, (dict, list)):
            msg += f" (got {value!r})"
    return msg
