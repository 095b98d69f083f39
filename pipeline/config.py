"""Typed configuration of a curation run.

One YAML file (see ``configs/curate.yaml``) validated by these pydantic models: an unknown or
mistyped key is an error that names it. Every field can be overridden on the command line with
``--set section.field=value`` (the value is parsed as YAML). Each stage's thresholds live in its
own class here, with the reasoning next to the default.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StageResources(Strict):
    """Ray resources of one stage. ``actors`` > 0 runs the stage in an actor pool of that
    (maximum) size, loading its model once per actor; 0 runs it as stateless tasks."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    actors: int = Field(1, ge=0)
    batch_size: int = Field(1, ge=1)


class ResourcesConfig(Strict):
    # Fractional CPUs by default: on a laptop or a 2-core CI box every stage's actor must fit
    # at once or Ray Data stalls; on a cluster raise these per stage.
    split: StageResources = StageResources(num_cpus=1.0, actors=0)
    speech: StageResources = StageResources(num_cpus=0.25, actors=1, batch_size=4)
    music: StageResources = StageResources(num_cpus=0.25, actors=1, batch_size=4)
    audio_embed: StageResources = StageResources(num_cpus=0.5, actors=1, batch_size=4)
    visual: StageResources = StageResources(num_cpus=0.5, actors=1, batch_size=2)
    llm: StageResources = StageResources(num_cpus=0.25, actors=1, batch_size=4)
    latents: StageResources = StageResources(num_cpus=0.5, actors=1, batch_size=2)
    finalize: StageResources = StageResources(num_cpus=0.25, actors=0, batch_size=4)


class RunConfig(Strict):
    ray_address: Optional[str] = None  # None: embedded local Ray; "auto" or ray://host:10001 for a cluster
    num_cpus: Optional[int] = None  # local Ray only; None = all cores
    strict_models: bool = False  # a missing model is an error before any work starts
    resume: bool = True  # skip sources and clips already committed in the output dir
    max_shard_bytes: int = Field(256 * 1024**2, ge=1024)
    max_shard_rows: int = Field(2000, ge=1)
    models_dir: Optional[str] = None  # default: $MOCHA_MODELS_DIR or ~/.cache/mocha/models
    progress: bool = True


class IngestConfig(Strict):
    video_extensions: list[str] = [".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts"]
    # Inputs larger than this are refused with a ledger reason instead of tying up a worker.
    max_bytes: int = Field(20 * 1024**3, ge=1)
    max_duration_s: float = Field(4 * 3600.0, gt=0)


class ScenesConfig(Strict):
    detector: Literal["adaptive", "content", "threshold", "histogram", "hash"] = "adaptive"
    # Extra keyword arguments of the PySceneDetect detector (e.g. {"threshold": 27.0});
    # empty means the detector's own published defaults.
    detector_args: dict[str, Any] = {}
    # PySceneDetect downscale factor for the analysis decode; 0 = its automatic choice
    # (about 256 px wide), which is what its published goldens use.
    downscale: int = Field(0, ge=0)
    # MoCha trains on short shots; below 2 s there is too little speech to learn lip motion,
    # above 10 s a clip no longer fits a training sample, so long scenes become windows.
    min_clip_s: float = Field(2.0, gt=0)
    max_clip_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _order(self):
        if self.max_clip_s < self.min_clip_s:
            raise ValueError(f"scenes.max_clip_s ({self.max_clip_s}) < scenes.min_clip_s ({self.min_clip_s})")
        return self


class ClipsConfig(Strict):
    fps: float = Field(25.0, gt=0)  # SyncNet and the trainer both assume 25 fps
    # Longest side of the stored clip; larger sources are downscaled (aspect kept, even sizes).
    max_side: int = Field(1280, ge=64)
    crf: int = Field(20, ge=0, le=51)
    preset: str = "veryfast"
    audio_rate: Literal[16000] = 16000  # Silero VAD, Wav2Vec2 and SyncNet all take 16 kHz
    audio_format: Literal["flac", "wav"] = "flac"


class SpeechConfig(Strict):
    threshold: float = Field(0.5, gt=0, lt=1)  # Silero speech probability
    min_speech_duration_ms: int = 250
    min_silence_duration_ms: int = 300
    # A talking-character clip should be mostly speech: below this it cannot be st2v.
    min_speech_ratio: float = Field(0.5, ge=0, le=1)
    # Digital silence (peak below this) is reported as such rather than as "no speech".
    silence_peak: float = Field(1e-4, ge=0)


class MusicConfig(Strict):
    backend: Literal["auto", "demucs", "snr"] = "auto"  # auto: demucs when its weights exist
    demucs_model: str = "htdemucs"
    # Above this share of non-vocal energy the speech is too buried for lip-sync learning.
    max_music_ratio: float = Field(0.35, ge=0, le=1)
    frame_ms: int = Field(32, ge=8)


