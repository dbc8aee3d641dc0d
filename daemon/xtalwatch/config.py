"""The one validated configuration model, and how it is loaded.

Precedence, highest first: command-line flags, ``XTALWATCH_*`` environment variables
(nested keys joined by ``__``, e.g. ``XTALWATCH_WATCH__SETTLE_SECONDS=5``), the YAML file,
then the defaults written here. Every section forbids unknown keys, so a typo is an error
that names the file and the key path instead of a setting silently ignored.
"""

from __future__ import annotations

import json
import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

__all__ = [
    "ConfigError",
    "Settings",
    "load_settings",
]

# The YAML file's values, handed to the settings source for the duration of one load.
_YAML_DATA: ContextVar[dict[str, Any] | None] = ContextVar("_YAML_DATA", default=None)

IMAGE_EXTENSIONS = ["jpg", "jpeg", "png", "tif", "tiff", "bmp"]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are re-checked on assignment, and no
    float may be inf or nan (an interval of ``inf`` would pass ``> 0`` and then never fire)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class WatchConfig(Section):
    dir: Path | None = Field(None, description="The imager's output folder; read only, never written to.")
    mode: Literal["native", "poll"] = Field(
        "native", description="native: inotify/FSEvents; poll: stat the tree, for network shares."
    )
    settle_seconds: float = Field(2.0, gt=0, description="A file is complete once its size and mtime are stable this long.")
    poll_interval_seconds: float = Field(1.0, gt=0, description="How often the polling observer stats the tree.")
    rescan_interval_seconds: float = Field(
        300.0, ge=0, description="Full reconciliation scan period; catches what inotify overflow lost. 0 disables."
    )
    observer_restart_seconds: float = Field(5.0, gt=0, description="Wait before restarting an observer that died.")
    ignore_globs: list[str] = Field(
        default_factory=lambda: [".*", "*~", "*.tmp", "*.part", "*.partial", "*.crdownload", "~$*", "Thumbs.db", "*.db"],
        description="Names (not paths) matching any of these are never taken: temporary and hidden files.",
    )
    extensions: list[str] = Field(
        default_factory=lambda: list(IMAGE_EXTENSIONS),
        description="File extensions (case-insensitive) that are candidate images; others are recorded as rejected.",
    )

    @field_validator("dir")
    @classmethod
    def _dir_must_exist(cls, value: Path | None) -> Path | None:
        try:
            is_dir = value is None or value.is_dir()
        except OSError as exc:  # a name too long, a permission problem above it
            raise ValueError(f"cannot look at {value}: {exc.strerror or exc}") from None
        if not is_dir:
            raise ValueError(f"folder does not exist: {value}")
        return value

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, value: list[str]) -> list[str]:
        return [v.lower().lstrip(".") for v in value]


class StateConfig(Section):
    dir: Path = Field(Path("/var/lib/xtalwatch"), description="Holds the catalogue and derived files, nothing else.")


