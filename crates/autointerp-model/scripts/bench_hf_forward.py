"""Times transformers' forward (CPU, f32, no grad) at batch 8 x 256, to the middle layer and to
the logits, for (1) a SmolLM2-135M-shaped LlamaForCausalLM with random weights (same cost as
the real one) and (2) the tiny `llama` test fixture of autointerp-model.

The PyTorch counterpart of `benches/model_forward.rs` (docs/PERFORMANCE.md). Needs torch 2.11
and transformers 4.57.6 (the fixtures venv of tests/fixtures/README.md):

    /root/.cache/autointerp/fixtures-venv/bin/python \
        crates/autointerp-model/scripts/bench_hf_forward.py eager crates/autointerp-model/tests/fixtures/llama

usage: bench_hf_forward.py [eager|sdpa] [fixture_dir]
"""
import sys, time, torch
from transformers import LlamaConfig, LlamaForCausalLM

impl = sys.argv[1] if len(sys.argv) > 1 else "eager"
fixture = sys.argv[2] if len(sys.argv) > 2 else None
torch.manual_seed(0)
print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, attn_implementation={impl}")


def timeit(name, fn, n):
    fn()  # warm-up
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    med = ts[len(ts) // 2]
    print(f"  {name}: median {med*1e3:.1f} ms, best {ts[0]*1e3:.1f} ms -> {2048/med:.0f} tokens/s (median), {2048/ts[0]:.0f} (best), n={n}")


def run(label, model, n):
    ids = torch.randint(0, model.config.vocab_size, (8, 256))
    layers = model.model.layers
    mid = len(layers) // 2
    print(label)
    with torch.no_grad():
        timeit("logits", lambda: model(input_ids=ids, use_cache=False).logits, n)
        model.model.layers = layers[: mid + 1]  # blocks 0..mid: the residual after layer `mid`
        timeit(f"to layer {mid}", lambda: model.model(input_ids=ids, use_cache=False).last_hidden_state, n)
        model.model.layers = layers


cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                  num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                  rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True, hidden_act="silu")
cfg._attn_implementation = impl
run("SmolLM2-135M shape, random weights", LlamaForCausalLM(cfg).eval(), 5)
if fixture:
    tiny = LlamaForCausalLM.from_pretrained(fixture, attn_implementation=impl, dtype=torch.float32).eval()
    run("tiny llama fixture", tiny, 30)
