"""Rollout benchmark: ``python benchmarks/rollout.py [--json]``.

Runs the same trajectories (same prompts, seeds, engine and tool results) two ways in one run:

* **ours**: every trajectory runs the tool loop on its own; the HF engine batches continuously,
  so a trajectory back from its tool call joins the running batch at the next decode step;
* **barrier** (ToRL/verl-style rounds): everyone generates, then everyone's code runs, then
  everyone continues; a round ends when its slowest generation or tool call does.

Tool calls get a latency drawn from a skewed distribution (by default 20 % of the calls take
0.2-1 s, the rest 2-10 ms, as the interpreter's real mix of quick prints and slow sympy runs),
the same for a given (trajectory, call) in both modes, and each occupies one of ``--jails``
interpreters for that long (a sandbox pool runs one snippet per jail at a time; calls beyond
that queue, as in ``SandboxPool``). The tool output itself is a fixed function of the code
(``--sandbox nsjail`` runs the code in a real warm-jail pool of that many jails instead).

It prints the rollout wall time of both, the ratio, the generator-busy fraction (time the
engine had at least one runnable sequence / rollout time; the HF engine's own count, vLLM keeps
none) and tokens per second; then, without tools and with greedy decoding, the engine's
tokens/s against plain ``model.generate`` on the same prompts (all distinct) and budget.
``--json`` prints one object with ``speedup_vs_barrier``, ``generator_busy_fraction`` and
``tokens_per_s_vs_generate``.

``--engine hf|vllm|both`` picks the engine (vLLM: its CPU build on a CPU machine); ``both`` runs
the same prompts and seeds on each, one after the other, and prints them side by side (``--json``:
``{"engines": {"hf": {...}, "vllm": {...}}}``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from benchmarks.common import TINY_MODEL, TINY_TRAIN_DATA, median, parser as make_parser, ratio  # noqa: E402
from torl_rllib.rollout.engine import SamplingParams  # noqa: E402
from torl_rllib.rollout.hf_engine import HFEngine  # noqa: E402
from torl_rllib.rollout.tool_loop import ToolLoopConfig, run_trajectory  # noqa: E402

DEFAULT_MODEL = TINY_MODEL
DEFAULT_DATA = TINY_TRAIN_DATA


@dataclass(frozen=True)
class Latency:
    """Tool-call latency: ``slow_fraction`` of the calls take U(slow_s), the rest U(fast_s)."""

    slow_fraction: float = 0.2
    slow_s: tuple[float, float] = (0.2, 1.0)
    fast_s: tuple[float, float] = (0.002, 0.010)

    def of(self, seed: int, trajectory: int, call: int) -> float:
        rng = random.Random(f"{seed}/{trajectory}/{call}")
        low, high = self.slow_s if rng.random() < self.slow_fraction else self.fast_s
        return rng.uniform(low, high)


class _StubResult:
    """What the default stand-in interpreter returns: a fixed function of the code."""

    timed_out = False
    ok = True
    stderr = ""
    error = None

    def __init__(self, code: str):
        self.stdout = f"{int(hashlib.blake2b(code.encode(), digest_size=3).hexdigest(), 16) % 1000}\n"


class PhaseBarrier:
    """An asyncio barrier whose parties can leave (a finished trajectory stops taking part)."""

    def __init__(self, parties: int):
        self.parties, self._arrived, self._release = parties, 0, asyncio.Event()

    async def wait(self) -> None:
        self._arrived += 1
        release = self._release
        if self._arrived >= self.parties:
            self._open()
        else:
            await release.wait()

    def leave(self) -> None:
        self.parties -= 1
        if self.parties and self._arrived >= self.parties:
            self._open()

    def _open(self) -> None:
        self._release.set()
        self._release, self._arrived = asyncio.Event(), 0


class _RoundEngine:
    """The engine seen through ToRL's rounds: generation starts when every live trajectory is
    ready to generate (all tool calls done) and tools run when every generation is done."""

    def __init__(self, engine, barrier: PhaseBarrier):
        self.engine, self.barrier = engine, barrier

    async def generate(self, prompt_ids, params):
        await self.barrier.wait()
        out = await self.engine.generate(prompt_ids, params)
        await self.barrier.wait()
        return out


def load_prompts(tokenizer, data: Path, n: int, template: str) -> list[list[int]]:
    from torl_rllib.tasks import load_dataset, render_prompt

    problems = load_dataset(str(data)).problems[:n]
    return [tokenizer.encode(render_prompt(template, p.problem, tokenizer), add_special_tokens=False)
            for p in problems]


def run_tool_rollout(engine, tokenizer, prompts, group, loop_config, latency, seed, sandbox, barrier: bool,
                     jails: int = 8):
    """All ``len(prompts) * group`` trajectories → (wall s, engine busy s, model tokens, trajectories)."""

    async def rollout():
        interpreters = asyncio.Semaphore(jails)
        trajectories = [(i, prompt) for i, prompt in enumerate(p for p in prompts for _ in range(group))]
        phases = PhaseBarrier(len(trajectories)) if barrier else None
        gen = _RoundEngine(engine, phases) if barrier else engine
        sampling = SamplingParams(max_new_tokens=loop_config.max_response_tokens, temperature=1.0)

        async def one(index, prompt):
            calls = 0

            async def execute(code):
                nonlocal calls
                calls += 1
                delay = latency.of(seed, index, calls)
                async with interpreters:
                    result = await asyncio.to_thread(sandbox.execute, code) if sandbox else _StubResult(code)
                    await asyncio.sleep(max(0.0, delay - getattr(result, "duration_s", 0.0)))
                return result

            try:
                return await run_trajectory(gen, execute, tokenizer, prompt, sampling, loop_config, seed * 100_003 + index)
            finally:
                if phases:
                    phases.leave()

        return await asyncio.gather(*(one(i, p) for i, p in trajectories))

    busy, start = _busy_s(engine), time.perf_counter()
    trajectories = asyncio.run(rollout())
    wall = time.perf_counter() - start
    busy = None if busy is None else _busy_s(engine) - busy
    return wall, busy, sum(t.num_model_tokens for t in trajectories), trajectories


def _busy_s(engine) -> float | None:
    """Seconds the engine has had a runnable sequence (the HF engine counts them; vLLM does not)."""
    stats = getattr(engine, "stats", None)
    return None if stats is None else stats.busy_s


def build_engine(name: str, model_path: str, model, tokenizer, max_batch_size: int):
    """The engine under test: ``hf`` over ``model``, or ``vllm`` loading ``model_path`` (float32)."""
    if name == "hf":
        return HFEngine(model, tokenizer, max_batch_size=max_batch_size)
    from torl_rllib.rollout.vllm_engine import VLLMEngine

    return VLLMEngine(model_path, dtype="float32", max_num_seqs=max_batch_size)


def run_no_tool(engine, model, prompts, budget, pad_id, eos_ids):
    """Greedy, no tools: (our s, our tokens, generate s, generate tokens); both give the same ids."""
    params = SamplingParams(max_new_tokens=budget, temperature=0.0)
    start = time.perf_counter()
    ours = engine.generate_batch(prompts, params)
    ours_s = time.perf_counter() - start
    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    start = time.perf_counter()
    with torch.no_grad():
        generated = model.generate(input_ids=ids, attention_mask=attn, do_sample=False, max_new_tokens=budget,
                                   pad_token_id=pad_id, eos_token_id=sorted(eos_ids))
    generate_s = time.perf_counter() - start
    generate_tokens = 0
    for row in generated[:, width:].tolist():
        ends = [i for i, t in enumerate(row) if t in eos_ids]
        generate_tokens += ends[0] + 1 if ends else len(row)
    return ours_s, sum(len(o.token_ids) for o in ours), generate_s, generate_tokens


def main(argv=None) -> dict:
    parser = make_parser(__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--template", default="tir_base_0309")
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--group", type=int, default=4, help="trajectories per problem")
    parser.add_argument("--max-batch-size", type=int, default=64, help="the engine's (rollout.engine_max_batch_size)")
    parser.add_argument("--max-tool-calls", type=int, default=2, help="C")
    parser.add_argument("--budget", type=int, default=160, help="response tokens per trajectory")
    parser.add_argument("--slow-fraction", type=float, default=0.2)
    parser.add_argument("--jails", type=int, default=8, help="interpreters running snippets at once")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each mode; medians reported")
    parser.add_argument("--sandbox", choices=["stub", "nsjail"], default="stub",
                        help="stub: a fixed output per code; nsjail: run the code in a warm-jail pool")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--engine", choices=["hf", "vllm", "both"], default="hf",
                        help="the rollout engine (both: each on the same prompts and seeds)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    names = ["hf", "vllm"] if args.engine == "both" else [args.engine]
    reports = {name: measure(name, args, model, tokenizer) for name in names}
    if args.json:
        print(json.dumps(reports[names[0]] if len(names) == 1 else {"engines": reports}))
    else:
        for name, report in reports.items():
            print_report(name, report, args)
    return reports[names[0]] if len(names) == 1 else reports


def measure(name: str, args, model, tokenizer) -> dict:
    """Both rollout modes, then the no-tool comparison, on engine ``name``."""
    engine = build_engine(name, args.model, model, tokenizer, args.max_batch_size)
    prompts = load_prompts(tokenizer, Path(args.data), args.problems, args.template)
    loop_config = ToolLoopConfig(max_tool_calls=args.max_tool_calls, max_response_tokens=args.budget)
    latency = Latency(slow_fraction=args.slow_fraction)
    sandbox = None
    if args.sandbox == "nsjail":
        from sandbox import SandboxConfig, WarmJailPool

        sandbox = WarmJailPool(SandboxConfig(jails=args.jails)).__enter__()
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))
    try:
        engine.generate_batch(prompts[:4], SamplingParams(max_new_tokens=16, seed=0))  # warm-up
        runs = {"ours": [], "barrier": []}
        for repeat in range(args.repeats):
            for mode in ("barrier", "ours") if repeat % 2 else ("ours", "barrier"):
                wall, busy, tokens, trajs = run_tool_rollout(
                    engine, tokenizer, prompts, args.group, loop_config, latency, args.seed, sandbox, mode == "barrier",
                    args.jails)
                runs[mode].append({"wall_s": wall, "busy_s": busy, "tokens": tokens,
                                   "tool_calls": sum(len(t.tool_calls) for t in trajs),
                                   "ids": [t.response_ids for t in trajs]})
                log(f"  {name} {mode:8s} run {repeat + 1}: {wall:6.2f} s, {tokens} tokens"
                    + ("" if busy is None else f", busy {busy / wall:.0%}"))
        same = sum(a == b for a, b in zip(runs["ours"][0]["ids"], runs["barrier"][0]["ids"]))
        distinct = load_prompts(tokenizer, Path(args.data), args.problems * args.group, args.template)
        eos = model.generation_config.eos_token_id
        eos_ids = {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos] if eos is not None else [])}
        no_tool = [run_no_tool(engine, model, distinct, args.budget, tokenizer.pad_token_id, eos_ids)
                   for _ in range(args.repeats)]
    finally:
        engine.shutdown()
        if sandbox is not None:
            sandbox.close()

    def mode_median(mode, key):
        return median(r[key] for r in runs[mode])

    def busy_fraction(mode):
        if runs[mode][0]["busy_s"] is None:
            return None
        return median(r["busy_s"] / r["wall_s"] for r in runs[mode])

    ours_wall, barrier_wall = mode_median("ours", "wall_s"), mode_median("barrier", "wall_s")
    ours_tps = median(n / s for s, n, _, _ in no_tool)
    generate_tps = median(n / s for _, _, s, n in no_tool)
    return {
        "engine": name,
        "trajectories": args.problems * args.group,
        "max_tool_calls": args.max_tool_calls,
        "jails": args.jails,
        "tool_calls": runs["ours"][0]["tool_calls"],
        "identical_trajectories": same,
        "ours_rollout_s": ours_wall,
        "barrier_rollout_s": barrier_wall,
        "speedup_vs_barrier": barrier_wall / ours_wall,
        "generator_busy_fraction": busy_fraction("ours"),
        "barrier_generator_busy_fraction": busy_fraction("barrier"),
        "ours_tokens_per_s": median(r["tokens"] / r["wall_s"] for r in runs["ours"]),
        "barrier_tokens_per_s": median(r["tokens"] / r["wall_s"] for r in runs["barrier"]),
        "no_tool_tokens": no_tool[0][1],
        "no_tool_generate_tokens": no_tool[0][3],
        "no_tool_tokens_per_s": ours_tps,
        "generate_tokens_per_s": generate_tps,
        "tokens_per_s_vs_generate": ours_tps / generate_tps,
        "repeats": args.repeats,
    }


def print_report(name: str, report: dict, args) -> None:
    print(f"[{name}] {report['trajectories']} trajectories, C={args.max_tool_calls}, {report['tool_calls']} tool "
          f"calls ({args.slow_fraction:.0%} slow, {args.jails} jails), {report['identical_trajectories']}/"
          f"{report['trajectories']} identical in both modes")
    print(f"rollout wall   ours {report['ours_rollout_s']:6.2f} s   barrier {report['barrier_rollout_s']:6.2f} s   "
          f"speedup {ratio(report['speedup_vs_barrier'])}")
    if report["generator_busy_fraction"] is not None:
        print(f"generator busy ours {report['generator_busy_fraction']:6.1%}   "
              f"barrier {report['barrier_generator_busy_fraction']:6.1%}")
    print(f"tokens/s       ours {report['ours_tokens_per_s']:6.0f}     barrier {report['barrier_tokens_per_s']:6.0f}")
    print(f"no tool, greedy: ours {report['no_tool_tokens_per_s']:.0f} tokens/s, model.generate "
          f"{report['generate_tokens_per_s']:.0f} tokens/s ({ratio(report['tokens_per_s_vs_generate'])}; "
          f"{report['no_tool_tokens']} vs {report['no_tool_generate_tokens']} tokens)")


if __name__ == "__main__":
    main()
