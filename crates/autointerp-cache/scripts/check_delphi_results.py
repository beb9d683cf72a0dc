"""Checks that delphi's own tools read a results folder written by `autointerp run`.

    python check_delphi_results.py RESULTS_DIR
    python check_delphi_results.py --check-pt tests/fixtures/delphi/hookpoint_firing_counts.pt

On RESULTS_DIR (a folder of `autointerp run`, `explain` or `score` with classifier scorers):

1. `run_config.json`: delphi's `RunConfig.load_json` reads it, and sees our settings in its own
   nested keys (`constructor_cfg.min_examples`, `cache_cfg.n_tokens`, ...) and top-level ones;
2. `log/hookpoint_firing_counts.pt`: `torch.load(..., weights_only=True)`, as `log_results`
   calls it, returns a dict with every hook point, each an int64 tensor equal to the
   `firing_counts.json` our cache wrote;
3. `delphi.log.result_analysis.log_results(scores, visualize, hookpoints, scorers)`, as delphi's
   `__main__` calls it at the end of a run, runs to the end: it prints the dead-feature count
   (checked against ours), each scorer's metrics, and writes its plots into `visualize/`.

`log_results` parses every folder under `scores/` as detection/fuzz files, so it fails on a run
with the intruder, simulation, surprisal or embedding scorers (as it does on delphi's own
simulation scores); this script stops before that with a message.

With `--check-pt FILE` it only loads FILE with torch and compares it with the dict the
autointerp-run unit test writes: `{"layers.0": [3, 0, 1], "layers.1.mlp": [0, 2]}`.

Environment used (the dev machine, CPU only): a venv with torch 2.11.0 (PyPI) and
`pip install eai-delphi==0.1.1 --no-deps` plus `orjson pandas "plotly<6" kaleido==0.2.1
scikit-learn simple_parsing` (delphi's `log_results` needs only these; vllm, transformers and
sparsify are not imported; plotly 6 lacks the `pio.kaleido.scope` that delphi's `import_plotly`
sets). Run once on `autointerp demo --explainer tokens --scorers detection,fuzz --n-latents 4
--train-tokens 20000 --n-tokens 50000`: every check passed and `log_results` printed the
metrics our report gives; the output is in docs/PERFORMANCE.md, "delphi analyses our results".
"""

import contextlib
import io
import json
import sys
from pathlib import Path

import torch

CLASSIFIERS = {"detection", "fuzz"}


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def check_pt(path: Path):
    counts = torch.load(path, weights_only=True)
    want = {"layers.0": [3, 0, 1], "layers.1.mlp": [0, 2]}
    if not isinstance(counts, dict) or sorted(counts) != sorted(want):
        fail(f"{path}: {counts!r} is not a dict of {sorted(want)}")
    for k, v in want.items():
        t = counts[k]
        if t.dtype != torch.int64 or t.tolist() != v:
            fail(f"{path}: {k} is {t!r}, want int64 {v}")
    print(f"OK: torch.load({path}, weights_only=True) = {counts}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check-pt":
        check_pt(Path(sys.argv[2]))
        return
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    root = Path(sys.argv[1])

    # 1. The config, through delphi's own RunConfig.
    from delphi.config import RunConfig

    ours = json.loads((root / "run_config.json").read_text())
    cfg = RunConfig.load_json(str(root / "run_config.json"))
    pairs = [
        ("constructor_cfg.min_examples", cfg.constructor_cfg.min_examples, ours["min_examples"]),
        ("constructor_cfg.example_ctx_len", cfg.constructor_cfg.example_ctx_len,
         ours["example_ctx_len"]),
        ("constructor_cfg.n_non_activating", cfg.constructor_cfg.n_non_activating,
         ours["n_non_activating"]),
        # delphi's flag is wired the other way round from ours.
        ("constructor_cfg.center_examples", cfg.constructor_cfg.center_examples,
         not ours["center_examples"]),
        ("sampler_cfg.n_examples_train", cfg.sampler_cfg.n_examples_train,
         ours["n_examples_train"]),
        ("sampler_cfg.n_examples_test", cfg.sampler_cfg.n_examples_test, ours["n_examples_test"]),
        ("sampler_cfg.n_quantiles", cfg.sampler_cfg.n_quantiles, ours["n_quantiles"]),
        ("sampler_cfg.train_type", cfg.sampler_cfg.train_type, ours["train_type"]),
        ("cache_cfg.n_tokens", cfg.cache_cfg.n_tokens, ours["n_tokens"]),
        ("cache_cfg.cache_ctx_len", cfg.cache_cfg.cache_ctx_len, ours["ctx_len"]),
        ("hookpoints", cfg.hookpoints, ours["hookpoints"]),
        ("scorers", cfg.scorers, ours["scorers"]),
        ("seed", cfg.seed, ours["seed"]),
        ("pipeline_num_proc", cfg.pipeline_num_proc, ours["max_concurrency"]),
    ]
    for name, theirs, mine in pairs:
        if theirs != mine:
            fail(f"run_config.json: delphi reads {name} = {theirs!r}, ours is {mine!r}")
    print(f"run_config.json: delphi's RunConfig.load_json reads it; {len(pairs)} settings agree")

    # 2. The firing counts.
    hooks = cfg.hookpoints
    counts = torch.load(root / "log" / "hookpoint_firing_counts.pt", weights_only=True)
    dead = 0
    for hook in hooks:
        if hook not in counts:
            fail(f"hookpoint_firing_counts.pt has no {hook} (has {sorted(counts)})")
        t = counts[hook]
        mine = json.loads((root / "latents" / hook / "firing_counts.json").read_text())["counts"]
        if t.dtype != torch.int64 or t.tolist() != mine:
            fail(f"{hook}: delphi reads {t}, firing_counts.json holds {mine}")
        dead += sum(1 for c in mine if c == 0)
    print(f"hookpoint_firing_counts.pt: {len(hooks)} hook points, int64 tensors equal to our "
          f"firing_counts.json")

    # 3. delphi's analysis.
    scores = root / "scores"
    others = sorted(d.name for d in scores.iterdir()
                    if d.is_dir() and d.name not in CLASSIFIERS and d.name != "random")
    if others:
        fail(f"scores/ holds {others}: log_results reads every folder as detection/fuzz files "
             f"and stops on these (run with --scorers detection,fuzz)")
    scorers = [s for s in cfg.scorers if s in CLASSIFIERS]
    from delphi.log.result_analysis import log_results

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        log_results(scores, root / "visualize", hooks, scorers)
    text = out.getvalue()
    print("--- log_results printed ---")
    print(text.rstrip())
    print("---")
    if "Missing firing counts" in text:
        fail("log_results did not find the firing counts")
    if f"Number of dead features: {dead}" not in text:
        fail(f"log_results' dead-feature count is not ours ({dead})")
    for s in scorers:
        if f"--- {s.title()} Metrics ---" not in text:
            fail(f"log_results printed no {s} metrics")
    if f"min examples {cfg.constructor_cfg.min_examples}" not in text:
        fail("log_results did not read constructor_cfg.min_examples")
    plots = sorted(p.name for p in (root / "visualize").glob("*.pdf"))
    print(f"visualize/: {plots}")
    print("OK: delphi's log_results reads the results folder as written")


if __name__ == "__main__":
    main()
