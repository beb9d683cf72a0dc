"""Tiny random transcoder fixtures in circuit-tracer (PLT + CLT), GemmaScope and sparsify layouts,
plus expected outputs computed from each format's definition. Needs only numpy + safetensors
(+ nothing else: config.yaml is written by hand). Usage: python make_transcoder_fixtures.py OUT_DIR
"""
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "transcoder_fixtures")
D, F, N, T = 8, 16, 3, 5  # d_model, features per layer, layers, tokens
rng = np.random.default_rng(0)
f32 = lambda *s, scale=0.5: (rng.standard_normal(s) * scale).astype(np.float32)
expected = {}


def write_yaml(path, model_kind, hook_in, hook_out, extra=""):
    path.write_text(
        f'model_name: "tiny/test-model"\nmodel_kind: "{model_kind}"\n'
        f'feature_input_hook: "{hook_in}"\nfeature_output_hook: "{hook_out}"\n{extra}'
    )


# ---- circuit-tracer per-layer transcoder set (single_layer_transcoder.py: to_safetensors / load_transcoder)
plt = OUT / "circuit_tracer_plt"
plt.mkdir(parents=True, exist_ok=True)
write_yaml(plt / "config.yaml", "transcoder_set", "hook_resid_mid", "mlp.hook_out")
for i in range(N):
    w = {"W_enc": f32(F, D), "W_dec": f32(F, D), "b_enc": f32(F, scale=0.1), "b_dec": f32(D, scale=0.1),
         "W_skip": f32(D, D, scale=0.1)}
    jump = i % 2 == 0  # JumpReLU on even layers, ReLU (no threshold key) on odd ones
    if jump:
        w["activation_function.threshold"] = np.abs(f32(F, scale=0.3))
    save_file(w, str(plt / f"layer_{i}.safetensors"))
    x = f32(T, D, scale=1.0)
    pre = x @ w["W_enc"].T + w["b_enc"]                       # F.linear(x, W_enc, b_enc)
    acts = pre * (pre > w["activation_function.threshold"]) if jump else np.maximum(pre, 0)
    out = acts @ w["W_dec"] + w["b_dec"] + x @ w["W_skip"].T  # compute_skip: x @ W_skip.T
    expected |= {f"plt.{i}.x": x, f"plt.{i}.acts": acts, f"plt.{i}.out": out}

# ---- circuit-tracer cross-layer transcoder (cross_layer_transcoder.py: to_safetensors / _load_state_dict)
clt = OUT / "circuit_tracer_clt"
clt.mkdir(parents=True, exist_ok=True)
write_yaml(clt / "config.yaml", "cross_layer_transcoder", "hook_resid_mid", "hook_mlp_out")
W_enc = [f32(F, D) for _ in range(N)]
b_enc = [f32(F, scale=0.1) for _ in range(N)]
b_dec = [f32(D, scale=0.1) for _ in range(N)]
thr = [np.abs(f32(F, scale=0.3)) for _ in range(N)]
W_dec = [f32(F, N - i, D) for i in range(N)]  # source layer i -> targets i..N-1
for i in range(N):
    save_file({f"W_enc_{i}": W_enc[i], f"b_enc_{i}": b_enc[i], f"b_dec_{i}": b_dec[i], f"threshold_{i}": thr[i]},
              str(clt / f"W_enc_{i}.safetensors"))
    save_file({f"W_dec_{i}": W_dec[i]}, str(clt / f"W_dec_{i}.safetensors"))
xs = f32(N, T, D, scale=1.0)  # resid_mid at every layer
acts = []
for i in range(N):
    pre = xs[i] @ W_enc[i].T + b_enc[i]
    acts.append(pre * (pre > thr[i]))
out = np.stack([b_dec[t] + sum(acts[s] @ W_dec[s][:, t - s, :] for s in range(t + 1)) for t in range(N)])
expected |= {"clt.x": xs, "clt.acts": np.stack(acts), "clt.out": out.astype(np.float32)}

# ---- GemmaScope transcoder (google/gemma-scope-2b-pt-transcoders): params.npz, W_enc [d_model, width]
gs = OUT / "gemmascope/gemma-scope-tiny-pt-transcoders/layer_1/width_16/average_l0_4"
gs.mkdir(parents=True, exist_ok=True)
g = {"W_enc": f32(D, F), "W_dec": f32(F, D), "b_enc": f32(F, scale=0.1), "b_dec": f32(D, scale=0.1),
     "threshold": np.abs(f32(F, scale=0.3))}
np.savez(gs / "params.npz", **g)
x = f32(T, D, scale=1.0)
pre = x @ g["W_enc"] + g["b_enc"]
a = pre * (pre > g["threshold"])
expected |= {"gemmascope.x": x, "gemmascope.acts": a, "gemmascope.out": a @ g["W_dec"] + g["b_dec"]}

# ---- sparsify transcoder (--transcode [--skip_connection]): <hookpoint>/cfg.json + sae.safetensors
sp = OUT / "sparsify/layers.1.mlp"
sp.mkdir(parents=True, exist_ok=True)
K = 4
(sp / "cfg.json").write_text(json.dumps({"activation": "topk", "expansion_factor": 32, "normalize_decoder": True,
    "num_latents": F, "k": K, "multi_topk": False, "skip_connection": True, "transcode": True, "d_in": D}))
s = {"encoder.weight": f32(F, D), "encoder.bias": f32(F, scale=0.1), "W_dec": f32(F, D),
     "b_dec": f32(D, scale=0.1), "W_skip": f32(D, D, scale=0.1)}
save_file(s, str(sp / "sae.safetensors"))
x = f32(T, D, scale=1.0)
pre = np.maximum(x @ s["encoder.weight"].T + s["encoder.bias"], 0)  # transcode: no "- b_dec"
keep = np.argsort(-pre, axis=-1)[:, :K]
dense = np.zeros_like(pre)
np.put_along_axis(dense, keep, np.take_along_axis(pre, keep, -1), -1)
expected |= {"sparsify.x": x, "sparsify.acts": dense,
             "sparsify.out": dense @ s["W_dec"] + s["b_dec"] + x @ s["W_skip"].T}

save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in expected.items()}, str(OUT / "expected.safetensors"))
print("wrote", OUT)
