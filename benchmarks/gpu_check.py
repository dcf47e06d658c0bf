"""The one-command GPU check (issue 14, item 8): the CUDA and TensorRT paths confirmed on a real GPU.

Under 10 minutes on one GPU. Steps, each recorded (with the machine and ``jdnas doctor``'s report)
in ``benchmarks/results/gpu_check.{json,md}``:

1. ops: three convolutions timed by the torch backend in FP32 and FP16 (autocast, channels_last,
   cudnn.benchmark, L2 flushed between runs);
2. FP16 detector: a Faster R-CNN with 91 classes at 800 x 1333 px under FP16 autocast (boxes kept
   FP32) against FP32: detection counts and the fraction of detections paired (IoU > 0.9, same label);
3. a tiny ``jdnas profile`` (torch CUDA FP16, and TensorRT where it imports): every op measured,
   the fixed entry a residual >= 0 (profiling refuses a negative one), and the sum of op entries
   against the end-to-end time;
4. where TensorRT imports: engine outputs against ONNX Runtime (RetinaNet whole graph, with its
   data-dependent NMS output; Faster R-CNN as split engines), and the native profiler where built.

    python benchmarks/gpu_check.py            # on a machine with a CUDA device
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from jdnas_sdk import DetectorSpec
from jdnas_sdk._io import atomic_write_json
from jdnas_sdk.arch import Arch
from jdnas_sdk.detectors import build_detector, detector_onnx
from jdnas_sdk.doctor import doctor, format_report
from jdnas_sdk.latency import LatencyTable, OpKey, open_table, profile
from jdnas_sdk.latency.backends import Timing, TorchBackend, make_backend, tensorrt_available
from jdnas_sdk.latency.backends.torch_backend import keep_boxes_fp32
from jdnas_sdk.latency.lower import fixed_key
from jdnas_sdk.latency.probe import full_load, probe_image
from jdnas_sdk.machine import command_line, machine_info
from jdnas_sdk.space import SearchSpace

HERE = Path(__file__).resolve().parent
BASE = Arch.parse("basic:16|16:16x1|32:32x1|64:64x1|128:128x1")
OPS = [
    "conv(n=1,cin=64,cout=64,k=3,s=1,g=1,h=200,w=336,norm=bn,act=relu,add=1)",
    "conv(n=1,cin=256,cout=256,k=3,s=1,g=1,h=50,w=84,norm=bn,act=relu,add=0)",
    "conv(n=1,cin=512,cout=512,k=3,s=1,g=1,h=25,w=42,norm=bn,act=relu,add=1)",
]


def tiny_spec(family: str, **kw: Any) -> DetectorSpec:
    defaults: dict[str, Any] = dict(
        backbone="resnet18", num_classes=9, min_size=256, max_size=256, fpn_channels=64, representation_size=128
    )
    defaults.update(kw)
    return DetectorSpec(family=family, **defaults)


def check_ops(timing: Timing) -> dict[str, Any]:
    rows = {}
    for text in OPS:
        key = OpKey.parse(text)
        fp32 = TorchBackend(device="cuda", precision="fp32", timing=timing).measure_op(key)
        fp16 = TorchBackend(device="cuda", precision="fp16", timing=timing).measure_op(key)
        rows[text] = {"fp32_ms": fp32.median_ms, "fp16_ms": fp16.median_ms, "speedup": fp32.median_ms / fp16.median_ms}
    return {"ops": rows, "ok": all(r["fp16_ms"] > 0 for r in rows.values())}


def _paired(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    from torchvision.ops import box_iou

    if len(a["boxes"]) == 0 or len(b["boxes"]) == 0:
        return float(len(a["boxes"]) == len(b["boxes"]))
    iou = box_iou(a["boxes"].float(), b["boxes"].float())
    iou[a["labels"][:, None] != b["labels"][None, :]] = 0
    return float((iou.max(dim=1).values > 0.9).float().mean())


def check_fp16_detector() -> dict[str, Any]:
    torch.manual_seed(0)
    spec = DetectorSpec(family="fasterrcnn", backbone="resnet18", num_classes=91, min_size=800, max_size=1333)
    model = full_load(build_detector(spec)).cuda().eval().to(memory_format=torch.channels_last)
    image = probe_image(800, 1333).cuda()
    with torch.no_grad():
        fp32 = model([image])[0]
        handles = keep_boxes_fp32(model)
        with torch.autocast("cuda", dtype=torch.float16):
            fp16 = model([image])[0]
        for handle in handles:
            handle.remove()
    counts = (len(fp32["boxes"]), len(fp16["boxes"]))
    paired = _paired(fp16, fp32)
    return {
        "detections_fp32": counts[0],
        "detections_fp16": counts[1],
        "paired": paired,
        "fp16_boxes_dtype": str(fp16["boxes"].dtype),
        "ok": counts[0] == counts[1] and paired > 0.9,
    }


def check_profile(backend_name: str, precision: str, timing: Timing, out: Path) -> dict[str, Any]:
    spec = tiny_spec("fasterrcnn")
    backend = make_backend(backend_name, device="cuda", precision=precision, timing=timing)
    path = out / f"gpu_check_{backend_name}_{precision}.json"
    path.unlink(missing_ok=True)
    table = open_table(path, f"gpu-check-{backend_name}", backend)
    profile(
        table,
        backend,
        spec,
        base=BASE,
        input_sizes=[(256, 256)],
        space=SearchSpace(BASE, width_ratios=(1.0,)),
        progress=False,
    )
    table = LatencyTable.load(path)
    fixed = table.get(fixed_key(spec, (256, 256)))
    assert fixed is not None
    e2e, ops = fixed.info["end_to_end_ms"], fixed.info["ops_ms"]
    return {
        "table": str(path),
        "ops": len(table) - 1,
        "end_to_end_ms": e2e,
        "ops_ms": ops,
        "residual_ms": fixed.median_ms,
        "ops_share": ops / e2e,
        "fingerprint": table.fingerprint.describe(),
        "ok": fixed.median_ms >= 0,
    }


def check_tensorrt_parity() -> dict[str, Any]:
    import onnxruntime as ort

    from jdnas_sdk.latency.backends.tensorrt_backend import EngineRunner, build_engine
    from jdnas_sdk.latency.backends.trt_engine import EngineBuilder
    from jdnas_sdk.latency.backends.trt_rcnn import tensorrt_split_rcnn

    result: dict[str, Any] = {}
    model = full_load(build_detector(tiny_spec("retinanet"))).eval()
    image = probe_image(256, 256)
    graph = detector_onnx(model, (256, 256))
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": image.numpy()})))
    runner = EngineRunner(build_engine(graph, precision="fp32"))
    runner.feed("image", image.cuda())
    runner.run()
    got = {name: runner.output(name).cpu() for name in runner.outputs}
    result["retinanet"] = {
        "ort_detections": int(want["boxes"].shape[0]),
        "trt_detections": int(got["boxes"].shape[0]),
        "paired": _paired({k: torch.as_tensor(v) for k, v in want.items()}, got),
    }
    rcnn = full_load(build_detector(tiny_spec("fasterrcnn"))).eval()
    with torch.no_grad():
        torch_out = rcnn([image])[0]
    split = tensorrt_split_rcnn(rcnn, (256, 256), EngineBuilder(precision="fp32"))(image.cuda())
    result["fasterrcnn_split"] = {
        "torch_detections": len(torch_out["boxes"]),
        "trt_detections": len(split["boxes"]),
        "paired": _paired({k: v.cpu() for k, v in split.items()}, torch_out),
    }
    result["ok"] = all(r["paired"] > 0.9 for r in result.values() if isinstance(r, dict))
    return result


def run_step(name: str, step: Callable[[], dict[str, Any]], report: dict[str, Any]) -> None:
    start = time.monotonic()
    try:
        report["steps"][name] = {**step(), "seconds": round(time.monotonic() - start, 1)}
    except Exception as exc:  # a failed step is a result: record it and go on
        report["steps"][name] = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "trace": traceback.format_exc()[-3000:],
            "seconds": round(time.monotonic() - start, 1),
        }
    print(f"{name}: {report['steps'][name]}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device here (torch {torch.__version__}, built with CUDA "
            f"{torch.version.cuda or 'none'}); "
            "nothing was run. Run it on a machine with an NVIDIA GPU.",
            file=sys.stderr,
        )
        return 2
    timing = Timing(warmup=5, min_runs=20, max_runs=200, min_time_s=0.2)
    args.results.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "command": command_line("benchmarks/gpu_check.py", argv),
        "doctor": format_report(doctor()),
        "steps": {},
    }
    run_step("ops_fp32_fp16", lambda: check_ops(timing), report)
    run_step("fp16_detector", check_fp16_detector, report)
    run_step("profile_torch_fp16", lambda: check_profile("torch", "fp16", timing, args.results), report)
    if tensorrt_available() is None:
        run_step("profile_tensorrt_fp16", lambda: check_profile("tensorrt", "fp16", timing, args.results), report)
        run_step("tensorrt_parity", check_tensorrt_parity, report)
    else:
        report["steps"]["tensorrt"] = {"ok": None, "skipped": str(tensorrt_available())}
    atomic_write_json(args.results / "gpu_check.json", report)
    lines = [
        "# GPU check",
        "",
        f"Run {report['date']} on {report['machine'].get('cuda_device')}.",
        "",
        "```",
        report["doctor"],
        "```",
        "",
        "| step | ok | seconds | result |",
        "|---|---|---|---|",
    ]
    for name, step in report["steps"].items():
        shown = {k: v for k, v in step.items() if k not in ("ok", "seconds", "trace")}
        lines.append(f"| {name} | {step.get('ok')} | {step.get('seconds', '')} | {shown} |")
    (args.results / "gpu_check.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0 if all(s.get("ok") is not False for s in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
