"""The NMS load a detector's weights give it, and the cost per IoU test a table fits from its fixed entries."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torchvision.ops import box_iou

from jdnas_sdk import Arch, build
from jdnas_sdk.latency import Entry, Fingerprint, LatencyTable, fixed_key
from jdnas_sdk.latency.nms_load import LOADS, MIN_DETECTORS, load_shift_ms, nms_load, nms_ms_per_test, with_loads
from jdnas_sdk.latency.nms_replay import nms_comparisons, recorded_nms
from jdnas_sdk.latency.probe import TIMED_LOAD, full_load, probe, probe_image

from .conftest import tiny_spec

BASE = Arch.parse("basic:16|16:16x1|32:32x1|64:64x1|128:128x1")


def _greedy(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, thr: float) -> tuple[int, list[int]]:
    """The loop ONNX Runtime's NonMaxSuppression runs, written out, on torchvision's offset boxes."""
    shifted = boxes + idxs.to(boxes)[:, None] * (boxes.max() + 1)
    iou = box_iou(shifted, shifted).tolist()
    kept: list[int] = []
    tests = 0
    for i in sorted(range(len(scores)), key=lambda i: -float(scores[i])):
        for j in kept:
            tests += 1
            if iou[i][j] > thr:
                break
        else:
            kept.append(i)
    return tests, kept


def _boxes(seed: int, n: int = 400, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boxes clustered around a few objects (as a detector's are), so that NMS suppresses many."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(6, 2, generator=g) * 80 + 10
    xy = centres[torch.randint(0, 6, (n,), generator=g)] + torch.randn(n, 2, generator=g) * 4
    wh = torch.rand(n, 2, generator=g) * 20 + 8
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1).clamp(0, 100)
    return boxes, torch.rand(n, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("seed", range(4))
def test_the_count_is_the_greedy_loops_iou_tests(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import jdnas_sdk.latency.nms_replay as module

    monkeypatch.setattr(module, "CHUNK", 7)  # many chunks of suppressed boxes per class: the same count
    boxes, scores, idxs = _boxes(seed)
    for thr in (0.3, 0.5, 0.7):
        tests, kept = _greedy(boxes, scores, idxs, thr)
        assert sorted(kept) == sorted(torchvision.ops.batched_nms(boxes, scores, idxs, thr).tolist())
        assert 0 < len(kept) < len(boxes)  # some suppressed, some kept: both branches counted
        assert nms_comparisons(boxes, scores, idxs, thr) == tests
    assert nms_comparisons(boxes[:0], scores[:0], idxs[:0], 0.5) == 0


def test_onnx_runtime_keeps_what_the_replayed_loop_keeps() -> None:
    """The loop replayed is the one the exported graph runs: ONNX Runtime's NonMaxSuppression on
    torchvision's exported ``batched_nms`` keeps exactly the boxes it keeps."""
    import io

    import onnxruntime as ort

    class Nms(torch.nn.Module):
        def forward(self, boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor) -> torch.Tensor:
            return torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)

    boxes, scores, idxs = _boxes(7, n=1200)
    buffer = io.BytesIO()
    torch.onnx.export(Nms(), (boxes, scores, idxs), buffer, opset_version=17, dynamo=False, input_names=["b", "s", "i"])
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    kept = session.run(None, {"b": boxes.numpy(), "s": scores.numpy(), "i": idxs.numpy()})[0]
    assert sorted(kept.tolist()) == sorted(_greedy(boxes, scores, idxs, 0.5)[1])


def test_a_detectors_load_sums_every_nms_it_runs_and_follows_its_weights() -> None:
    spec = tiny_spec("retinanet")
    model = build(spec, BASE)
    original = torchvision.ops.boxes.batched_nms
    with recorded_nms() as calls, torch.no_grad():
        full_load(model)([probe_image(96, 96)])
    assert torchvision.ops.boxes.batched_nms is original  # restored
    assert calls and nms_load(model, (96, 96)) == sum(nms_comparisons(*c) for c in calls) > 0
    other = build(spec, BASE)  # other random weights: other boxes, another load
    with torch.no_grad():
        for p in other.head.parameters():
            p.mul_(3.0)
    assert nms_load(other, (96, 96)) != nms_load(model, (96, 96))
    with pytest.raises(RuntimeError, match="inside"), recorded_nms():
        raise RuntimeError("inside")
    assert torchvision.ops.boxes.batched_nms is original  # restored however the block ends
    with recorded_nms() as outer, recorded_nms() as inner:  # nested in one thread: both see the call, none hangs
        torchvision.ops.boxes.batched_nms(*_boxes(0, n=20), 0.5)
    assert len(outer) == len(inner) == 1 and torchvision.ops.boxes.batched_nms is original


