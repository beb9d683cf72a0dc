"""delphi's `LatentCache` on the same model, SAE and tokens as `autointerp cache`, for the
side-by-side numbers in docs/PERFORMANCE.md.

    # a random TopK SAE in sparsify's layout (the same folder feeds both tools)
    python bench_delphi_cache.py make-sae SAE_DIR --hookpoint layers.6 --d-in 576 \
        --width 4608 --k 32
    # delphi on the token rows an `autointerp cache` run stored in its split files
    /usr/bin/time -v python bench_delphi_cache.py run --gguf SmolLM2-135M-Instruct.Q4_1.gguf \
        --sae SAE_DIR --hookpoint layers.6 --tokens-from OUR_CACHE --n-tokens 200000 \
        --batch-size 8 --out DELPHI_OUT

`run` loads the GGUF with transformers (`gguf_file=`, dequantized to f32, as autointerp does),
the SAE with delphi's own `load_sparsify_hooks`, and runs delphi's `LatentCache.run` then
`save_splits` (5 splits) and `save_config`, timing the caching alone. It prints tokens/s and
peak RSS, and, because both tools saw the same inputs, how many of delphi's nonzeros our cache
holds too (`--compare`, default `--tokens-from`).

Environment (a venv over one holding torch 2.11 + transformers 4.57.6; vllm is not needed):
    python -m venv venv && echo $TORCH_VENV/lib/python3.11/site-packages \
        > venv/lib/python3.11/site-packages/torch-venv.pth
    venv/bin/pip install eai-delphi==0.1.1 eai-sparsify==1.3.3 faiss-cpu --no-deps
    venv/bin/pip install gguf==0.19.0 "huggingface-hub<1.0" datasets==3.6.0 jaxtyping \
        simple_parsing orjson asyncer tqdm einops natsort accelerate schedulefree blobfile \
        sentence-transformers scipy scikit-learn
"""

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file


def make_sae(args):
    torch.manual_seed(args.seed)
    d, n = args.d_in, args.width
    enc = torch.randn(n, d) / d**0.5
    out = Path(args.dir) / args.hookpoint
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "encoder.weight": enc.contiguous(),
            "encoder.bias": torch.zeros(n),
            "W_dec": enc.clone().contiguous(),
            "b_dec": torch.zeros(d),
        },
        str(out / "sae.safetensors"),
    )
    cfg = {
        "activation": "topk", "expansion_factor": n // d, "normalize_decoder": True,
        "num_latents": n, "k": args.k, "multi_topk": False, "skip_connection": False,
        "transcode": False, "d_in": d,
    }
    (out / "cfg.json").write_text(json.dumps(cfg))
    print(f"wrote {out}")


def our_tokens(cache: Path, hookpoint: str) -> torch.Tensor:
    split = next((cache / "latents" / hookpoint).glob("0_*.safetensors"))
    return torch.from_numpy(load_file(str(split))["tokens"].astype(np.int64))


def nonzeros(hook_dir: Path, ctx: int):
    """All nonzeros of one hook point: keys `(row * ctx + position) << 32 | latent`, sorted, and
    their f16 activations as f32."""
    keys, acts = [], []
    for path in hook_dir.glob("*.safetensors"):
        start = int(path.stem.split("_")[0])
        data = load_file(str(path))
        loc = data["locations"].astype(np.int64)
        keys.append(((loc[:, 0] * ctx + loc[:, 1]) << 32) | (loc[:, 2] + start))
        acts.append(data["activations"].astype(np.float32))
    keys, acts = np.concatenate(keys), np.concatenate(acts)
    order = np.argsort(keys, kind="stable")
    return keys[order], acts[order]


def run(args):
    from transformers import AutoModelForCausalLM

    from delphi.config import CacheConfig
    from delphi.latents import LatentCache
    from delphi.sparse_coders.load_sparsify import load_sparsify_hooks

    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    gguf = Path(args.gguf)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32
    )
    model.eval()
    hooks, transcode = load_sparsify_hooks(model, args.sae, [args.hookpoint], device="cpu")
    tokens = our_tokens(Path(args.tokens_from), args.hookpoint)
    t1 = time.perf_counter()

    cache = LatentCache(model, hooks, batch_size=args.batch_size, transcode=transcode)
    cache.run(args.n_tokens, tokens)
    t2 = time.perf_counter()
    out = Path(args.out) / "latents"
    out.mkdir(parents=True, exist_ok=True)
    cache.save_splits(n_splits=5, save_dir=out)
    cfg = CacheConfig(cache_ctx_len=tokens.shape[1], n_tokens=args.n_tokens,
                      batch_size=args.batch_size, n_splits=5)
    cache.save_config(save_dir=out, cfg=cfg, model_name=str(gguf))
    t3 = time.perf_counter()

    rows = (args.n_tokens // tokens.shape[1]) // args.batch_size * args.batch_size
    n = rows * tokens.shape[1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"delphi LatentCache: {n} tokens ({rows} rows x {tokens.shape[1]}), batch "
          f"{args.batch_size}, {torch.get_num_threads()} threads")
    print(f"  load model + SAE + tokens {t1 - t0:.1f}s; run {t2 - t1:.1f}s; save_splits "
          f"{t3 - t2:.1f}s")
    print(f"  {n / (t3 - t1):.0f} tokens/s (run + save), {n / (t2 - t1):.0f} tokens/s (run "
          f"alone); peak RSS {peak:.0f} MiB")

    compare = Path(args.compare or args.tokens_from) / "latents" / args.hookpoint
    # delphi names the folder after the module path it resolved (`model.layers.6`).
    module = next(iter(hooks))
    ctx = tokens.shape[1]
    (tk, ta), (ok, oa) = nonzeros(out / module, ctx), nonzeros(compare, ctx)
    # delphi drops the rows of a last partial batch; compare the rows both cached.
    keep = (ok >> 32) < rows * ctx
    ok, oa = ok[keep], oa[keep]
    both, ti, oi = np.intersect1d(tk, ok, assume_unique=True, return_indices=True)
    diff = float(np.abs(ta[ti] - oa[oi]).max()) if both.size else 0.0
    print(f"  agreement with {compare}: {both.size} of {tk.size} delphi nonzeros and "
          f"{ok.size} ours at the same (row, position, latent); max |activation "
          f"difference| there {diff:.4g}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-sae")
    m.add_argument("dir")
    m.add_argument("--hookpoint", default="layers.6")
    m.add_argument("--d-in", type=int, default=576)
    m.add_argument("--width", type=int, default=4608)
    m.add_argument("--k", type=int, default=32)
    m.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run")
    r.add_argument("--gguf", required=True)
    r.add_argument("--sae", required=True)
    r.add_argument("--hookpoint", default="layers.6")
    r.add_argument("--tokens-from", required=True,
                   help="an `autointerp cache --out` folder whose split files hold the tokens")
    r.add_argument("--n-tokens", type=int, default=200_000)
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--out", required=True)
    r.add_argument("--compare", help="cache to compare nonzeros with (default --tokens-from)")
    args = p.parse_args()
    make_sae(args) if args.cmd == "make-sae" else run(args)


if __name__ == "__main__":
    main()
