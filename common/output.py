"""The layout of a curated output (a local folder or any URI) and its commit log.

``st2v/``, ``t2v/`` and ``ledger/`` hold Parquet files written by the workers under names no other
attempt uses; ``_commits/`` holds one JSON record per committed write, each written whole (one PUT
on object stores). A file is part of the dataset only when a commit record names it: readers
trust nothing else, so a file left by a killed worker, a retried task or a half-finished upload
(stores where rename is not atomic and listings may lag) is never read.

A record says which *segments* of which sources it completes; a source is done when all of its
segments are committed (a short source is one segment). A segment marked ``retry`` (its work hit
a time limit or a dead worker) holds the error rows that say so but is not done: a rerun does it
again, and the record of that work names the retry record under ``supersedes``, which removes
the retry record (and its error rows) from the dataset.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import pyarrow.fs as pafs

from common.fs import exists, filesystem, join, list_files, read_bytes

TRACKS = ("st2v", "t2v")
LEDGER = "ledger"
COMMITS = "_commits"
PARTS = TRACKS + (LEDGER,)
RUN_JSON = "run.json"


@dataclass
class SourceProgress:
    segments_done: set[int] = field(default_factory=set)
    count: Optional[int] = None  # segments of the source (known once one is committed)
    seconds_done: float = 0.0
    duration_s: float = 0.0

    @property
    def complete(self) -> bool:
        return self.count is not None and len(self.segments_done) >= self.count


@dataclass
class Output:
    uri: str
    fs: pafs.FileSystem
    root: str

    @classmethod
    def open(cls, uri: str) -> "Output":
        fs, root = filesystem(str(uri))
        return cls(str(uri), fs, root)

    def path(self, *rel: str) -> str:
        return join(self.root, *rel)

    def exists(self, *rel: str) -> bool:
        return exists(self.fs, self.path(*rel))

    def read_json(self, *rel: str) -> dict:
        return json.loads(read_bytes(self.fs, self.path(*rel)))

    def commit_records(self) -> list[dict]:
        """Every commit record, oldest first (names sort by creation)."""
        out = []
        for p in list_files(self.fs, self.path(COMMITS), ".json"):
            rec = json.loads(read_bytes(self.fs, p))
            out.append(normalise_record(rec))
        return live_records(out)

    def committed_files(self, part: str, records: Optional[list[dict]] = None) -> list[str]:
        """Relative paths of the committed files of ``part`` (st2v, t2v or ledger)."""
        recs = self.commit_records() if records is None else records
        return sorted({f for r in recs for f in r["files"] if f.split("/", 1)[0] == part})

    def present_files(self, part: str) -> list[str]:
        """Relative paths of every Parquet file under ``part``, committed or not."""
        return [f"{part}/{p.rsplit('/', 1)[-1]}" for p in list_files(self.fs, self.path(part), ".parquet")]

    def dataset_files(self, part: str, records: Optional[list[dict]] = None) -> list[str]:
        """The files of ``part`` that make up the dataset: those named in commit records; in an
        output without a commit log (written by hand or by another tool), every file there."""
        if records or self.exists(COMMITS):
            return self.committed_files(part, records)
        return self.present_files(part)

    def is_dir(self) -> bool:
        return self.fs.get_file_info(self.root).type == pafs.FileType.Directory

    def progress(self, records: Optional[list[dict]] = None) -> dict[str, SourceProgress]:
        """Per source (its URI): which segments are committed."""
        out: dict[str, SourceProgress] = {}
        for r in self.commit_records() if records is None else records:
            for seg in r["segments"]:
                if seg.get("retry"):
                    continue
                sp = out.setdefault(seg["source"], SourceProgress())
                if seg["index"] not in sp.segments_done:
                    sp.segments_done.add(seg["index"])
                    sp.seconds_done += max(0.0, float(seg.get("end_s") or 0.0) - float(seg.get("start_s") or 0.0))
                sp.count = int(seg["count"])
                sp.duration_s = float(seg.get("duration_s") or sp.duration_s)
        return out


def live_records(records: list[dict]) -> list[dict]:
    """The records no later record supersedes."""
    gone = {i for r in records for i in r.get("supersedes", ())}
    return [r for r in records if r.get("id") not in gone] if gone else records


def normalise_record(rec: dict) -> dict:
    """Records of the first format named whole sources (``sources_done``): one segment each."""
    if "segments" not in rec:
        rec = {**rec, "segments": [{"source": s, "index": 0, "count": 1} for s in rec.get("sources_done", [])]}
    return rec