class CatalogueConfig(Section):
    url: str | None = Field(
        None,
        description="Where the catalogue lives: unset for the SQLite file in state.dir (one imager), or "
                    "postgresql://user@host/db for a site's shared catalogue (several imagers and hosts).",
    )
    pool_size: int = Field(8, ge=2, le=200, description="PostgreSQL connections this process may hold at most.")
    backup_interval_hours: float = Field(
        24.0, ge=0, description="Online backup of the catalogue into <state>/backups/ this often; 0 disables."
    )
    backup_keep: int = Field(7, ge=1, description="Scheduled backups kept; the oldest beyond this are deleted.")

    @field_validator("url")
    @classmethod
    def _postgresql_or_unset(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL, or unset for the SQLite file in state.dir")
        return value


class SiteConfig(Section):
    """Who this process is on a site where several imagers and hosts share one PostgreSQL catalogue."""

    imager: str = Field(
        "imager", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Name of the instrument this host watches; a label on every metric, a filter in status and the review app.",
    )
    agent: str | None = Field(
        None, min_length=1, max_length=128,
        description="Name of this process in the work leases; unset: <hostname>-<imager>.",
    )
    lease_seconds: float = Field(
        30.0, gt=0, description="Work claimed by a process that has not renewed its lease this long is taken over.",
    )
    models_dir: Path | None = Field(
        None, description="The site's model registry on storage every host mounts (state.dir/models links to it); "
                          "unset: this host's own registry in state.dir/models.",
    )


class IngestConfig(Section):
    workers: int = Field(0, ge=0, le=1024, description="Preprocessing worker processes; 0 means one per core.")
    max_pixels: int = Field(
        120_000_000, gt=0, description="Frames declaring more pixels than this are refused before decoding."
    )
    max_file_bytes: int = Field(500_000_000, gt=0, description="Files larger than this are refused unread.")
    queue_size: int = Field(10_000, gt=0, description="Completed files waiting for ingest before the watcher waits.")


class RegexAdapterConfig(Section):
    name: str = Field(..., min_length=1, description="Short name shown in the catalogue.")
    pattern: str = Field(..., description="Python regex matched against the path relative to the watch folder.")
    imaging: Literal["visible", "uv", "other"] = "visible"

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str) -> str:
        import re

        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        missing = {"plate", "well"} - set(compiled.groupindex)
        if missing:
            raise ValueError(f"pattern needs the named groups {sorted(missing)}")
        return value


class AdaptersConfig(Section):
    order: list[str] = Field(
        default_factory=lambda: ["rockmaker", "minstrel", "export"],
        description="Adapters tried in this order; the first that understands a path wins.",
    )
    regex: list[RegexAdapterConfig] = Field(default_factory=list, description="Generic adapters tried first.")
    plate_wells: Literal[24, 48, 96, 384, 1536] = Field(
        96, description="Plate format for adapters that number wells 1..N (Rock Maker's wellNum)."
    )


class PluginsConfig(Section):
    dirs: list[Path] = Field(
        default_factory=list, description="Folders whose *.py files may define plugins (a module-level PLUGINS list)."
    )


class PreprocessConfig(Section):
    image_size: int = Field(96, ge=16, le=1024, description="Side of the square the model sees, in pixels.")
    channels: Literal[1, 3] = Field(3, description="Channels of the model input: 1 grey or 3 BGR.")
    margin_fraction: float = Field(0.1, ge=0, le=1, description="Margin added around the drop box, as a fraction of its size.")
    clahe_clip_limit: float = Field(2.0, gt=0, description="CLAHE contrast limit.")
    clahe_tile_grid: int = Field(8, ge=1, description="CLAHE tiles per side.")
    keep_full_crop: bool = Field(True, description="Keep the full-resolution drop crop on disk for people to look at.")
    too_dark_mean: float = Field(25.0, ge=0, le=255, description="Mean brightness (0-255) below which a frame is too dark.")
    overexposed_fraction: float = Field(0.25, ge=0, le=1, description="Fraction of saturated pixels above which a frame is overexposed.")
    out_of_focus_laplacian: float = Field(
        15.0, ge=0, description="Variance of the Laplacian of the drop crop (at model size) below which it is out of focus; real in-focus frames measure 50-2200."
    )
    low_contrast_std: float = Field(
        2.0, ge=0, description="Grey-level standard deviation (0-255) of the drop crop below which contrast is too low; a faint clear drop measures about 4."
    )


class MetricsConfig(Section):
    host: str = Field("127.0.0.1", description="Bind address of the HTTP server; loopback by default.")
    port: int = Field(9108, ge=0, le=65535, description="Port for /metrics (0 picks a free one).")
    enabled: bool = Field(True, description="Serve /metrics, /healthz and /api/status over HTTP.")
    api_token: str | None = Field(
        None, description="Bearer token that lets a non-loopback client read /api/status (which shows paths); "
        "set it with XTALWATCH_METRICS__API_TOKEN, not in this file. null: loopback clients only."
    )


