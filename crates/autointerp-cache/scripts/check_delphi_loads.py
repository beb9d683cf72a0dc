"""Checks that delphi reads a cache written by `autointerp cache` as we wrote it.

Opens `<CACHE>/latents` with delphi's own `LatentDataset` (the cache's `tokens` come from the
split files, so delphi's `load_tokenized_data` and the Hub are never touched) and checks:

1. per split file, the per-latent locations and activations delphi's `TensorBuffer` yields equal
   the ones read straight from our files with `safetensors` (exactly: f16 values, int locations);
2. per latent (all that fired, or every EVERY-th), the `LatentRecord` delphi builds: each
   activating example's tokens and activations equal the aligned window of our tokens / our
   nonzeros it came from, and its `per_token_frequency` equals our `firing_counts.json` count.

The hook point is passed as `modules=[HOOKPOINT]`, as delphi's own pipeline does: without it
delphi takes every entry of `latents/` for a hook folder, and ours also holds `stats.json`.

    python check_delphi_loads.py CACHE HOOKPOINT [EVERY]

Prints a summary and exits non-zero on the first mismatch. Environment used: see
`bench_delphi_cache.py` (delphi 0.1.1, torch 2.11, transformers 4.57.6).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file

from delphi.config import ConstructorConfig, SamplerConfig
from delphi.latents import LatentDataset


class IdTokenizer:
    """delphi decodes example tokens for display only; ids are enough here."""

    def batch_decode(self, tokens):
        return [str(int(t)) for t in tokens]

    def decode(self, tokens):
        return " ".join(str(int(t)) for t in tokens)


def fail(msg):
    print(f"MISMATCH: {msg}")
    sys.exit(1)


def our_files(hook_dir: Path):
    """Our nonzeros per latent, read without delphi: latent -> (locations [n, 2], f16 values)."""
    per_latent = {}
    tokens = None
    # The same glob as delphi's `LatentDataset._edges`: any other `.safetensors` would break it.
    for path in sorted(hook_dir.glob("*.safetensors"), key=lambda p: int(p.stem.split("_")[0])):
        start = int(path.stem.split("_")[0])
        data = load_file(str(path))
        if tokens is None and "tokens" in data:
            tokens = data["tokens"].astype(np.int64)
        loc = data["locations"].astype(np.int64)
        act = data["activations"]
        if act.dtype != np.float16:
            fail(f"{path}: activations are {act.dtype}, delphi writes float16")
        latent = loc[:, 2] + start
        order = np.argsort(latent, kind="stable")
        for l in np.unique(latent):
            sel = order[latent[order] == l]
            per_latent[int(l)] = (loc[sel, :2], act[sel])
    return per_latent, tokens


def main():
    root, hook = Path(sys.argv[1]), sys.argv[2]
    every = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    hook_dir = root / "latents" / hook
    ours, tokens = our_files(hook_dir)
    if tokens is None:
        fail("no split file holds `tokens`")
    counts = json.loads((hook_dir / "firing_counts.json").read_text())["counts"]
    n_tokens = tokens.shape[0] * tokens.shape[1]

    ccfg = ConstructorConfig(example_ctx_len=32, min_examples=1, n_non_activating=0,
                             non_activating_source="random")
    scfg = SamplerConfig(n_examples_train=10, n_examples_test=0, n_quantiles=1, train_type="top")
    ds = LatentDataset(str(root / "latents"), scfg, ccfg, tokenizer=IdTokenizer(), modules=[hook])

    # 1. delphi's buffers against our files.
    if not torch.equal(ds.tokens, torch.from_numpy(tokens)):
        fail("delphi's tokens differ from the split file's")
    seen = 0
    for buf in ds.buffers:
        latents, locs, acts = buf.load_data_per_latent()
        for l, loc, act in zip(latents.tolist(), locs, acts):
            want_loc, want_act = ours[l]
            if not np.array_equal(loc[:, :2].numpy(), want_loc):
                fail(f"latent {l}: locations differ")
            if not np.array_equal(act.numpy(), want_act):
                fail(f"latent {l}: activations differ")
            seen += 1
    if seen != len(ours):
        fail(f"delphi saw {seen} latents with activations, our files hold {len(ours)}")
    print(f"buffers: {seen} latents, {sum(len(a) for _, a in ours.values())} nonzeros, "
          f"identical to our files")

    # 2. Records built by delphi, example by example. delphi cuts examples as aligned 32-token
    # windows of the flattened token stream; index ours the same way.
    w = ccfg.example_ctx_len
    flat_tok = tokens.reshape(-1)
    windows = {}
    for s in range(0, flat_tok.size - w + 1, w):
        windows.setdefault(flat_tok[s:s + w].tobytes(), []).append(s)

    wanted = {hook: torch.tensor(sorted(ours)[::every])}
    ds = LatentDataset(str(root / "latents"), scfg, ccfg, tokenizer=IdTokenizer(),
                       modules=[hook], latents=wanted)
    n_records = n_examples = 0
    for record in ds:
        l = record.latent.latent_index
        freq = float(counts[l]) / n_tokens
        if abs(record.per_token_frequency - freq) > 1e-12:
            fail(f"latent {l}: delphi frequency {record.per_token_frequency}, ours {freq}")
        flat_act = np.zeros(flat_tok.size, dtype=np.float32)
        loc, act = ours[l]
        flat_act[loc[:, 0] * tokens.shape[1] + loc[:, 1]] = act.astype(np.float32)
        for ex in record.examples:
            t = ex.tokens.numpy().astype(np.int64)
            a = ex.activations.numpy().astype(np.float32)
            if not any(np.array_equal(flat_act[s:s + w], a) for s in windows.get(t.tobytes(), [])):
                fail(f"latent {l}: an example matches no window of our tokens and nonzeros")
            n_examples += 1
        n_records += 1
    if n_records != len(wanted[hook]):
        fail(f"{n_records} records for {len(wanted[hook])} latents")
    print(f"records: {n_records} latents (every {every}th of those that fired), {n_examples} "
          f"examples, each equal to its window of our tokens and activations; frequencies "
          f"equal our firing counts ({n_tokens} tokens, ctx {tokens.shape[1]})")
    print("OK: delphi loads the cache as written")


if __name__ == "__main__":
    main()
