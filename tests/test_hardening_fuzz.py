"""Fuzzing (issue 16, item 4): table JSON, COCO JSON and archive / result JSON, mutated field by
field or replaced by garbage, either load or raise a JdnasError; nothing else gets out."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from jdnas_sdk.data import CocoDetection
from jdnas_sdk.errors import JdnasError
from jdnas_sdk.latency import LatencyTable
from jdnas_sdk.report.search import check_result
from jdnas_sdk.search.archive import Archive

#: Modest by default (seconds); JDNAS_FUZZ_EXAMPLES=2000 for a deeper run.
SETTINGS = settings(
    max_examples=int(os.environ.get("JDNAS_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)

TABLE = {
    "format": "jdnas-latency-table",
    "schema_version": 1,
    "target": "t",
    "source": "measured",
    "unit": "ms",
    "device": {
        "device": "cpu",
        "backend": "onnxruntime",
        "backend_version": "1",
        "precision": "fp32",
        "batch": 1,
        "threads": 1,
        "provider": "",
        "driver": "",
        "optimization": "",
        "machine": "",
    },
    "model": None,
    "created": "",
    "updated": "",
    "notes": "",
    "entries": {
        "relu(c=8,h=4,w=4)": {"median_ms": 0.1, "spread_ms": 0.0, "samples": 3, "source": "measured"},
        "fixed(family=fasterrcnn,classes=9,fpn=16,levels=1234,rep=32,dets=0,h=64,w=64,rh=64,rw=64)": {
            "median_ms": 1.0,
            "source": "residual",
            "info": {"end_to_end_ms": 2.0},
        },
    },
}
COCO = {
    "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
    "annotations": [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [2, 2, 10, 10],
            "iscrowd": 0,
            "area": 100,
            "segmentation": {"size": [32, 32], "counts": [66, 10, 22, 10, 916]},
        }
    ],
    "categories": [{"id": 1, "name": "box"}],
}
CANDIDATE = {
    "index": 0,
    "arch": "basic:16|16:16x1",
    "parent": None,
    "actions": [],
    "teacher": None,
    "latency_ms": 9.0,
    "ap": 0.1,
    "ap50": 0.2,
    "ap75": 0.1,
    "file": "cand_0.pt",
    "bound_ms": None,
    "wall_s": 1.0,
    "rejected": 0,
}
ARCHIVE = {
    "format": "jdnas-search-archive",
    "version": 1,
    "settings": {"a": 1},
    "candidates": [CANDIDATE, {**CANDIDATE, "index": 1, "parent": 0, "actions": ["x"], "file": "cand_1.pt"}],
}
METRICS = {
    "ap": 0.1,
    "ap50": 0.2,
    "ap75": 0.1,
    "estimated_ms": 9.0,
    "measured_ms": None,
    "params": 1,
    "macs": 2,
    "arch": "basic:16|16:16x1",
}
RESULT = {
    "history": ARCHIVE["candidates"],
    "chosen": 1,
    "target": "cpu-ort",
    "target_ms": 8.0,
    "method": "joint",
    "modelled": False,
    "device": "cpu",
    "input_size": [64, 64],
    "wall_s": 1.0,
    "metrics": {"base": METRICS, "student": METRICS},
    "breakdown": {"base": {"stem": 1.0}, "student": {"stem": 1.0}},
}


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, prefix + (index,))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """``base`` with one to three fields replaced by random JSON or removed (or garbage outright)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)[1:] or [()]))
        if not path:
            return draw(JSON)
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()) and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(JSON)
        except (KeyError, IndexError, TypeError):
            continue
    return doc


def _write(path: Path, doc: Any, garbage: bytes | None) -> None:
    path.write_bytes(garbage if garbage is not None else json.dumps(doc).encode())


GARBAGE = st.none() | st.none() | st.none() | st.binary(max_size=64)


@SETTINGS
@given(doc=mutated(TABLE), garbage=GARBAGE)
def test_fuzzed_tables_load_or_raise_a_jdnas_error(
    tmp_path_factory: pytest.TempPathFactory, doc: Any, garbage: bytes | None
) -> None:
    path = tmp_path_factory.mktemp("t") / "t.json"
    _write(path, doc, garbage)
    try:
        table = LatencyTable.load(path)
    except JdnasError:
        return
    table.save()  # what loads also writes back
    assert len(LatencyTable.load(path)) == len(table)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    Image.new("RGB", (32, 32), (200, 10, 10)).save(folder / "a.png")
    return folder


@SETTINGS
@given(doc=mutated(COCO), garbage=GARBAGE, masks=st.booleans())
def test_fuzzed_coco_files_load_or_raise_a_jdnas_error(
    images: Path, tmp_path_factory: pytest.TempPathFactory, doc: Any, garbage: bytes | None, masks: bool
) -> None:
    path = tmp_path_factory.mktemp("c") / "instances.json"
    _write(path, doc, garbage)
    try:
        data = CocoDetection(images, path, with_masks=masks)
        for index in range(len(data)):
            data[index]
        data.coco_ground_truth()
    except JdnasError:
        return


@SETTINGS
@given(doc=mutated(ARCHIVE), garbage=GARBAGE)
def test_fuzzed_archives_open_or_raise_a_jdnas_error(
    tmp_path_factory: pytest.TempPathFactory, doc: Any, garbage: bytes | None
) -> None:
    path = tmp_path_factory.mktemp("a") / "archive.json"
    _write(path, doc, garbage)
    try:
        archive = Archive.open(path, {"a": 1})
    except JdnasError:
        return
    archive.front()
    archive.best(5.0)


@SETTINGS
@given(doc=mutated(RESULT))
def test_fuzzed_results_pass_the_report_check_or_raise_a_jdnas_error(doc: Any) -> None:
    try:
        check_result(doc, origin="result.json")
    except JdnasError:
        return
    from jdnas_sdk.report.search import _lineage, _markdown
    from jdnas_sdk.search.archive import validate_candidates

    cands = validate_candidates(doc["history"], origin="result.json")
    assert _lineage(cands, doc["chosen"])[-1] == 0 or cands[_lineage(cands, doc["chosen"])[-1]].parent is None
    try:
        _markdown(doc, ("p.png", "t.png"))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        pass  # write_report turns these into a SearchError naming the file (tested in test_hardening_archive)