class WebConfig(Section):
    """The review app served beside ``/metrics`` (same host and port, ``metrics.host``/``metrics.port``)."""

    token_file: Path | None = Field(
        None, description="File holding the token every write (label, promote, rollback) needs when the app is "
        "bound to a non-loopback address; null: such an app is read-only. Loopback binds need no token.")
    public_url: str | None = Field(
        None, pattern=r"^https?://", description="Base URL people reach the app at, used in alert links; "
        "null: http://<metrics.host>:<metrics.port>.")
    thumbnail_px: int = Field(160, ge=32, le=1024, description="Side of the cached thumbnails, in pixels.")
    frame_px: int = Field(640, ge=64, le=4096, description="Longest side of the cached full-frame views, in pixels.")
    review_batch: int = Field(50, ge=1, le=1000, description="Images the review queue offers at a time.")
    refit_debounce_seconds: float = Field(
        0.5, ge=0, le=60, description="After a label, wait this long for more before re-fitting the head (seconds).")
    labeller_default: str = Field("reviewer", min_length=1, description="Name stored with a label when the browser gives none.")


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Lowest level logged to stderr.")


class ServiceConfig(Section):
    shutdown_timeout_seconds: float = Field(30.0, gt=0, description="SIGTERM grace before work in flight is abandoned.")