def _table(slope_ms: float, *, noise: float = 0.0, detectors: int = 4) -> LatencyTable:
    """A table whose fixed entries' residuals are their own cost plus ``slope_ms`` per test."""
    table = LatencyTable(target="t", source="measured", fingerprint=Fingerprint("cpu", "onnxruntime", "1"))
    g = torch.Generator().manual_seed(0)
    for size in (64, 96, 128):
        loads = [int(x) for x in torch.randint(100_000, 3_000_000, (detectors,), generator=g)]
        residuals = [size / 32 + slope_ms * x + noise * float(torch.randn(1, generator=g)) for x in loads]
        entry = Entry(sum(residuals) / detectors, source="residual", info={"residuals_ms": residuals, LOADS: loads})
        table.put(fixed_key(tiny_spec(min_size=size, max_size=size), (size, size)), entry)
    return table


def test_the_cost_per_test_is_fitted_within_entries_or_not_at_all() -> None:
    assert nms_ms_per_test(_table(2e-6)) == pytest.approx(2e-6, rel=1e-6)  # each entry's own cost cancels
    assert nms_ms_per_test(_table(2e-6, noise=0.05)) == pytest.approx(2e-6, rel=0.1)
    assert nms_ms_per_test(_table(-1e-6)) is None  # not a cost
    assert nms_ms_per_test(_table(2e-6, detectors=2)) is None  # 6 detectors: too few to fit
    assert 3 * 2 < MIN_DETECTORS <= 3 * 4
    plain = _table(2e-6)
    for key, entry in list(plain.entries.items()):
        plain.put(key, Entry(entry.median_ms, source="residual", info={"residuals_ms": entry.info["residuals_ms"]}))
    assert nms_ms_per_test(plain) is None  # a table profiled before loads were kept: estimates unchanged
    assert nms_ms_per_test(_table(2e-6, noise=20.0)) is None  # a slope the noise could make: not a cost
    other = _table(2e-6)
    other.fingerprint = Fingerprint("cpu", "torch", "2")  # its NMS is not the loop replayed
    assert nms_ms_per_test(other) is None


def test_a_fixed_entry_moves_by_the_cost_of_the_load_beyond_its_mean() -> None:
    entry = Entry(3.0, source="residual", info={LOADS: [1_000_000, 3_000_000]})
    assert load_shift_ms(entry, 2_500_000, 2e-6) == pytest.approx(1.0)
    assert load_shift_ms(entry, 1_500_000, 2e-6) == pytest.approx(-1.0)
    assert load_shift_ms(entry, 0, 1e-3) == -3.0  # never below zero in all
    assert load_shift_ms(entry, 2_000_000, 2e-6) == 0.0  # at the mean: moved by nothing, but it follows
    assert load_shift_ms(entry, 2_500_000, None) is None
    assert load_shift_ms(Entry(3.0, source="residual"), 2_500_000, 2e-6) is None
    assert load_shift_ms(None, 2_500_000, 2e-6) is None


def test_an_unknown_load_is_not_recorded() -> None:
    entry = Entry(3.0, source="residual", info={"residuals_ms": [2.0, 4.0]})
    timings = [Entry(9.0, info={TIMED_LOAD: 5}), Entry(11.0, info={"detections": 100})]
    assert LOADS not in with_loads(entry, timings).info
    timings[1] = Entry(11.0, info={TIMED_LOAD: 7})
    assert with_loads(entry, timings).info == {**entry.info, LOADS: [5, 7]}
    single = Entry(1.0, source="residual", info={TIMED_LOAD: 5, "end_to_end_ms": 9.0})  # one detector's residual
    assert with_loads(single, timings[:1]).info == {"end_to_end_ms": 9.0, LOADS: [5]}  # its load as the list
    with recorded_nms() as calls:  # a forward that runs no NMS records nothing
        torch.nn.Linear(2, 2)(torch.zeros(1, 2))
    assert calls == []
    model = build(tiny_spec("retinanet"), BASE)
    model.postprocess_detections = lambda *a: [
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}
    ]
    assert nms_load(model, (96, 96)) is None  # unknown, not 0
    assert TIMED_LOAD not in probe(model, (96, 96)).info()


