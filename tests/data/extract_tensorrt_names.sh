#!/usr/bin/env bash
# Extract every Python API name of a TensorRT release from its bindings wheel, without TensorRT's
# libraries or a GPU: the compiled pybind11 module (tensorrt.so) cannot be imported here, but its
# string table holds the name of every class, enum member, method and property it registers.
#
# Usage (from the repository root; the venv only downloads, nothing is installed):
#   tests/data/extract_tensorrt_names.sh 10.3.0      > tests/data/tensorrt_10.3_names.txt
#   tests/data/extract_tensorrt_names.sh 11.4.0.106  > tests/data/tensorrt_11.4_names.txt
#
# Rules: take the strings of the .so (`strings -n 2`), drop C++ mangled symbols (_Z...), keep the
# identifier-shaped ones and the identifier tail of a qualified name (`nvinfer1::DataType`,
# `numpy.bool`), and emit every suffix of those that starts with a letter or `_`: the linker
# merges a string into the tail of a longer one (`serialize` lives in `get_fields_to_serialize`,
# `Logger` in `ILogger`, `float16` in `bfloat16`). Free text is not used (docstrings mention
# `BuilderFlag.FP16` in 11.4, which has no such member). Plus the names the package's __init__.py
# defines at top level (`__version__`, `volume`, `nptype`). One name a line, sorted, unique.
# Checked: FP16, EXPLICIT_BATCH and OBEY_PRECISION_CONSTRAINTS are in 10.3's list and not 11.4's.
set -euo pipefail
version="${1:?usage: $0 TENSORRT_BINDINGS_VERSION}"
pip="${PIP:-/work/main/.venv/bin/pip}"
python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$pip" download --quiet --no-deps "tensorrt-cu12-bindings==${version}" -d "$tmp" >&2
(cd "$tmp" && unzip -q ./*.whl -d x)
so="$(find "$tmp/x" -name 'tensorrt*.so' | head -1)"
init="$(dirname "$so")/__init__.py"
{
  strings -n 2 "$so" | grep -v '^_Z' | awk '
    /^[A-Za-z_][A-Za-z0-9_]*$/ { t = $0 }
    !/^[A-Za-z_][A-Za-z0-9_]*$/ { if (!match($0, /[.:][A-Za-z_][A-Za-z0-9_]*$/)) next; t = substr($0, RSTART + 1) }
    { for (i = 1; i <= length(t); i++) { s = substr(t, i); if (s ~ /^[A-Za-z_]/) print s } }'
  "$python" - "$init" <<'PY'
import ast, sys
tree = ast.parse(open(sys.argv[1], encoding="utf-8").read())
for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        print(node.name)
    elif isinstance(node, ast.Assign):
        for target in node.targets:
            if isinstance(target, ast.Name):
                print(target.id)
PY
} | LC_ALL=C sort -u
