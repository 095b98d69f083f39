"""Duplicate sources: exact copies (same sha256) and near copies (the same video re-encoded,
rescaled or trimmed, found by comparing :mod:`pipeline.source.fingerprint` fingerprints).

The driver decides on the facts of every input before the main plan runs, so the decision is
the same whichever worker hashed which file and however a job was split into runs. Winners:

- exact copies: a source already committed in the output, otherwise the smallest source URI;
- near copies: a committed source, otherwise the best copy (its fingerprinted span decoded
  cleanly, then more pixels, then more decoded pictures, then the smallest URI). Sources are visited in that
  order and each one is compared with the sources kept before it, so the winner of a group is
  the first of the group in that order, and a later copy names it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Optional

import numpy as np
from pydantic import Field

from pipeline.source.fingerprint import Fingerprint, FingerprintConfig
from schemas.base import Strict


class NearDuplicateConfig(Strict):
    # drop: a near copy becomes a ledger row `near_duplicate_of <kept source>` and is not
    # curated; keep: it is curated as usual and the match is only reported in run.json.
    mode: Literal["drop", "keep"] = "drop"
    fingerprint: FingerprintConfig = FingerprintConfig()
    # Trims searched: the copy may start up to this many seconds before or after the original.
    # Re-uploads trim intros, logos and black leaders of a few seconds; a longer search raises
    # the chance that two different talking shots line up somewhere by accident.
    max_offset_s: float = Field(30.0, ge=0)
    # Two step hashes are "the same picture" within this many of 64 bits. Re-encoded, rescaled
    # (to a quarter), re-timed copies of the real test clips differ by 0-6 bits (8-14 only at
    # steps that straddle a cut); unrelated pictures by ~32; the same talking shot seconds apart
    # by 2-22, and two cartoons of one character in one framing by 4-10.
    frame_bits: int = Field(6, ge=0, le=64)
    # Share of the aligned usable steps that must be the same picture. Copies reach 0.94-1.0;
    # two stretches of one static talking shot stay near 0.4, the cartoons near 0.8, unrelated
    # videos near 0.
    min_video_match: float = Field(0.9, gt=0, le=1)
    # The aligned part must cover this share of the shorter source's usable steps (a clip that
    # merely shares its first seconds with another, a title card say, is not a copy of it), and
    # at least ``min_steps`` steps (2 s at the default step, the shortest clip: shorter
    # sources are not judged).
    min_overlap: float = Field(0.8, gt=0, le=1)
    min_steps: int = Field(8, ge=1)
    # Audio bit error rate at or below which the sound is the same recording. Philips accept
    # 0.35 for songs heard through a phone; copies of one file score 0.01-0.12 (the higher with
    # corrupt packets), unrelated real speech 0.46-0.49, two synthetic voices of one generator 0.28.
    max_audio_ber: float = Field(0.2, gt=0, le=0.5)
    # Hops of loud audio both copies need in the aligned part for the audio to be judged (1 s:
    # 320 bits, where unrelated audio scores 0.5 +- 0.03); with fewer, or with a silent or
    # missing track, the pictures decide alone.
    min_audio_hops: int = Field(20, ge=1)
    # When both copies have judgeable audio it must match too: the same pictures under other
    # speech (a dub, a voice-over) are a different training sample for speech-to-video.
    require_audio_match: bool = True


@dataclass
class Candidate:
    """What the driver knows of one input before deciding."""

    uri: str  # redacted source URI (the ledger's)
    sha256: Optional[str]
    committed: bool  # already (at least partly) in the output
    pixels: int = 0
    duration_s: float = 0.0
    fingerprint: Optional[Fingerprint] = None


@dataclass
class Match:
    video_match: float
    offset_s: float  # time in the copy minus time in the kept source, for the same content
    overlap_steps: int
    audio_ber: Optional[float]  # None: audio not judged

    def describe(self) -> str:
        audio = f", audio bit error rate {self.audio_ber:.2f}" if self.audio_ber is not None else ", audio not compared"
        return (f"{self.video_match:.0%} of {self.overlap_steps} picture steps alike at offset {self.offset_s:+.2f} s"
                f"{audio}")


@dataclass
class Decision:
    uri: str
    kind: Literal["exact", "near"]
    of: str  # URI of the kept source
    match: Optional[Match] = None

    def reason(self) -> str:
        if self.kind == "exact":
            return f"duplicate_of {self.of}"
        return f"near_duplicate_of {self.of} ({self.match.describe()})"


def exact_duplicates(cands: Iterable[Candidate]) -> dict[str, Decision]:
    """Per duplicate URI (not yet committed), the copy it duplicates."""
    groups: dict[str, list[Candidate]] = {}
    for c in cands:
        if c.sha256:
            groups.setdefault(c.sha256, []).append(c)
    out = {}
    for group in groups.values():
        if len(group) < 2:
            continue
        keep = min(group, key=lambda c: (not c.committed, c.uri))
        for c in group:
            if c is not keep and not c.committed:
                out[c.uri] = Decision(c.uri, "exact", keep.uri)
    return out


def near_order(c: Candidate) -> tuple:
    """Committed first, then the copy that decoded cleanly, has more pixels, and more pictures
    (decoded steps, not the declared duration, which a broken header can inflate)."""
    fp = c.fingerprint
    clean = bool(fp is not None and fp.clean)
    steps = fp.usable_video if fp is not None else 0
    return (not c.committed, not clean, -c.pixels, -steps, c.uri)


def near_duplicates(cands: list[Candidate], cfg: NearDuplicateConfig) -> dict[str, Decision]:
    """Per near copy (not yet committed), the kept source it copies. ``cands`` are the
    sources left after exact de-duplication."""
    order = sorted((c for c in cands if c.fingerprint is not None and c.fingerprint.usable_video >= cfg.min_steps),
                   key=near_order)
    index = _BandIndex()
    kept: list[Candidate] = []
    out: dict[str, Decision] = {}
    for c in order:
        found = None
        for k in index.candidates(c.fingerprint):
            m = compare(kept[k].fingerprint, c.fingerprint, cfg)
            if m is not None:
                found = (kept[k], m)
                break
        if found is not None and not c.committed:
            out[c.uri] = Decision(c.uri, "near", found[0].uri, found[1])
            continue
        index.add(len(kept), c.fingerprint)
        kept.append(c)
    return out


class _BandIndex:
    """Kept sources by the 16-bit bands of their step hashes: two pictures within a few bits
    share a band (pigeonhole), so a copy shares many, and only sources sharing some are compared
    in full. Bands that many sources share (black frames with a logo, test cards) select nothing."""

    MIN_SHARED = 2
    COMMON = 64  # a band value in more kept sources than this is ignored

    def __init__(self):
        self.keys: dict[tuple[int, int], list[int]] = {}

    @staticmethod
    def _keys(fp: Fingerprint) -> set[tuple[int, int]]:
        v = fp.video[fp.video_ok]
        return {(b, int(x)) for b in range(4) for x in np.unique((v >> np.uint64(16 * b)) & np.uint64(0xFFFF))}

    def add(self, k: int, fp: Fingerprint) -> None:
        for key in self._keys(fp):
            self.keys.setdefault(key, []).append(k)

    def candidates(self, fp: Fingerprint) -> list[int]:
        hits: dict[int, int] = {}
        for key in self._keys(fp):
            ks = self.keys.get(key, ())
            if len(ks) > self.COMMON:
                continue
            for k in ks:
                hits[k] = hits.get(k, 0) + 1
        return sorted((k for k, n in hits.items() if n >= self.MIN_SHARED), key=lambda k: (-hits[k], k))


def compare(a: Fingerprint, b: Fingerprint, cfg: NearDuplicateConfig) -> Optional[Match]:
    """The match of ``b`` against ``a`` when ``b`` is a copy of ``a`` (or ``a`` of ``b``), else None.

    Every shift within ``max_offset_s`` where enough steps are the same picture is a candidate
    (a static shot is alike at many shifts); where both have audio to judge, the audio decides
    among them and gives the offset to a hop, and must match too."""
    if abs(a.video_step_s - b.video_step_s) > 1e-9 or abs(a.audio_hop_s - b.audio_hop_s) > 1e-9:
        return None  # fingerprinted with other settings: not comparable
    shifts = [x for x in video_alignments(a, b, cfg) if x[0] >= cfg.min_video_match]
    if not shifts:
        return None
    best_video = max(shifts, key=lambda x: (x[0], -abs(x[1])))
    heard = [(ber, off, x) for x in shifts for ber, off in [audio_ber(a, b, x[1] * a.video_step_s, cfg)] if ber is not None]
    if not heard:
        frac, shift, steps = best_video
        return Match(frac, shift * a.video_step_s, steps, None)
    ber, offset_s, (frac, _shift, steps) = min(heard, key=lambda h: (h[0], abs(h[1])))
    if cfg.require_audio_match and ber > cfg.max_audio_ber:
        return None
    return Match(frac, offset_s, steps, ber)


def video_alignments(a: Fingerprint, b: Fingerprint, cfg: NearDuplicateConfig) -> list[tuple[float, int, int]]:
    """(share of alike steps, shift in steps, aligned steps) for every shift with enough aligned
    usable steps: step ``i`` of ``a`` against step ``i + shift`` of ``b``."""
    K = int(round(cfg.max_offset_s / a.video_step_s))
    shorter = min(a.usable_video, b.usable_video)
    need = max(cfg.min_steps, int(np.ceil(cfg.min_overlap * shorter)))
    out = []
    for shift in range(-K, K + 1):
        i0, i1 = max(0, -shift), min(len(a.video), len(b.video) - shift)
        if i1 - i0 < need:
            continue
        ok = a.video_ok[i0:i1] & b.video_ok[i0 + shift:i1 + shift]
        n = int(ok.sum())
        if n < need:
            continue
        dist = np.bitwise_count(a.video[i0:i1][ok] ^ b.video[i0 + shift:i1 + shift][ok])
        out.append((float((dist <= cfg.frame_bits).mean()), shift, n))
    return out


def audio_ber(a: Fingerprint, b: Fingerprint, offset_s: float, cfg: NearDuplicateConfig) -> tuple[Optional[float], float]:
    """(lowest bit error rate of the audio words within one video step of ``offset_s``, the
    offset in seconds where it is); the rate is None when too few loud hops line up to judge."""
    hop = a.audio_hop_s
    centre = int(round(offset_s / hop))
    reach = int(np.ceil(a.video_step_s / hop / 2))
    best, at = None, offset_s
    for shift in range(centre - reach, centre + reach + 1):
        i0, i1 = max(0, -shift), min(len(a.audio), len(b.audio) - shift)
        if i1 - i0 < cfg.min_audio_hops:
            continue
        ok = a.audio_ok[i0:i1] & b.audio_ok[i0 + shift:i1 + shift]
        n = int(ok.sum())
        if n < cfg.min_audio_hops:
            continue
        errors = np.bitwise_count(a.audio[i0:i1][ok] ^ b.audio[i0 + shift:i1 + shift][ok]).sum()
        ber = float(errors) / (16.0 * n)
        if best is None or ber < best:
            best, at = ber, shift * hop
    return best, at