class TrainConfig(Section):
    """SimCLR training knobs (``xtalwatch train``); defaults follow the SimCLR paper unless noted."""

    image_size: int = Field(64, ge=16, le=512, description="Side of the square crop the encoder sees, in pixels.")
    batch_size: int = Field(256, ge=2, description="Images per optimiser step across all processes (each gives 2 views).")
    epochs: int = Field(100, ge=1, description="Passes over the dataset; ignored when max_steps is set.")
    max_steps: int | None = Field(None, ge=1, description="Optimiser steps to run; overrides epochs when set.")
    optimizer: Literal["adamw", "lars"] = Field("adamw", description="adamw for small batches; lars for batches of 1024+.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate after warm-up (AdamW ~1e-3; LARS ~0.3 x batch/256).")
    weight_decay: float = Field(1e-4, ge=0, description="Decoupled weight decay; not applied to biases and BatchNorm.")
    momentum: float = Field(0.9, ge=0, lt=1, description="LARS momentum (AdamW uses its own betas).")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="Fraction of the steps spent on the linear warm-up.")
    temperature: float = Field(0.5, gt=0, description="NT-Xent temperature T (dimensionless).")
    head: Literal["simclr", "simclrv2"] = Field("simclr", description="simclr: 512-512-128 MLP; simclrv2: 3 layers.")
    projection_dim: int = Field(128, ge=8, description="Output size of the projection head.")
    small_stem: bool | Literal["auto"] = Field(
        "auto", description="true: 3x3 stride-1 stem without max-pool (more compute per image); auto: the standard "
        "stem, chosen by measured accuracy per CPU-minute (docs/simclr.md, Speed)."
    )
    imagenet_weights: Path | None = Field(
        None, description="Local torchvision ResNet-18 state dict to start from; never downloaded. null: random init."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available, else cpu.")
    amp: bool = Field(True, description="bf16 autocast on CUDA; ignored on CPU, where it would be slower.")
    channels_last: bool = Field(True, description="NHWC memory layout for the convolutions (faster with AMP on GPU).")
    compile: bool = Field(False, description="torch.compile the model; slow first step, faster after.")
    sync_bn: bool = Field(False, description="Under torchrun, BatchNorm statistics over the global batch.")
    crop_scale_min: float = Field(
        0.35, gt=0, le=1, description="Smallest random-resized-crop area, as a fraction of the drop crop (keeps crystals in both views)."
    )
    crop_scale_max: float = Field(1.0, gt=0, le=1, description="Largest crop area, as a fraction of the drop crop.")
    flip_rotate: bool = Field(True, description="Random flips and 90-degree rotations (a crystal has no up).")
    color_jitter: float = Field(
        0.8, ge=0, le=2, description="Jitter strength s: brightness, contrast, saturation 0.8*s and hue 0.2*s (SimCLR)."
    )
    color_jitter_prob: float = Field(0.8, ge=0, le=1, description="Probability that a view is colour-jittered.")
    grayscale_prob: float = Field(0.2, ge=0, le=1, description="Probability that a view is turned grey.")
    blur_prob: float = Field(0.5, ge=0, le=1, description="Probability of a Gaussian blur.")
    blur_sigma_max: float = Field(2.0, gt=0, description="Largest blur sigma, in pixels at 224 px (scaled to image_size).")
    noise_std: float = Field(0.0, ge=0, le=1, description="Sensor noise std on the 0-1 intensity scale; 0 turns it off.")
    gradient: float = Field(
        0.25, ge=0, le=1, description="Polariser-like colour ramp: each channel scaled by up to 1 +/- this across the view."
    )
    gradient_prob: float = Field(0.5, ge=0, le=1, description="Probability that a view gets the colour ramp.")
    gamma_min: float = Field(0.6, gt=0, description="Smallest gamma of the random gamma curve (brightens faint drops).")
    gamma_max: float = Field(1.6, gt=0, description="Largest gamma of the random gamma curve (darkens, like dim UV frames).")
    gamma_prob: float = Field(0.5, ge=0, le=1, description="Probability that a view gets a random gamma curve.")
    max_memory_gb: float | None = Field(
        2.0, gt=0, description="On CPU, the resident memory (GiB) a SimCLR step aims to stay under: a batch whose activations "
        "would not fit what is left runs in micro-batches with the same loss and gradient (GradCache, docs/simclr.md "
        "'Memory'). null: never split. Ignored on CUDA, where an out-of-memory error halves the batch."
    )
    checkpoint_every_steps: int = Field(200, ge=1, description="Steps between atomic checkpoints.")
    seed: int = Field(0, description="Seed for initialisation, data order and augmentations.")
    min_images: int = Field(500, ge=1, description="Usable images needed before training starts.")
    workers: int = Field(0, ge=0, description="Threads decoding images into the crop cache (OpenCV releases the GIL); 0: one per core.")
    log_every_steps: int = Field(10, ge=1, description="Steps between progress-bar and log updates.")

    @model_validator(mode="after")
    def _scales_ordered(self) -> TrainConfig:
        if self.crop_scale_min > self.crop_scale_max:
            raise ValueError("crop_scale_min must be <= crop_scale_max")
        if self.gamma_min > self.gamma_max:
            raise ValueError("gamma_min must be <= gamma_max")
        return self


_BUILTIN_SINKS = ("log", "webhook", "email", "command")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _SinkBase(Section):
    name: str | None = Field(
        None, min_length=1, description="Label of this sink in logs and metrics (the sink label); default: its type."
    )


class LogSinkConfig(_SinkBase):
    type: Literal["log"] = Field("log", description="One log line per alert (the default sink).")


class WebhookSinkConfig(_SinkBase):
    type: Literal["webhook"] = Field("webhook", description="JSON POST; Slack-compatible top-level text.")
    url: str = Field(..., pattern=r"^https?://", description="Where to POST, http:// or https://.")
    timeout_seconds: float = Field(10.0, gt=0, description="Connect and read timeout of one POST, in seconds.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers sent as they are.")
    headers_env: dict[str, str] = Field(
        default_factory=dict, description="Header name -> environment variable holding its value (tokens stay out of the file)."
    )


class EmailSinkConfig(_SinkBase):
    type: Literal["email"] = Field("email", description="One mail per alert over SMTP.")
    host: str = Field(..., min_length=1, description="SMTP server host name.")
    port: int = Field(25, ge=1, le=65535, description="SMTP port (25, or 587 with starttls).")
    from_address: str = Field(..., min_length=3, description="Envelope and header From address.")
    to: list[str] = Field(..., min_length=1, description="Recipient addresses.")
    starttls: bool = Field(False, description="Upgrade the connection with STARTTLS before logging in.")
    username_env: str | None = Field(None, description="Environment variable holding the SMTP user name; null: no login.")
    password_env: str | None = Field(None, description="Environment variable holding the SMTP password.")
    timeout_seconds: float = Field(30.0, gt=0, description="SMTP socket timeout, in seconds.")


class CommandSinkConfig(_SinkBase):
    type: Literal["command"] = Field("command", description="Runs a program: alert JSON on stdin, XTALWATCH_ALERT_* env.")
    argv: list[str] = Field(..., min_length=1, description="Program and arguments, run without a shell.")
    timeout_seconds: float = Field(30.0, gt=0, description="The program is killed after this many seconds.")


class PluginSinkConfig(_SinkBase):
    type: str = Field(..., min_length=1, description="A sink plugin's name or a module:attr reference.")
    options: dict[str, Any] = Field(default_factory=dict, description="Passed to the plugin as they are.")


def _sink_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in _BUILTIN_SINKS else "plugin"


SinkConfig = Annotated[
    Annotated[LogSinkConfig, Tag("log")]
    | Annotated[WebhookSinkConfig, Tag("webhook")]
    | Annotated[EmailSinkConfig, Tag("email")]
    | Annotated[CommandSinkConfig, Tag("command")]
    | Annotated[PluginSinkConfig, Tag("plugin")],
    Discriminator(_sink_tag),
]


class AlertsConfig(Section):
    """Alerts: where they go, how often, and the thresholds of the detectors that raise them."""

    enabled: bool = Field(True, description="Send alerts at all; events are stored either way.")
    sinks: list[SinkConfig] = Field(
        default_factory=list,
        description="Alert sinks, each {type: log|webhook|email|command|<plugin>|module:attr, ...}; empty: one log sink.",
    )
    dedupe_window_seconds: float = Field(
        3600.0, ge=0, description="An alert with the same dedupe key within this many seconds is sent once."
    )
    rate_per_minute: float = Field(10.0, gt=0, description="Alerts per minute each sink may send on average (token refill).")
    burst: int = Field(20, ge=1, description="Alerts a sink may send at once before the rate applies (bucket size).")
    queue_size: int = Field(1000, ge=1, description="Alerts waiting per sink; beyond this new ones are dropped and counted failed.")
    retry_attempts: int = Field(5, ge=1, description="Delivery attempts per alert and sink before it counts as failed.")
    retry_initial_seconds: float = Field(1.0, gt=0, description="Wait before the first retry; doubles after each failure.")
    retry_max_seconds: float = Field(300.0, gt=0, description="Longest wait between retries, in seconds.")
    hit_min_confidence: float = Field(
        0.6, ge=0, le=1, description="A call is reliable (can make a well's outcome and a hit) from this confidence up."
    )
    stalled_after_seconds: float = Field(
        7200.0, gt=0, description="Imager stalled: this many seconds of expected hours without a new image."
    )
    expected_hours: str = Field(
        "07:00-19:00", description="Local hours the imager is expected to write, HH:MM-HH:MM (may wrap past midnight)."
    )
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: list(_WEEKDAYS[:5]), description="Days (of the window's start) the imager is expected to write."
    )
    disk_low_bytes: int = Field(5_000_000_000, ge=0, description="Disk low below this many free bytes in the state folder; 0 disables.")
    disk_low_fraction: float = Field(0.05, ge=0, le=1, description="Disk low below this free fraction of the state disk; 0 disables.")
    drift_threshold: float = Field(
        0.2, gt=0, le=2, description="Drift alert when 1 - cosine(training mean, recent mean embedding) exceeds this."
    )
    drift_window_images: int = Field(500, ge=1, description="Newest images whose mean embedding is compared for drift.")

    @field_validator("expected_hours")
    @classmethod
    def _hours_parse(cls, value: str) -> str:
        import re

        match = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", value.strip())
        if match is None:
            raise ValueError("must look like 07:00-19:00")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2 != 0) or (h1, m1) == (h2, m2):
            raise ValueError("must be two different times of day, HH:MM-HH:MM (24:00 allowed as the end)")
        return value.strip()

    @model_validator(mode="after")
    def _names_unique(self) -> AlertsConfig:
        names = [s.name or s.type for s in self.sinks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"two sinks named {', '.join(twice)}: give each a distinct name")
        return self