class AudioEmbedConfig(Strict):
    enabled: bool = True
    model: str = "facebook/wav2vec2-base-960h"  # hub id, registry name or local path
    # Which hidden state to keep: -1 = last layer.
    layer: int = -1
    max_seconds_per_pass: float = Field(30.0, gt=0)


class LatentsConfig(Strict):
    """Optional VAE latents per clip (pipeline/latents.py). Off by default: a 3D VAE pass per
    clip is the most expensive step and only pays off when many epochs read the same clips."""

    enabled: bool = False
    vae: str = "wan2.1-vae"  # registry name, local dir or cached hub id (model.vae.load_vae)
    subfolder: Optional[str] = "vae"
    dtype: str = "float32"
    # These must equal the trainer's data config (training/configs/data.yaml): the loader only
    # uses latents whose shape matches its own bucket and length, and decodes pixels otherwise.
    fps: float = Field(25.0, gt=0)
    num_frames: int = Field(49, ge=1)
    buckets: list[list[int]] = [[256, 256], [224, 288], [288, 224], [192, 336], [336, 192]]


class LLMConfig(Strict):
    """Backend of the prominent-character filter and the captioner."""

    # rules: embedded default over measured facts (no model); transformers: local VLM;
    # openai: an OpenAI-compatible chat server (vLLM / SGLang) for scale.
    backend: Literal["rules", "transformers", "openai"] = "rules"
    model: Optional[str] = None  # hub id or local path (transformers); served model name (openai)
    endpoint: str = "http://127.0.0.1:8000/v1"  # base URL of the OpenAI-compatible server
    api_key_env: Optional[str] = "OPENAI_API_KEY"  # env var holding the key; unset means none sent
    # Requests in flight per worker: vLLM batches concurrent requests itself, so a few dozen keep
    # one server busy without flooding its queue.
    concurrency: int = Field(8, ge=1)
    # A VLM answer with several images can take seconds on a loaded server; a minute means it is stuck.
    timeout_s: float = Field(60.0, gt=0)
    # Retries after the first attempt, for transport errors and for output that fails validation
    # (sampling at temperature > 0 or a retry often fixes a truncated or chatty answer).
    retries: int = Field(2, ge=0)
    backoff_s: float = Field(1.0, ge=0)  # doubled after each failed attempt
    backoff_max_s: float = Field(30.0, ge=0)
    # Sent as response_format json_schema so vLLM/SGLang constrain decoding to the schema.
    guided_json: bool = True
    temperature: float = Field(0.0, ge=0)
    max_new_tokens: int = Field(768, ge=16)  # a 2-3 character caption is ~300-500 tokens of JSON
    # Keyframes per clip: 4 spread over a <=10 s clip show pose and setting changes at VLM cost
    # of ~4 images; more rarely changes the verdict.
    max_keyframes: int = Field(4, ge=1, le=32)
    keyframe_max_side: int = Field(448, ge=32)  # Qwen2-VL/LLaVA native tiles are 336-448 px
    batch_size: int = Field(4, ge=1)  # clips per generate() call of the local VLM
    device: Optional[str] = None  # None: cuda when the worker has a GPU, else cpu
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class CharacterFilterConfig(Strict):
    enabled: bool = True
    # Rules backend: the dominant face track must be on screen most of the clip (a passer-by
    # or a cutaway is not a character the clip is about) ...
    min_coverage: float = Field(0.6, ge=0, le=1)
    # ... and big enough to read lips: 4 % of the frame height is a full-body shot of a seated
    # person in portrait video (LatentSync demo1), below that the mouth is a few pixels.
    min_face_height_ratio: float = Field(0.04, ge=0, le=1)
    # Other tracks count as characters when present at least this share of the clip.
    min_other_coverage: float = Field(0.3, ge=0, le=1)


class CaptionConfig(Strict):
    enabled: bool = True
    # MoCha's text encoder reads at most 256 tokens (T5-family); the prompt must fit.
    token_budget: int = Field(256, ge=16)
    # Tokenizer that counts the budget (local path or hub id in the cache, as the trainer uses);
    # None: a conservative estimate (schemas.prompt.count_tokens).
    tokenizer: Optional[str] = None
    # Multi-clip samples: MoCha trains on up to a few shots of one conversation; long groups
    # would not fit the 256-token prompt anyway.
    max_group_clips: int = Field(4, ge=1)
    # Shots further apart than this are not one continuous conversation.
    max_group_gap_s: float = Field(1.0, ge=0)
    # Across a cut, two VLM descriptions are one person when they share this share of content
    # words (Jaccard): descriptions of one person across shots reuse the salient words (hair,
    # clothing colours), different people rarely share half of them.
    min_appearance_overlap: float = Field(0.5, ge=0, le=1)
    # Facts that make a character "speaking" when the face stage gives no per-track verdict:
    # the clip is mostly speech and the lip-sync confidence says the face utters it.
    min_speech_ratio_speaking: float = Field(0.3, ge=0, le=1)
    min_sync_conf_speaking: float = Field(1.0, ge=0)


