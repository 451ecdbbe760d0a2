"""Weight sync into the vLLM engine, file path: ``python benchmarks/weight_sync.py [--json]``.

Each sync stages the policy as one safetensors file (in ``/dev/shm``) and every vLLM worker
reloads it (``VLLMEngine.load_weights``, ``weight_sync="file"``; vLLM's CPU build has no
in-memory weight-transfer backend: ipc, nccl, sparse_nccl, sharded_rdt and nccl_m2n all move
CUDA tensors). Measured on the shipped tiny model and on a random ~85 M-parameter Qwen2 (float32),
with the staging write alone as the baseline in the same run; the per-byte cost of the larger one
is then carried over to Qwen2.5-Math-1.5B and -7B in bfloat16, as an estimate.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from benchmarks.common import TINY_MODEL as TINY, elapsed, median, parser as make_parser, ratio, report  # noqa: E402

# Parameter counts of the paper's models (bfloat16 on the GPU: 2 bytes each).
PAPER_MODELS = {"Qwen2.5-Math-1.5B": 1.54e9, "Qwen2.5-Math-7B": 7.62e9}


def random_qwen2(path: Path) -> Path:
    """A random Qwen2 of ~85 M parameters with the tiny model's tokenizer."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(TINY)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=1024,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def measure(model_dir: Path, repeats: int) -> dict:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from torl_rllib.rollout.vllm_engine import VLLMEngine

    state = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    engine = VLLMEngine(str(model_dir), dtype="float32")
    try:
        engine.load_weights(state)  # warm-up
        syncs = [elapsed(lambda: engine.load_weights(state)) for _ in range(repeats)]
    finally:
        engine.shutdown()
    staging = []
    for _ in range(repeats):
        tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
        with tempfile.TemporaryDirectory(dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None) as tmp:
            staging.append(elapsed(lambda: save_file(tensors, os.path.join(tmp, "model.safetensors"))))
    sync_s, staging_s = median(syncs), median(staging)
    return {"model": model_dir.name, "parameters": sum(t.numel() for t in state.values()), "bytes": nbytes,
            "sync_s": sync_s, "staging_write_s": staging_s, "sync_vs_staging_write": sync_s / staging_s,
            "bytes_per_s": nbytes / sync_s}


def main(argv=None) -> dict:
    parser = make_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(TINY, args.repeats), measure(random_qwen2(Path(tmp) / "qwen2-85m"), args.repeats)]
    rate = results[-1]["bytes_per_s"]
    result = {"measured": results, "estimated_sync_s_bf16": {
        name: 2 * params / rate for name, params in PAPER_MODELS.items()}}
    return report(result, args.json, lambda: [
        *(f"{r['model']:>16}: {r['parameters'] / 1e6:7.1f} M params, {r['bytes'] / 2**20:7.1f} MiB | "
          f"sync {r['sync_s']:.3f} s (staging write {r['staging_write_s']:.3f} s, "
          f"{ratio(r['sync_vs_staging_write'], 1)}) | {r['bytes_per_s'] / 2**30:.2f} GiB/s" for r in results),
        *(f"estimate, {name} in bfloat16 at {rate / 2**30:.2f} GiB/s: {seconds:.1f} s per sync"
          for name, seconds in result["estimated_sync_s_bf16"].items())])


if __name__ == "__main__":
    main()
