"""The progress display of a curation run: sources done, and for a long source the seconds of
its video committed so far (a two-hour film moves the display every segment, not once)."""
from __future__ import annotations

from pathlib import PurePosixPath

from common.output import SourceProgress


class CurateProgress:
    def __init__(self, console, total_sources: int, done: dict[str, SourceProgress], enabled: bool = True):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.sources = {k: v for k, v in done.items()}  # committed before this run, per source
        self.prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                             disable=not enabled, transient=False)
        self.total = self.prog.add_task("sources", total=total_sources, info="")
        self.long: dict[str, int] = {}
        self.clips = 0
        self.seconds = 0.0

    def __enter__(self):
        self.prog.__enter__()
        return self

    def __exit__(self, *exc):
        return self.prog.__exit__(*exc)

    def committed(self, record: dict) -> None:
        self.clips += int(record.get("clips") or 0)
        for seg in record["segments"]:
            sp = self.sources.setdefault(seg["source"], SourceProgress())
            sp.segments_done.add(int(seg["index"]))
            sp.count = int(seg["count"])
            span = max(0.0, float(seg.get("end_s") or 0.0) - float(seg.get("start_s") or 0.0))
            sp.seconds_done += span
            sp.duration_s = float(seg.get("duration_s") or 0.0)
            self.seconds += span
            self._show(seg["source"], sp)
        self.prog.update(self.total, info=f"{self.clips} clips, {self.seconds:,.0f} s of video")

    def _show(self, source: str, sp: SourceProgress) -> None:
        if sp.complete:
            self.prog.advance(self.total)
            if source in self.long:
                self.prog.remove_task(self.long.pop(source))
            return
        if source not in self.long:
            name = PurePosixPath(source).name or source
            self.long[source] = self.prog.add_task(f"  {name[:40]}", total=max(sp.duration_s, 1.0), info="s of video")
        self.prog.update(self.long[source], completed=min(sp.seconds_done, max(sp.duration_s, 1.0)))