class RetrainConfig(Section):
    """Scheduled retraining in a child process, the promotion gate and the model registry."""

    enabled: bool = Field(True, description="Retrain on the schedule below; false: only `xtalwatch train --now`.")
    auto_first_training: bool = Field(
        True, description="Start the first training as soon as train.min_images usable images exist; "
                          "false: wait for the schedule or `xtalwatch train --now`.")
    schedule: str = Field(
        "0 2 * * *", description="Cron line (minute hour day month weekday), in the host's local time zone; nightly 02:00."
    )
    interval_hours: float | None = Field(
        None, gt=0, description="Retrain every this many hours instead of the cron schedule; null: use the schedule."
    )
    misfire_grace_hours: float = Field(
        6.0, gt=0, description="A run missed (service down, or busy) still starts if less than this many hours late."
    )
    warm_start: bool = Field(
        True, description="Start from the serving model's encoder (when its image size matches); false: from scratch."
    )
    nice: int = Field(10, ge=0, le=19, description="CPU niceness added to the training child process (0-19).")
    gate_margin: float = Field(
        0.02, ge=0, le=1, description="Largest drop in the serving head's hold-out accuracy (fraction, 0-1) a new model may show."
    )
    collapse_std_min: float = Field(
        0.001, ge=0, description="Smallest mean per-dimension std of L2-normalised features across images; below it the "
        "model has collapsed (a random-init encoder measures about 0.003, a fully spread 512-d one about 0.044)."
    )
    holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="Fraction of labelled images held out (chosen by content hash, stable) to score models."
    )
    reclassify: Literal["recent", "all", "none"] = Field(
        "recent", description="After a swap, re-classify images of the last recent_days (recent), every image, or none."
    )
    recent_days: float = Field(7.0, gt=0, description="How far back 'recent' re-classification reaches, in days.")
    keep_models: int = Field(
        10, ge=2, description="Model folders kept in the registry; the oldest beyond this are deleted (never current or its predecessor)."
    )
    timeout_hours: float = Field(12.0, gt=0, description="A training child running longer than this many hours is stopped.")

    @field_validator("schedule")
    @classmethod
    def _cron_parses(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"not a valid cron line (minute hour day month weekday): {exc}") from exc
        return value