class FacesConfig(Strict):
    # auto: SCRFD when scrfd_onnx is set, else YuNet when yunet_onnx is set, else the Haar
    # cascade that ships inside OpenCV (no download; labelled "opencv-haar" in backends).
    backend: Literal["auto", "scrfd", "yunet", "haar"] = "auto"
    scrfd_onnx: Optional[str] = None  # insightface SCRFD export (research licence: user-supplied)
    yunet_onnx: Optional[str] = None  # OpenCV zoo YuNet (face_detection_yunet_2023mar.onnx)
    # SCRFD-500M scores real faces 0.7-0.9 and background below 0.2; 0.5 is insightface's default.
    scrfd_score: float = Field(0.5, gt=0, lt=1)
    # YuNet below ~0.6 reports occasional false second faces on real clips; 0.7 keeps true ones (>0.9).
    yunet_score: float = Field(0.7, gt=0, lt=1)
    # Haar has no score; more neighbours = fewer false positives on texture (leaves, gratings).
    haar_min_neighbors: int = Field(6, ge=1)
    # One shared decode at this longest side feeds faces, mouth crops and motion: a face of a
    # full-body portrait shot is still ~80 px tall at 640, enough for detection and mouth motion.
    analysis_max_side: int = Field(640, ge=128)
    # Detect every Nth frame (boxes interpolated between): faces move little in 80 ms at 25 fps.
    detect_every: int = Field(2, ge=1)
    # Faces smaller than this (px at the analysis size) are too small to learn lip motion from.
    min_face_px: int = Field(24, ge=4)
    iou_threshold: float = Field(0.3, gt=0, lt=1)  # same face in consecutive detections
    # A track survives this many missed detections (blinks of the detector, brief occlusion).
    max_gap: int = Field(6, ge=0)
    # A track shorter than this many detections is a false positive, not a character.
    min_track_len: int = Field(5, ge=1)
    # A track counts as an on-screen character when present in this share of sampled frames.
    min_track_coverage: float = Field(0.3, gt=0, le=1)


class ShotConfig(Strict):
    """Shot size from the dominant face box height / frame height.

    Detector boxes run brow to chin, about 1/8 of a standing person's height. Whole body in frame
    (wide) gives boxes under ~0.15 of the frame; waist up (medium, ~3.5 heads visible) 0.15-0.25;
    chest up (medium close-up, ~2.5 heads) 0.25-0.45; head and shoulders (close-up) above 0.45.
    Haar boxes run ~10 % smaller than YuNet/SCRFD ones, so no default sits within 10 % of a
    typical framing.
    """

    close_up: float = Field(0.45, gt=0, le=1)
    medium_close_up: float = Field(0.25, gt=0, le=1)
    medium: float = Field(0.15, gt=0, le=1)

    @model_validator(mode="after")
    def _order(self):
        if not (self.close_up > self.medium_close_up > self.medium):
            raise ValueError("shot thresholds must satisfy close_up > medium_close_up > medium")
        return self


class SyncConfig(Strict):
    # auto: SyncNet when syncnet_checkpoint is set, else the weight-free av-correlation backend.
    backend: Literal["auto", "syncnet", "av-correlation"] = "auto"
    syncnet_checkpoint: Optional[str] = None  # syncnet_v2.model (joonson/syncnet_python layout)
    vshift: int = Field(15, ge=1, le=50)  # published search range: +-15 frames = +-0.6 s at 25 fps
    # SyncNet confidence: curation pipelines (e.g. LatentSync's) keep clips with conf >= 3.
    syncnet_min_conf: float = Field(3.0, ge=0)
    # av-correlation confidence = z-score of the peak correlation within +-vshift against the same
    # statistic where sound and picture are unrelated (far shifts, time-reversed signals).
    # Measured on the real clips with YuNet boxes (benchmarks/bench_visual.py; the same clips
    # trimmed by 0-10 frames to see the spread): synced talking clips, aligned or delayed,
    # 2.64-3.8 at 8-10 s and 6.8 for 20 s; mismatched speech 2.1-2.4, music under a talking face
    # 2.0-2.2, a face moving to music 1.7-2.1. The margin is thin, ~0.14 on each side of 2.5 for
    # 8-10 s clips (scores grow roughly with sqrt(duration); 5-6 s of speech is near chance, ~2),
    # so this is a coarse filter; SyncNet (syncnet_min_conf) is the real one.
    avcorr_min_conf: float = Field(2.5, ge=0)
    # Offsets beyond this are not trusted enough to re-align (a real A/V lag rarely exceeds
    # 0.4 s); such clips keep their audio and are blocked from st2v.
    max_realign_offset: int = Field(10, ge=0)
    # The weight-free offset is biased per speaker. The close-up (katiehill) is in sync by its
    # lips: at three bilabial releases (shut in frames 34, 62, 148, open in the next) the
    # acoustic burst starts at frame 33.5, 62.3, 148.0, audio if anything early; yet its mouth
    # motion leads the 1-3 kHz energy by 2.4 frames, so it measures -2. The LatentSync clips
    # measure +1 (+0.5, +0.9). An estimate this close to zero is inside that error: recorded
    # in sync_offset, not applied to the audio (sync_shift_frames says what was applied).
    # SyncNet offsets are applied as measured. docs/DESIGN-NOTES.md has the details.
    avcorr_realign_deadband: int = Field(3, ge=0)
    syncnet_batch: int = Field(20, ge=1)  # published batch size


