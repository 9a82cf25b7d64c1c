# On the GPU box: GDN gradients of fla-core 0.6.0 on this Hopper GPU, (a) through the all-Triton path with the
# guard against fla issue #640 bypassed (what a Triton 3.4-3.7.0 user got before fla refused it), (b) through the
# default path (TileLang for the guarded kernels), each against the fp32 step-by-step recurrence. The hybrid's
# GDN shape (8 heads, K 42, V 84), bf16 inputs as in training, q and k L2-normalised.
import os, sys, time
import torch
import torch.nn.functional as F
sys.path.insert(0, "tests")
from gdn_reference import gated_delta_rule_fla_wrapper, gated_delta_rule_recurrent
import fla.ops.common.chunk_o as chunk_o

B, T, H, K, V = 1, int(sys.argv[1]) if len(sys.argv) > 1 else 1024, 8, 42, 84
gen = torch.Generator(device="cuda").manual_seed(0)
def rand(*shape):
    return torch.randn(*shape, generator=gen, device="cuda")
base = {"q": F.normalize(rand(B, T, H, K), dim=-1), "k": F.normalize(rand(B, T, H, K), dim=-1), "v": rand(B, T, H, V),
        "g": -F.softplus(rand(B, T, H) - 1.0), "beta": 2 * torch.sigmoid(rand(B, T, H))}
do = rand(B, T, H, V)
scale = K ** -0.5

def run(fn, dtype):
    leaves = {n: (t.to(dtype) if n in "qkv" or n == "beta" else t.float()).clone().requires_grad_() for n, t in base.items()}
    o = fn(leaves["q"], leaves["k"], leaves["v"], leaves["g"], leaves["beta"], scale)
    (o.float() * do).sum().backward()
    torch.cuda.synchronize()
    return {"o": o.float().detach(), **{f"d{n}": t.grad.float() for n, t in leaves.items()}}

def rel(a, b):
    return ((a - b).norm() / b.norm()).item()

t0 = time.time()
ref = run(gated_delta_rule_recurrent, torch.float32)
print(f"reference fp32 recurrence T={T}: {time.time() - t0:.1f}s", flush=True)
arms = [("triton, guard bypassed", "0", False), ("default (tilelang)", "1", chunk_o.TRITON_ABOVE_3_4_0)]
for name, tilelang, guard in arms[: int(sys.argv[2]) if len(sys.argv) > 2 else 2]:
    os.environ["FLA_TILELANG"] = tilelang
    chunk_o.TRITON_ABOVE_3_4_0 = guard
    t0 = time.time()
    try:
        got = run(gated_delta_rule_fla_wrapper, torch.bfloat16)
        print(f"{name}: {time.time() - t0:.1f}s " + " ".join(f"{k}:{rel(got[k], ref[k]):.2e}" for k in ref), flush=True)
    except Exception as exc:
        print(f"{name}: failed {type(exc).__name__}: {str(exc)[:300]}", flush=True)