_MARCO_CLASSES = ["clear", "precipitate", "crystals", "other"]
_CRYSTAL_HABITS = ["needles:crystals", "plates:crystals", "prisms:crystals", "microcrystals:crystals"]


class ClassifyConfig(Section):
    """Classes, heads and the confidence threshold (``xtalwatch classify``, ``labels``, ``evaluate``)."""

    classes: list[str] = Field(
        default_factory=lambda: list(_MARCO_CLASSES),
        description="Outcome classes, in model order (MARCO's by default); labels outside it are errors.")
    subclasses: list[str] = Field(
        default_factory=lambda: list(_CRYSTAL_HABITS),
        description="Finer labels as 'fine:class' (crystal habits -> crystals); labels keep the fine name.")
    knn_k: int = Field(20, ge=1, description="Neighbours that vote in the kNN head, served and gated (count).")
    knn_temperature: float = Field(0.07, gt=0, description="kNN vote weight exp(cosine / T); T dimensionless.")
    uncertain_below: float = Field(
        0.6, ge=0, le=1, description="Calibrated top-class probability below which an image is flagged 'uncertain'.")
    head: Literal["auto", "linear", "knn", "finetuned"] = Field(
        "auto", description="Head the serving model uses: auto picks, on held-out labels, among linear, knn and a "
        "SimCLRv2 fine-tune (the cheaper on a tie; learn/heads/select.py); linear, knn or finetuned forces one.")
    finetune_min_labels: int = Field(
        200, ge=2, description="Labels needed before auto also fine-tunes the encoder (count); below it only linear "
        "and knn compete (a hold-out of under ~40 labels cannot tell a fine-tune from a probe).")
    finetune_steps: int = Field(
        200, ge=1, description="Fine-tuning optimiser steps of 64 crops (count); CPU minutes grow with it and the crop size.")
    finetune_lr: float = Field(3e-4, gt=0, description="Fine-tuning AdamW learning rate (encoder and head alike).")
    outcome_order: list[str] = Field(
        default_factory=lambda: ["clear", "other", "precipitate", "crystals"],
        description="Classes from weakest to strongest: a well's outcome is its strongest reliable call. "
        "Classes left out rank with the weakest.")
    crystal_classes: list[str] = Field(
        default_factory=lambda: ["crystals"],
        description="Classes that are crystals: a well moving into one of them from any other is a hit. With "
        "classes of your own, set this and outcome_order (names not in classes are dropped from the defaults).")

    @property
    def subclass_of(self) -> dict[str, str]:
        """``subclasses`` as a mapping, fine label -> class."""
        return dict(item.split(":", 1) for item in self.subclasses)

    def class_of(self, label: str) -> str | None:
        """The class ``label`` counts as: itself if it is a class, its class if it is a sub-class
        (``needles`` -> ``crystals``), None if it is neither. The one place labels are folded."""
        if label in self.classes:
            return label
        return self.subclass_of.get(label)

    @model_validator(mode="after")
    def _subclasses_map_into_classes(self) -> ClassifyConfig:
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise ValueError("classes must be a non-empty list without duplicates")
        bad = [s for s in self.subclasses if s.count(":") != 1 or s.split(":")[1] not in self.classes
               or s.split(":")[0] in self.classes]
        if bad:
            raise ValueError(f"subclasses must be 'fine:class' with class one of {self.classes}, got {bad}")
        for key in ("outcome_order", "crystal_classes"):
            unknown = [c for c in getattr(self, key) if c not in self.classes]
            if unknown and key not in self.model_fields_set:
                # A lab's own classes with the MARCO defaults left in place: keep what applies. (Written
                # through __dict__: assigning would validate the model again from inside its validator.)
                self.__dict__[key] = [c for c in getattr(self, key) if c in self.classes]
            elif unknown:
                raise ValueError(f"{key} names classes that are not in classes {self.classes}: {unknown}")
        return self


