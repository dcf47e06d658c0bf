"""benchmarks/compress_synth.py's finished rows: reused only by a rerun of the same run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("compress_synth")


def test_rows_with_and_without_a_final_race_are_kept_apart(bench, tmp_path: Path) -> None:
    plain, raced = bench.parse_args([]), bench.parse_args(["--final-race", "3"])
    files = {bench._row_file(tmp_path, "base", "joint", 0, None, a) for a in (plain, raced)}
    assert len(files) == 2


def test_a_finished_row_is_reused_only_with_the_options_it_was_made_with(bench, tmp_path: Path) -> None:
    args = bench.parse_args(["--final-steps", "400"])
    key = tmp_path / "row.json"
    key.write_text(json.dumps({"seed": 0, "settings": bench._run_settings(args)}))
    assert bench._reused(key, args)["seed"] == 0
    with pytest.raises(SystemExit, match=r"final_steps: 400 -> 300.*another --workdir"):
        bench._reused(key, bench.parse_args(["--final-steps", "300"]))


def test_a_finished_row_is_reused_only_from_the_same_detector_file(bench, tmp_path: Path) -> None:
    args = bench.parse_args([])
    key = tmp_path / "row.json"
    key.write_text(json.dumps({"detector": "base", "model_sha256": "aaaa", "settings": bench._run_settings(args)}))
    args.digests = {"base": "aaaa"}
    assert bench._reused(key, args)["detector"] == "base"
    args.digests = {"base": "bbbb"}  # another file under the same name
    with pytest.raises(SystemExit, match=r"made from another detector file named base.*another --workdir"):
        bench._reused(key, args)


def test_a_row_made_before_an_option_existed_is_reused_at_its_default(bench, tmp_path: Path) -> None:
    args = bench.parse_args([])
    made = {k: v for k, v in bench._run_settings(args).items() if k != "sizes"}  # a row from before --sizes
    key = tmp_path / "row.json"
    key.write_text(json.dumps({"seed": 1, "settings": made}))
    assert bench._reused(key, args)["seed"] == 1
    with pytest.raises(SystemExit, match=r"sizes: None -> \[1.0\]"):
        bench._reused(key, bench.parse_args(["--sizes", "1.0"]))


def test_sizes_and_topk_make_the_head_grid_compress_searches(bench) -> None:
    import jdnas_sdk
    from jdnas_sdk.compress import _space

    from .conftest import tiny_spec

    spec, arch = jdnas_sdk.describe(jdnas_sdk.build(tiny_spec("retinanet")))
    assert bench._heads(bench.parse_args([])) is None  # compress's own default space
    grid = bench._heads(bench.parse_args(["--sizes", "1.0", "--topk", "300", "1000"]))
    values = _space(None, grid, arch, spec).head_values()
    assert values["size"] == (spec.min_size,) and values["topk"] == (300, 1000)
    assert (
        len(_space(None, bench._heads(bench.parse_args(["--sizes", "0.5", "1.0"])), arch, spec).head_values()["size"])
        == 2
    )


def test_a_refused_row_is_recorded_and_a_rerun_with_other_options_refuses_to_reuse_it(
    bench, synth_root: Path, tmp_path: Path
) -> None:
    import jdnas_sdk

    from .conftest import tiny_spec

    model = jdnas_sdk.save_detector(jdnas_sdk.build(tiny_spec("retinanet")), tmp_path / "tiny.pt")
    run = ["--models", str(model), "--data", str(synth_root), "--workdir", str(tmp_path / "w")]
    run += ["--results", str(tmp_path / "r"), "--methods", "joint", "--seeds", "0", "--target", "v100-trt"]
    run += ["--teacher", "none", "--latency", "0.0001"]  # below any student: refused before any training
    assert bench.main(run) == 0
    report = json.loads((tmp_path / "r" / "compress_synth.json").read_text())
    rows, files = report["results"], report["split_images"]
    assert len(files["test"]) == report["splits"]["test"] and not set(files["select"]) & set(files["test"])
    assert len(rows) == 1 and "below anything the search space reaches" in rows[0]["error"]
    assert rows[0]["sittings"] == 1 and rows[0]["wall_s"] > 0  # its time over all sittings
    assert not (tmp_path / "w" / "rows" / "tiny_joint_s0.wall.json").exists()  # kept while it ran, in the row now
    assert json.loads((tmp_path / "w" / "rows" / "tiny_joint_s0.json").read_text())["settings"]["latency"] == 0.0001
    with pytest.raises(SystemExit, match=r"latency: 0.0001 -> 0.0002"):
        bench.main([*run[:-1], "0.0002"])
    jdnas_sdk.save_detector(jdnas_sdk.build(tiny_spec("retinanet")), model)  # another detector, the same name
    with pytest.raises(SystemExit, match=r"made from another detector file named tiny"):
        bench.main(run)
    fresh = [*run[:4], "--workdir", str(tmp_path / "fresh"), *run[6:]]
    for bad, problem in (
        (["--target", "nosuch"], "compress_synth: .*nosuch"),
        (["--latency", "1.5"], "compress_synth: latency .* must be below 1"),
        (["--models", str(tmp_path / "nowhere.pt")], "compress_synth: .*nowhere.pt"),
    ):  # refused in seconds, one line, before any work
        with pytest.raises(SystemExit, match=problem):
            bench.main([*fresh, *bad])
    assert not (tmp_path / "fresh").exists()


def test_a_row_records_how_its_base_was_trained_and_its_cycles(bench, synth_root: Path, tmp_path: Path) -> None:
    import jdnas_sdk
    from jdnas_sdk.converge import ConvergeConfig, train_until_converged
    from jdnas_sdk.data import load_protocol_splits
    from jdnas_sdk.train import TrainConfig

    from .conftest import tiny_spec

    train_set, select_set, _ = load_protocol_splits(synth_root)
    out = tmp_path / "base.pt"
    converge = ConvergeConfig(eval_every=1, patience=1, max_steps=2, trend_window=0, cycle_steps=1, max_cycles=1)
    config = TrainConfig(batch_size=2, optimizer="adamw", lr=1e-3, warmup_steps=0)
    result = train_until_converged(
        jdnas_sdk.build(tiny_spec("retinanet")),
        train_set,
        select_set,
        out,
        config=config,
        converge=converge,
        progress=False,
    )
    record = bench._base_training(out)
    assert record["steps"] == result.best_weights_steps and record["converged"] == result.converged
    assert record["cycles"] == result.cycles and len(record["cycles"]) == 1
    # a detector file without that record (saved by hand) gives an empty one, not an error
    bare = jdnas_sdk.save_detector(jdnas_sdk.build(tiny_spec("retinanet")), tmp_path / "bare.pt")
    assert bench._base_training(bare) == {}


def test_the_ablation_table_names_what_changed_between_results_files_per_seed(tmp_path: Path) -> None:
    ablation = load_benchmark("ablation_table")

    def row(seed: int, student: float, **settings: object) -> dict:
        ap = {"test_ap": 0.7, "select_ap": 0.7}
        return {"family": "retinanet", "method": "joint", "seed": seed, "settings": settings, "base": ap,
                "control": {**ap, "test_ap": 0.75}, "student": {"test_ap": student, "select_ap": student},
                "measured_ratio": 0.47}  # fmt: skip

    files = []
    for name, rows in (
        ("a.json", [row(0, 0.69, sizes=None, target="/x/t1.json"), row(1, 0.68, sizes=None, target="/x/t1.json")]),
        ("b.json", [row(0, 0.74, sizes=[1.0], target="/y/t1.json")]),
    ):
        (path := tmp_path / name).write_text(json.dumps({"machine": {"cpu": "AMD EPYC", "cores": 2}, "results": rows}))
        files.append(path)
    lines = ablation.table(files).splitlines()
    assert any("AMD EPYC (2 cores)" in line for line in lines)
    rows = [line for line in lines if line.startswith(f"| {tmp_path.name}/")]
    assert len(rows) == 3 and "| start |" in rows[0] and "| start |" in rows[1]
    assert "| sizes None -> [1.0] |" in rows[2]  # the same table file name in another folder is no change
    assert "| 74.0 / 74.0 | 70.0 | 75.0 | -1.0 | 0.47 |" in rows[2]
    # the same settings on a base trained longer (the same file name): the base's change is named
    longer = row(0, 0.77, sizes=[1.0], target="/y/t1.json")
    (path := tmp_path / "c.json").write_text(json.dumps({"results": [{**longer, "base": {"test_ap": 0.785}}]}))
    last = [line for line in ablation.table([*files, path]).splitlines() if "/c.json |" in line]
    assert len(last) == 1 and "| base test AP 70.0 -> 78.5 |" in last[0]


def test_a_rows_base_and_student_are_timed_side_by_side_in_rounds(
    bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each row's base and student are timed in interleaved rounds (base, student, base, ...) and kept at
    the median of their rounds, the ratio of those; a row measured before is not timed again."""
    from jdnas_sdk import save_detector
    from jdnas_sdk.arch import standard_arch
    from jdnas_sdk.detectors import build_detector

    from .conftest import quick_ort, tiny_spec

    files = {}
    for name in ("base", "student"):  # two sets of random weights
        files[name] = save_detector(build_detector(tiny_spec("retinanet"), standard_arch("resnet18")), tmp_path / name)
    backend, order = quick_ort(monkeypatch)
    monkeypatch.setattr(bench, "OrtBackend", lambda: backend)
    row = {
        "detector": "base",
        "base": {"test_ap": 1.0},
        "student": {"test_ap": 2.0},
        "student_file": str(files["student"]),
    }
    bench.measure([row], {"base": files["base"]}, rounds=3)
    assert order == ["base", "student"] * 3
    for name in ("base", "student"):
        rounds = row[name]["measured_rounds_ms"]
        assert len(rounds) == 3 and row[name]["measured_ms"] == sorted(rounds)[1]
    assert row["measured_ratio"] == row["student"]["measured_ms"] / row["base"]["measured_ms"]
    before, order[:] = json.dumps(row), []
    bench.measure([row], {"base": files["base"]})
    assert order == [] and json.dumps(row) == before