def test_a_whole_detector_timing_carries_the_load_of_the_forward_it_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The load is counted on the probe's own forward pass (one copy and one forward per timing, not two)
    and carried in the timing's info, where the profiler and the estimator's calibration read it."""
    import jdnas_sdk.latency.probe as probe_module
    from jdnas_sdk.latency.backends import OrtBackend, Timing

    model = build(tiny_spec("retinanet"), BASE)
    expected = nms_load(model, (96, 96))
    copies: list[object] = []
    monkeypatch.setattr(probe_module, "full_load", lambda m, f=probe_module.full_load: copies.append(m) or f(m))
    backend = OrtBackend(flush_mib=1, timing=Timing(warmup=1, min_runs=3, max_runs=3, min_time_s=0.0), isolate=False)
    timing = backend.measure_detector(model, (96, 96))
    assert timing.info[TIMED_LOAD] == expected > 0 and timing.info["detections"] > 0
    assert len(copies) == 1  # the timing's own probe, no second copy to count the load


def test_only_what_uses_the_load_replays_nms_and_only_the_recording_threads_calls_count(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replaying every NMS costs seconds on a large R-CNN: a claim's export (measured.export_probed)
    does not pay it; and a detector another thread runs meanwhile adds nothing to the load."""
    import threading

    import jdnas_sdk.latency.probe as probe_module
    from jdnas_sdk.measured import export_probed

    model = build(tiny_spec("retinanet"), BASE)
    expected = nms_load(model, (96, 96))

    def replayed(*args: object) -> int:
        raise AssertionError("replayed")

    with monkeypatch.context() as m:
        m.setattr(probe_module, "nms_comparisons", replayed)
        probed = export_probed(model, (96, 96), tmp_path / "m.onnx")  # no replay
        assert probed.info(load=False) == {"detections": probed.detections}
        with pytest.raises(AssertionError, match="replayed"):
            probed.info()
    assert probed.info()[TIMED_LOAD] == expected
    started, release = threading.Event(), threading.Event()

    def busy() -> None:
        started.set()
        release.wait(10)
        torchvision.ops.boxes.batched_nms(*_boxes(1, n=50), 0.5)  # another thread's NMS, while recording

    worker = threading.Thread(target=busy)
    worker.start()
    started.wait(10)
    with recorded_nms() as calls:
        release.set()
        worker.join(10)
        torchvision.ops.boxes.batched_nms(*_boxes(2, n=30), 0.5)
    assert len(calls) == 1 and len(calls[0][0]) == 30


def test_the_nms_cost_benchmark_sets_each_students_nms_time_beside_its_load(tmp_path) -> None:
    from jdnas_sdk import save_detector

    from .conftest import load_benchmark

    bench = load_benchmark("nms_cost")
    model = build(tiny_spec("retinanet"), BASE)
    save_detector(model, tmp_path / "m.pt")
    args = [
        "--model",
        str(tmp_path / "m.pt"),
        "--students",
        "3",
        "--runs",
        "2",
        "--results",
        str(tmp_path),
        "--name",
        "n",
    ]
    assert bench.main(args) == 0
    report = json.loads((tmp_path / "n.json").read_text())
    rows = report["rows"]
    assert len(rows) == 3 and rows[0]["code"] == "base" and report["machine"]["cores"] >= 1
    assert rows[0]["nms_tests"] == nms_load(model, (96, 96))  # the load the estimator follows
    assert all(r["nms_ms"] > 0 and r["wall_ms"] > r["nms_ms"] and r["nms_kept"] <= r["boxes_in"] for r in rows)
    assert set(report["fit_tests"]) == {"slope", "intercept", "r2"} and "IoU tests" in (tmp_path / "n.md").read_text()
    with pytest.raises(SystemExit):
        bench.main(["--model", str(tmp_path / "m.pt"), "--students", "2"])