class _YamlSource(PydanticBaseSettingsSource):
    """Values read from the YAML file; ranked below the environment and the command line."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]):
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Settings(BaseSettings):
    """Everything xtalwatch can be told, in one validated model."""

    model_config = SettingsConfigDict(
        env_prefix="XTALWATCH_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    watch: WatchConfig = Field(default_factory=WatchConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    catalogue: CatalogueConfig = Field(default_factory=CatalogueConfig)
    site: SiteConfig = Field(default_factory=SiteConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    adapters: AdaptersConfig = Field(default_factory=AdaptersConfig)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls, _YAML_DATA.get() or {}))

    @model_validator(mode="after")
    def _state_is_not_watched(self) -> Settings:
        if self.watch.dir is not None:
            try:
                watched, state = self.watch.dir.resolve(), self.state.dir.resolve()
            except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
                raise ValueError(f"cannot resolve state.dir or watch.dir: {exc}") from None
            if state == watched or watched in state.parents:
                raise ValueError("state.dir must not be inside watch.dir: the imager's folder is never written to")
        return self


class ConfigError(Exception):
    """A configuration problem, already worded for a person: ``file: key.path: message``."""


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        msg = msg.removeprefix("Value error, ")
        if err["type"] == "finite_number":
            msg = "must be a finite number (not inf or nan)"
        # pydantic says "Input should be greater than 0"; a person reading a config wants "must be > 0".
        for long, short in (("Input should be greater than or equal to", "must be >="),
                            ("Input should be greater than", "must be >"),
                            ("Input should be less than or equal to", "must be <="),
                            ("Input should be less than", "must be <"),
                            ("Input should be", "must be")):
            msg = msg.replace(long, short)
        lines.append(_one_line(f"{source}: {loc}: {msg}"))
    return "\n".join(lines)


def _one_line(text: str) -> str:
    """``text`` on one line: a key or value from the file may itself hold line breaks."""
    return " ".join(text.split("\n")).replace("\r", " ")


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (PyYAML keeps the last, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            try:
                seen = key in first
            except TypeError:  # an unhashable key: the base class says so
                continue
            if seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {first[key]})", key_node.start_mark)
            first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a config file into a dict, with a one-line error for an unreadable, binary, empty or
    malformed file, or a key given twice."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(_one_line(f"{path}: {where}not valid YAML: {getattr(exc, 'problem', None) or exc}")) from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date like 2024-13-45
        raise ConfigError(_one_line(f"{path}: not valid YAML: {exc}")) from None
    if data is None:
        raise ConfigError(f"{path}: is empty: write at least watch.dir, or pass --watch")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, not {type(data).__name__}")
    odd = [key for key in data if not isinstance(key, str)]
    if odd:
        raise ConfigError(_one_line(f"{path}: {odd[0]!r}: unknown key (section names are words like watch, state)"))
    return data


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    node = target
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def _bad_json_variable(message: str) -> str:
    """The XTALWATCH_* variable whose JSON pydantic-settings could not parse (it names only the section)."""
    match = re.search(r'field "(\w+)"', message)
    prefix = f"XTALWATCH_{match.group(1)}".upper() if match else "XTALWATCH_"
    for name, value in sorted(os.environ.items()):
        if name.upper().startswith(prefix):
            try:
                json.loads(value)
            except (ValueError, RecursionError):
                if value.lstrip()[:1] in ("{", "["):
                    return name
    return prefix if match else "XTALWATCH_*"


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the settings from an optional YAML file, the environment and dotted-key overrides.

    ``overrides`` maps dotted keys (``"watch.dir"``) to values from the command line; ``None``
    values are skipped so that an absent flag does not mask the file.
    """
    yaml_data = read_yaml(path) if path is not None else {}
    cli: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(cli, dotted, value)
    source = str(path) if path is not None else "(defaults)"
    token = _YAML_DATA.set(yaml_data)
    try:
        return Settings(**cli)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None
    except SettingsError as exc:  # a section or list given as JSON in one XTALWATCH_* variable
        raise ConfigError(f"environment: {_bad_json_variable(str(exc))}: not valid JSON "
                          "(a section or list given in one variable must be JSON)") from None
    except RecursionError:  # JSON nested thousands deep in an environment variable
        raise ConfigError("environment: XTALWATCH_*: nested too deeply") from None
    finally:
        _YAML_DATA.reset(token)


def default_config_path() -> Path | None:
    """The config file used when none is named: $XTALWATCH_CONFIG, else /etc/xtalwatch/xtalwatch.yaml if present."""
    env = os.environ.get("XTALWATCH_CONFIG")
    if env:
        return Path(env)
    etc = Path("/etc/xtalwatch/xtalwatch.yaml")
    return etc if etc.is_file() else None
