"""Times delphi's LatentDataset on a cache, for comparison with `benches/latents_records.rs`.

Builds the records of a hook point's latents with delphi's default constructor and sampler
configs (aligned windows, as delphi's default `center_examples=True` gives, 32-token examples,
min 200 examples, 40 train by quantiles, 50 test, 50 random non-activating), token ids decoded as
`str(id)` as in the Rust bench, and prints records/s and peak RSS.

    python delphi_records.py CACHE_ROOT HOOKPOINT [EVERY]

EVERY > 1 builds only latents 0, EVERY, 2*EVERY, ... (delphi still reads whole split files).

Setup used (a venv over one with torch 2.11 + transformers 4.57; vllm is not needed):
    python -m venv venv && echo $TORCH_VENV/lib/python3.11/site-packages \
        > venv/lib/python3.11/site-packages/torch-venv.pth
    venv/bin/pip install eai-delphi==0.1.1 --no-deps
    venv/bin/pip install jaxtyping simple_parsing orjson blobfile asyncer faiss-cpu scipy \
        scikit-learn Pillow
    venv/bin/pip install sentence-transformers==5.1.2 --no-deps

Compared with the Rust bench on the same files:
    LATENTS_BENCH_DIR=/tmp/bench-cache cargo bench -p autointerp-latents --bench latents_records
    /usr/bin/time -v venv/bin/python delphi_records.py /tmp/bench-cache layers.6
    cargo build --release -p autointerp-latents --example latents_records
    /usr/bin/time -v target/release/examples/latents_records /tmp/bench-cache layers.6
"""

import resource
import sys
import time
from pathlib import Path

import torch

from delphi.config import ConstructorConfig, SamplerConfig
from delphi.latents import LatentDataset


class IdTokenizer:
    def batch_decode(self, tokens):
        return [str(int(t)) for t in tokens]


def main():
    root, hook = sys.argv[1], sys.argv[2]
    every = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    t0 = time.perf_counter()
    latents = None
    if every > 1:
        ends = [int(p.stem.split("_")[1]) for p in Path(root, "latents", hook).glob("*.safetensors")]
        width = max(ends) + 1
        latents = {hook: torch.arange(0, width, every)}
    dataset = LatentDataset(
        f"{root}/latents",
        SamplerConfig(),
        ConstructorConfig(),
        tokenizer=IdTokenizer(),
        modules=[hook],
        latents=latents,
    )
    t1 = time.perf_counter()
    n = 0
    for record in dataset:
        n += 1
    t2 = time.perf_counter()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"delphi: opened in {t1 - t0:.2f}s; {n} records in {t2 - t1:.2f}s: "
          f"{n / (t2 - t1):.1f} records/s (with opening: {n / (t2 - t0):.1f}); peak RSS {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
