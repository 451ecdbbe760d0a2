"""Pretrain the tiny CPU "base model": a ~1M-parameter Qwen2 over characters.

    python -m tools.tiny.pretrain --out assets/tiny-math-base [--steps N --seed S]
    python -m tools.tiny.pretrain --out assets/tiny-emergent-base --curriculum emergent \
        --init assets/tiny-math-base --steps 600 --lr 1e-3

Trains on synthetic documents in which a fraction of the responses use a python block with its
real output and the rest reason without it: the ``arithmetic`` curriculum
(``tools.tiny.synthetic``) or the ``emergent`` one (``tools.tiny.emergent``: two
problem kinds, buggy and ineffective code, rare fixes), optionally continuing from a model
folder (``--init``) instead of a fresh initialisation. The loss covers the
model-written response tokens and EOS, not the prompt or the tool output. Afterwards it samples
responses to held-out problems with the real tool semantics and reports accuracy and code use,
then saves model, tokenizer, generation config and ``pretrain_report.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from torl_rllib.rollout.hf_engine import kv_cache_argument
from tools.tiny.emergent import emergent_split, sample_emergent_documents
from tools.tiny.self_check import run_self_check
from tools.tiny.synthetic import (
    Document,
    Multiplication,
    all_problems,
    sample_documents,
    shared_prefix,
    split_problems,
)
from tools.tiny.tokenizer import build_tokenizer

__all__ = ["PretrainConfig", "build_model", "encode_batch", "document_loss", "pretrain", "main"]

logger = logging.getLogger(__name__)
IGNORE_INDEX = -100
REPORT_FILE = "pretrain_report.json"


@dataclass
class PretrainConfig:
    """Every knob of the pretraining run, in one place."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    bf16: bool = True  # autocast matmuls to bfloat16 (AMX/AVX-512 CPUs); weights stay fp32
    code_fraction: float = 0.375  # 12 of every 32 documents (arithmetic; emergent: see its module)
    curriculum: str = "arithmetic"  # or "emergent"
    init: str | None = None  # a model folder to continue from (same tokenizer and shape)
    seed: int = 0
    data_seed: int = 0  # the problem split; must match the dataset files
    n_test: int = 400
    eval_samples: int = 200
    eval_budget: int = 128
    eval_tool_calls: int = 1  # C of the self-check
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    intermediate_size: int = 512
    max_positions: int = 1024


def build_model(config: PretrainConfig, vocab_size: int, eos_id: int) -> Qwen2ForCausalLM:
    """A freshly initialised Qwen2 causal LM of the configured size, tied embeddings, fp32."""
    model_config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    return Qwen2ForCausalLM(model_config)


def encode_batch(documents: Sequence[Document], tokenizer) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask`` and ``labels`` set only on trainable tokens and EOS."""
    rows = []
    for doc in documents:
        ids = tokenizer.encode(doc.prompt)
        labels = [IGNORE_INDEX] * len(ids)
        for text, trainable in doc.segments:
            piece = tokenizer.encode(text)
            ids += piece
            labels += piece if trainable else [IGNORE_INDEX] * len(piece)
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
        rows.append((ids, labels))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows]),
        "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
        "labels": torch.tensor([labels + [IGNORE_INDEX] * (width - len(labels)) for _, labels in rows]),
    }


def document_loss(model, batch: dict[str, torch.Tensor], prefix_len: int) -> torch.Tensor:
    """The causal-LM loss of ``batch``, running the prompt prefix all documents share only once.

    The prefix's key/value cache is computed for one row and repeated over the batch (gradients
    flow through it), which gives the same loss as a full forward pass at a fraction of the cost:
    the template is ~60% of every document.
    """
    ids = batch["input_ids"]
    if not torch.equal(ids[:, :prefix_len], ids[:1, :prefix_len].expand(ids.shape[0], -1)):
        raise ValueError("documents of a batch must share their first prefix_len tokens")
    cache_arg = kv_cache_argument(model)
    cache = getattr(model(input_ids=ids[:1, :prefix_len], use_cache=True), cache_arg)
    cache.batch_repeat_interleave(ids.shape[0])
    return model(
        input_ids=ids[:, prefix_len:],
        attention_mask=batch["attention_mask"],
        labels=batch["labels"][:, prefix_len:],
        **{cache_arg: cache},
    ).loss


def learning_rate(step: int, config: PretrainConfig) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


CURRICULA = ("arithmetic", "emergent")


def curriculum_documents(problems: Sequence[Multiplication], config: PretrainConfig, seed: int) -> list[Document]:
    """One batch of the configured curriculum's documents."""
    if config.curriculum == "emergent":
        return sample_emergent_documents(problems, config.batch_size, seed)
    return sample_documents(problems, config.batch_size, config.code_fraction, seed)


