#!/usr/bin/env bash
# The GPU check: every GPU-marked test (`pytest -m gpu`) on a machine with CUDA, then a short
# report. On a CUDA machine a skipped GPU test is a failure (e.g. vLLM not installed), so exit 0
# means every GPU path ran: the vLLM engine contract with weight reload (CUDA IPC and file),
# sleep/wake, a 3-step colocated tiny-model run with vLLM, FSDP2 on GPU, LoRA on GPU.
#
#   bash scripts/setup.sh && .venv/bin/pip install -e '.[vllm]'   # once, on the GPU machine
#   bash scripts/gpu_check.sh                                    # PYTHON=... to use another interpreter
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
REPORT_DIR=${OUT:-$(mktemp -d)}
log() { printf '[gpu_check] %s\n' "$*"; }

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  log "no CUDA device visible to $PY: nothing to check"
  exit 3
fi
log "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
"$PY" -c 'import torch, transformers; print("[gpu_check] torch", torch.__version__, "cuda", torch.version.cuda, "| transformers", transformers.__version__)'
"$PY" -c 'import vllm; print("[gpu_check] vllm", vllm.__version__)' 2>/dev/null || log "vllm: not installed (pip install -e '.[vllm]'): its tests will be skipped, and the check fails"

start=$(date +%s)
"$PY" -m pytest -m gpu -p no:cacheprovider -q -rfEs --junitxml="$REPORT_DIR/gpu_check.xml" "$@"
status=$?
"$PY" - "$REPORT_DIR/gpu_check.xml" "$(( $(date +%s) - start ))" <<'EOF'
import sys
import xml.etree.ElementTree as ET

suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
cases = suite.findall("testcase")
state = lambda case: next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
counts = {s: sum(state(c) == s for c in cases) for s in ("passed", "failure", "error", "skipped")}
print(f"[gpu_check] {len(cases)} GPU tests in {sys.argv[2]} s: {counts['passed']} passed, "
      f"{counts['failure']} failed, {counts['error']} errors, {counts['skipped']} skipped")
for case in cases:
    print(f"  {state(case):8s} {case.get('classname')}::{case.get('name')} ({float(case.get('time', 0)):.1f} s)")
sys.exit(1 if counts["skipped"] else 0)
EOF
skipped=$?
if [ "$status" -ne 0 ]; then log "FAILED (pytest exit $status)"; exit "$status"; fi
if [ "$skipped" -ne 0 ]; then log "FAILED: GPU tests were skipped on a CUDA machine"; exit 1; fi
log "OK"