class MotionConfig(Strict):
    method: Literal["dis", "farneback"] = "dis"
    # Flow runs on the shared decode shrunk to this width: motion_score is px/frame at this size.
    analysis_width: int = Field(256, ge=32)
    frame_step: int = Field(2, ge=1)  # flow between frames t and t+step, divided by step
    # A re-encoded still picture measures ~0.00 px/frame (identical frames are coded as skips);
    # real footage measures more even when calm (a leaf on a rock 0.07, a seated speaker 0.14).
    static_max: float = Field(0.03, ge=0)
    # 6 px/frame at 256 px is over half the frame width per second at 25 fps: whip pans and
    # heavy shake (real speakers and film action measure 0.1-1.0).
    chaotic_min: float = Field(6.0, gt=0)


class VisualConfig(Strict):
    faces: FacesConfig = FacesConfig()
    shot: ShotConfig = ShotConfig()
    sync: SyncConfig = SyncConfig()
    motion: MotionConfig = MotionConfig()


class CurateConfig(Strict):
    inputs: list[str] = []
    output: str = "out"
    run: RunConfig = RunConfig()
    resources: ResourcesConfig = ResourcesConfig()
    ingest: IngestConfig = IngestConfig()
    scenes: ScenesConfig = ScenesConfig()
    clips: ClipsConfig = ClipsConfig()
    speech: SpeechConfig = SpeechConfig()
    music: MusicConfig = MusicConfig()
    audio_embed: AudioEmbedConfig = AudioEmbedConfig()
    latents: LatentsConfig = LatentsConfig()
    llm: LLMConfig = LLMConfig()
    character: CharacterFilterConfig = CharacterFilterConfig()
    caption: CaptionConfig = CaptionConfig()
    visual: VisualConfig = VisualConfig()

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_input(cls, v):
        return [v] if isinstance(v, str) else v


class ConfigError(ValueError):
    pass


def _format_validation(e: ValidationError, what: str = "config") -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{loc}'")
        else:
            lines.append(f"'{loc}': {err['msg']} (got {err.get('input')!r})")
    return f"invalid {what}: " + "; ".join(lines)


def apply_override(data: dict, assignment: str) -> None:
    """Apply ``a.b.c=value`` to nested dict ``data`` (value parsed as YAML)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form section.key=value")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {assignment!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {assignment!r}: value is not valid YAML ({e})") from e
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {assignment!r}: '{p}' is not a section")
        node = nxt
    node[parts[-1]] = value


def load_yaml_config(model: type[BaseModel], path: Optional[str | Path] = None, overrides: list[str] = (),
                     what: str = "config", section: Optional[str] = None, **top: Any) -> Any:
    """Validate YAML (or nothing: the defaults) + ``--set`` overrides + top-level values against
    ``model``; every problem becomes one ConfigError naming the key. A file holding only a
    ``section:`` mapping (e.g. ``data:``) is unwrapped."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{what} file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{what} file {p} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{what} file {p} must hold a mapping at the top level")
        if section is not None and set(data) == {section} and isinstance(data[section], dict):
            data = data[section]
    for o in overrides:
        apply_override(data, o)
    for k, v in top.items():
        if v is not None:
            data[k] = v
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, what)) from None


def load_config(path: Optional[str | Path] = None, overrides: list[str] = (), **top: Any) -> CurateConfig:
    """Load the curation config (YAML or the embedded defaults), apply overrides."""
    return load_yaml_config(CurateConfig, path, overrides, **top)