def self_check_problems(config: PretrainConfig) -> list[Multiplication]:
    """The held-out problems the self-check samples (the emergent curriculum adds the times table)."""
    if config.curriculum == "emergent":
        return emergent_split(config.data_seed, 0, config.eval_samples)[1]
    return split_problems(config.data_seed, 0, config.n_test)[1][: config.eval_samples]


def pretrain(model, tokenizer, problems: Sequence[Multiplication], config: PretrainConfig) -> list[float]:
    """Train ``model`` in place on freshly sampled documents; returns the loss of every step."""
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=(0.9, 0.98), weight_decay=config.weight_decay
    )
    prefix_len = len(tokenizer.encode(shared_prefix()))
    model.train()
    losses = []
    progress = tqdm(range(config.steps), desc="pretrain", unit="step")
    for step in progress:
        seed = config.seed * 1_000_003 + step
        docs = curriculum_documents(problems, config, seed)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            loss = document_loss(model, encode_batch(docs, tokenizer), prefix_len)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        progress.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses


def main(argv: Sequence[str] | None = None) -> None:
    defaults = PretrainConfig()
    parser = argparse.ArgumentParser(description="Pretrain the tiny character-level math base model on CPU.")
    parser.add_argument("--out", required=True, help="folder for the model, tokenizer and report")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--code-fraction", type=float, default=defaults.code_fraction)
    parser.add_argument("--eval-samples", type=int, default=defaults.eval_samples)
    parser.add_argument("--curriculum", choices=CURRICULA, default=defaults.curriculum)
    parser.add_argument("--init", default=None, help="continue from this model folder")
    parser.add_argument("--eval-budget", type=int, default=defaults.eval_budget, help="self-check response tokens")
    parser.add_argument("--eval-tool-calls", type=int, default=defaults.eval_tool_calls, help="self-check C")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)

    config = PretrainConfig(
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        code_fraction=args.code_fraction,
        eval_samples=args.eval_samples,
        curriculum=args.curriculum,
        init=args.init,
        eval_budget=args.eval_budget,
        eval_tool_calls=args.eval_tool_calls,
    )
    # Pretraining sees every problem except the held-out test split the self-check uses.
    pool, _ = split_problems(config.data_seed, len(all_problems()) - config.n_test, config.n_test)
    tokenizer = build_tokenizer()
    torch.manual_seed(config.seed)
    if config.init:
        model = Qwen2ForCausalLM.from_pretrained(config.init, dtype=torch.float32)
    else:
        model = build_model(config, len(tokenizer), tokenizer.eos_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %d parameters; %d threads; config %s", n_params, args.threads, config)

    started = time.time()
    losses = pretrain(model, tokenizer, pool, config)
    train_seconds = time.time() - started
    report, trajectories = run_self_check(model, tokenizer, self_check_problems(config), config.eval_budget,
                                    config.seed, max_tool_calls=config.eval_tool_calls)
    for trajectory in trajectories[:3]:
        logger.info("sample (code=%s, correct=%s): %r", trajectory.used_code, trajectory.correct, trajectory.response)

    out = Path(args.out)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_new_tokens=config.eval_budget,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    summary = {
        "command": "python -m tools.tiny.pretrain " + shlex.join(sys.argv[1:] if argv is None else argv),
        "config": asdict(config),
        "parameters": n_params,
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "train_seconds": round(train_seconds, 1),
        "eval": report.to_dict(),
    }
    (out / REPORT_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"parameters: {n_params}  train time: {train_seconds:.0f}s  final loss: {summary['final_loss']:.4f}")
    print(
        f"accuracy {report.accuracy:.3f}  code ratio {report.code_ratio:.3f}  "
        f"accuracy with code {report.accuracy_with_code:.3f}  without code {report.accuracy_without_code:.3f}  "
        f"({report.samples} samples, temperature 1.0)"
    )
    for kind, sub in report.by_kind.items():
        print(f"  {kind}: accuracy {sub.accuracy:.3f}  code ratio {sub.code_ratio:.3f}  "
              f"with code {sub.accuracy_with_code:.3f}  without {sub.accuracy_without_code:.3f}  "
              f"failed calls {sub.failed_call_rate:.3f}  recovered {sub.recovery_rate:.3f}")
    print(f"saved to {out}")


if __name__ == "__main__":
    main()
