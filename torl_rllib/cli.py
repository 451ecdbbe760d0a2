"""``torl-rllib``: train a ToRL policy with GRPO on RLlib, export it, check a recipe.

    torl-rllib train experiments/tiny_cpu.yaml [section.key=value ...] [--output-dir DIR] [--resume CKPT|auto|latest]
    torl-rllib export CHECKPOINT OUT_DIR
    torl-rllib check experiments/tiny_cpu.yaml [section.key=value ...]
    torl-rllib sweep experiments/sweeps/tiny_cpu.yaml [key=value ...] [--resume]
    torl-rllib eval MODEL_OR_CHECKPOINT [--config EVAL.yaml] [--benchmarks aime24,math500,PATH] [--k K]
                    [--temperature T] [key=value ...] [--output-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torl-rllib", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train with GRPO from a YAML recipe")
    train.add_argument("recipe", help="YAML recipe, e.g. experiments/tiny_cpu.yaml")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.lr=1e-5 run.steps=5")
    train.add_argument("--output-dir", help="run directory (checkpoints, logs, summary.json); default: run.output_dir")
    train.add_argument("--resume", metavar="CHECKPOINT|auto|latest",
                       help="continue from a checkpoint directory; latest: the run directory's newest "
                            "complete checkpoint; auto: that one if there is one, else start fresh")
    train.add_argument("--verbose", action="store_true", help="show Ray's and RLlib's own logs")

    sweep = sub.add_parser("sweep", help="run a hyperparameter sweep on Ray Tune (one MLflow child run per trial)")
    sweep.add_argument("sweep_file", help="YAML sweep file, e.g. experiments/sweeps/tiny_cpu.yaml")
    sweep.add_argument("overrides", nargs="*",
                       help="tune.num_samples=2, search_space.training.lr='{grid: [1e-4]}', or base-recipe keys")
    sweep.add_argument("--resume", action="store_true", help="continue the interrupted sweep in its output_dir")
    sweep.add_argument("--verbose", action="store_true", help="show Ray's, Tune's and the trials' own logs")

    evaluate = sub.add_parser("eval", help="evaluate a model or checkpoint on benchmarks (ToRL's Table 3)")
    evaluate.add_argument("model", metavar="MODEL_OR_CHECKPOINT",
                          help="a Hugging Face model directory or hub id, a checkpoint of ours, or a run directory")
    evaluate.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rollout.max_tool_calls=0 protocol.seed=1")
    evaluate.add_argument("--config", help="eval recipe (YAML), e.g. experiments/eval/tiny_cpu.yaml")
    evaluate.add_argument("--benchmarks", help="comma-separated registry names, declared names or dataset paths")
    evaluate.add_argument("--k", type=int, help="responses per problem (needs --temperature > 0)")
    evaluate.add_argument("--temperature", type=float, help="0 = greedy (default)")
    evaluate.add_argument("--output-dir", help="where eval.json and problems.jsonl go (default runs/eval/NAME-TIME)")
    evaluate.add_argument("--verbose", action="store_true", help="show Ray's and RLlib's own logs")

    check = sub.add_parser("check", help="validate a recipe (and overrides) without training")
    check.add_argument("recipe")
    check.add_argument("overrides", nargs="*")

    export = sub.add_parser("export", help="write a checkpoint's policy as a Hugging Face model directory")
    export.add_argument("checkpoint")
    export.add_argument("out_dir")
    return parser


def _quiet_console(verbose: bool) -> None:
    """Human-readable progress only; Ray's, RLlib's, MLflow's and transformers' noise stays out
    unless ``--verbose``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        return
    warnings.filterwarnings("ignore")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # Ray's C++ core writes to stderr
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import mlflow  # noqa: F401  (configures its loggers on import: quiet them afterwards)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    for name in ("ray", "mlflow", "alembic", "urllib3", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Overrides may come after flags (``eval M --benchmarks x rollout.max_tool_calls=0``), which
    # argparse does not take as more positionals: collect them here.
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    _quiet_console(getattr(args, "verbose", False))
    from torl_rllib.utils.checkpoint_manifest import DamagedCheckpoint, verify_checkpoint
    from torl_rllib.recipe import RecipeError, load_recipe

    try:
        if args.command == "check":
            from torl_rllib.recipe import overlong_prompt_notice

            recipe = load_recipe(args.recipe, args.overrides)
            if notice := overlong_prompt_notice(recipe.build_config()):
                print(f"warning: {notice}: a run skips them (data.train.on_error: raise refuses them)",
                      file=sys.stderr)
            print(f"{args.recipe}: OK ({recipe.name})")
            return 0
        if args.command == "export":
            from torl_rllib.export import export_policy

            out = export_policy(args.checkpoint, args.out_dir)
            print(f"exported policy to {out}")
            return 0
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "eval":
            from torl_rllib.evaluation_recipe import load_eval_spec

            spec = load_eval_spec(args.model, args.config, args.overrides, benchmarks=args.benchmarks,
                                  k=args.k, temperature=args.temperature, output_dir=args.output_dir)
            return _eval(spec, args.verbose)
        recipe = load_recipe(args.recipe, args.overrides)
        output_dir = Path(args.output_dir).resolve() if args.output_dir else recipe.output_dir
        if args.resume in ("auto", "latest"):
            from torl_rllib.train import truncate_metrics_log, newest_intact_checkpoint

            # Newest first; a damaged checkpoint is skipped (one line each) for the next older one.
            found, skipped = newest_intact_checkpoint(output_dir)
            for damage in skipped:
                print(f"warning: skipping {damage}", file=sys.stderr)
            if found is None and args.resume == "latest":
                if skipped:
                    print(f"error: --resume latest: no intact checkpoint in {output_dir / 'checkpoints'} "
                          f"({len(skipped)} damaged, above)", file=sys.stderr)
                    return 2
                raise RecipeError([f"--resume latest: no complete checkpoint in {output_dir / 'checkpoints'}"],
                                  "command line")
            if found:
                print(f"resuming from {found}", file=sys.stderr)
            else:  # the steps of the earlier attempt are redone: metrics.jsonl holds each step once
                print(f"warning: no {'intact ' if skipped else ''}checkpoint in {output_dir}: starting fresh",
                      file=sys.stderr)
                truncate_metrics_log(output_dir / "metrics.jsonl", 0)
            args.resume = str(found) if found else None
        elif args.resume and not Path(args.resume).is_dir():
            raise RecipeError([f"--resume: checkpoint {args.resume!r} does not exist"], "command line")
        elif args.resume:
            verify_checkpoint(args.resume)
    except (RecipeError, FileNotFoundError, DamagedCheckpoint) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from torl_rllib.train import run_training

    try:
        summary = run_training(recipe, output_dir, resume=args.resume, verbose=args.verbose)
    except DamagedCheckpoint as exc:  # damaged after the check above (the restore verifies again)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aborted: the newest checkpoint under {output_dir / 'checkpoints'} is the last complete one",
              file=sys.stderr)
        return 130
    fmt = lambda m: "n/a" if not summary.get(m) else f"{summary[m]['first']:.2f}->{summary[m]['final']:.2f}"  # noqa: E731
    print(
        f"{summary['status'].lower()}: {summary['steps']} steps in {summary['wall_time_s']:.0f}s | "
        f"accuracy {fmt('accuracy')} | code ratio {fmt('code_ratio')} | "
        f"failed trajectories {summary['failed_trajectories']['total']} "
        f"({summary['failed_trajectories']['fraction']:.1%}) | "
        f"checkpoint {summary['checkpoint']} | summary {output_dir / 'summary.json'}"
    )
    if summary.get("error"):
        output = f" --output-dir {args.output_dir}" if args.output_dir else ""  # the same run directory
        print(f"error: {summary['error']}\n  continue with: torl-rllib train {args.recipe} "
              f"{' '.join(args.overrides)}{output} --resume {summary['checkpoint']}".replace("  --", " --"),
              file=sys.stderr)
    return 0 if summary["status"] == "FINISHED" else summary.get("exit_code", 1)


