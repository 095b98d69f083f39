import numpy as np
import pytest

from pipeline.source.scenes import Scene, ScenesConfig, detect_scenes, windows_for


@pytest.mark.realdata
def test_content_detector_defaults_reproduce_published_cuts(real_dir):
    scan = detect_scenes(str(real_dir / "cuts_nature_noperson_noaudio.mp4"), ScenesConfig(detector="content"))
    scenes, cuts = scan.scenes, scan.cuts
    assert [s.start_frame for s in scenes[1:]] == [30, 180, 394]
    assert cuts == pytest.approx([30 / 29.97, 180 / 29.97, 394 / 29.97], abs=1 / 29.97)


@pytest.mark.realdata
def test_vfr_cut_times_match_published_within_one_frame(real_dir):
    scan = detect_scenes(str(real_dir / "cuts_movie_goldeneye_vfr_noaudio.mp4"), ScenesConfig(detector="content"))
    cuts = scan.cuts
    # the scan notes every decoded frame: 160 of them (every 3rd dropped), keyframes among them
    assert len(scan.frame_times) == 160 and np.all(np.diff(scan.frame_times) > 0)
    assert scan.keyframes[0] == (0.0, 0) and all(scan.frame_times[i] == t for t, i in scan.keyframes)
    assert len(cuts) == 2
    frame = 1001 / 24000
    assert abs(cuts[0] - 3.754) <= frame and abs(cuts[1] - 8.759) <= frame


@pytest.mark.realdata
def test_adaptive_default_and_detector_args(real_dir):
    path = str(real_dir / "cuts_nature_noperson_noaudio.mp4")
    scenes = detect_scenes(path, ScenesConfig()).scenes
    assert [s.start_frame for s in scenes[1:]] == [30, 180, 394, 691]
    # a huge threshold finds no cut: the args reach the detector
    scan = detect_scenes(path, ScenesConfig(detector="content", detector_args={"threshold": 255.0}))
    scenes, cuts = scan.scenes, scan.cuts
    assert cuts == [] and len(scenes) == 1


def test_bad_detector_args_are_a_clear_error():
    from pipeline.source.scenes import make_detector

    with pytest.raises(ValueError, match="detector_args"):
        make_detector(ScenesConfig(detector="content", detector_args={"nonsense": 1}))


def test_windows_split_long_scenes_evenly_and_report_short_ones():
    cfg = ScenesConfig(min_clip_s=2.0, max_clip_s=10.0)
    scenes = [Scene(0, 0.0, 1.5, 0, 36), Scene(1, 1.5, 25.5, 36, 612), Scene(2, 25.5, 31.0, 612, 744)]
    keep, short = windows_for(scenes, cfg)
    assert [(w.scene_index, w.window_index) for w in short] == [(0, 0)]
    long_w = [w for w in keep if w.scene_index == 1]
    assert len(long_w) == 3 and all(w.duration == pytest.approx(8.0) for w in long_w)
    assert long_w[0].start_s == 1.5 and long_w[-1].end_s == 25.5
    assert all(a.end_s == pytest.approx(b.start_s) for a, b in zip(long_w, long_w[1:]))
    assert [w.duration for w in keep if w.scene_index == 2] == [pytest.approx(5.5)]
