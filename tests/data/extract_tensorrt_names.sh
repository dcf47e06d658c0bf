#!/usr/bin/env bash
# Extract every Python API name of a TensorRT release from its bindings wheel, without TensorRT's
# libraries or a GPU: the compiled pybind11 module (tensorrt.so) cannot be imported here, but its
# string table holds the name of every class, enum member, method and property it registers.
#
# Usage (from the repository root; the venv only downloads, nothing is installed):
#   tests/data/extract_tensorrt_names.sh 10.3.0      > tests/data/tensorrt_10.3_names.txt
#   tests/data/extract_tensorrt_names.sh 11.4.0.106  > tests/data/tensorrt_11.4_names.txt
#
# Rules: identifier-shaped strings of the .so (`strings -n 2`, then ^[A-Za-z_][A-Za-z0-9_]*$),
# C++ mangled symbols (_Z...) dropped; plus every suffix of an identifier that starts after an
# underscore, because the linker merges a string into the tail of a longer one (`serialize` lives
# inside `get_fields_to_serialize`); plus the names the package's __init__.py defines at top level
# (`__version__`, `volume`, `nptype`). One name a line, sorted, unique.
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
  strings -n 2 "$so" | grep -E '^[A-Za-z_][A-Za-z0-9_]*$' | grep -v '^_Z' \
    | awk '{ print; s = $0; while ((i = index(s, "_")) > 0) { s = substr(s, i + 1); if (s ~ /^[A-Za-z]/) print s } }'
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