def _eval(spec, verbose: bool) -> int:
    from torl_rllib.evaluate import run_eval

    report = run_eval(spec, verbose=verbose)
    if report.get("table"):
        print(f"\n{report['table']}\n")
    print(f"{report['status'].lower()}: {len(report['benchmarks'])} benchmark(s) in {report['wall_time_s']:.0f}s | "
          f"results {spec.output_dir / 'eval.json'} | per problem {spec.output_dir / 'problems.jsonl'}")
    if report.get("error"):
        print(f"error: {report['error']}", file=sys.stderr)
    return {"FINISHED": 0, "KILLED": 130}.get(report["status"], 1)


def _sweep(args) -> int:
    from torl_rllib.sweep import load_sweep
    from torl_rllib.sweep.driver import run_sweep

    spec = load_sweep(args.sweep_file, args.overrides)  # RecipeError: reported by main, exit 2
    outcome = run_sweep(spec, resume=args.resume, verbose=args.verbose)
    print(f"\n{outcome.table}\n")
    summary = outcome.summary
    print(f"{outcome.status.lower()}: {summary['trials']} of {summary['planned_trials']} trials "
          f"({summary['stopped_early']} stopped early, "
          f"{summary['failed']} failed) in {summary['wall_time_s']:.0f}s | results {spec.output_dir}")
    if outcome.best_command:
        print(f"best ({spec.tune.metric}, last-5 mean {summary['best']['last5_mean_' + spec.tune.metric]:.3f}):\n"
              f"  {outcome.best_command}")
    if outcome.status == "KILLED":
        print(f"interrupted: continue with  torl-rllib sweep {args.sweep_file} --resume")
        return 130
    return 0 if outcome.status == "FINISHED" else 1


if __name__ == "__main__":
    sys.exit(main())
