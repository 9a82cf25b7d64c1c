"""References the GDN backends are checked against (tests only, never used in training).

gated_delta_rule_recurrent: the gated delta rule step by step in fp32, the definition itself.
gated_delta_rule_fla_wrapper: fla-core's own chunk_gated_delta_rule (its autograd Function), which the
trainer's GatedDeltaRuleKeepStates reproduces kernel by kernel.
Shapes: q, k [B, T, H, K]; v [B, T, H, V]; g (log-decay), beta [B, T, H] -> [B, T, H, V].
"""

import torch
from torch import Tensor


def gated_delta_rule_recurrent(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float) -> Tensor:
    """S_t = exp(g_t) S_{t-1}; S_t += beta_t k_t (v_t - k_t^T S_t)^T; o_t = scale q_t^T S_t, one step at a time."""
    q, k, v, g, beta = (t.float() for t in (q, k, v, g, beta))
    bsz, seq_len, heads, key_dim = q.shape
    state = q.new_zeros(bsz, heads, key_dim, v.shape[-1])  # [B, H, K, V]
    outputs = []
    for t in range(seq_len):
        state = state * g[:, t].exp()[..., None, None]
        k_t = k[:, t]  # [B, H, K]
        predicted = torch.einsum("bhk,bhkv->bhv", k_t, state)
        update = beta[:, t][..., None] * (v[:, t] - predicted)  # [B, H, V]
        state = state + k_t[..., None] * update[..., None, :]
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, state))
    return torch.stack(outputs, dim=1)


def gated_delta_rule_fla_wrapper(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: float) -> Tensor:
    """fla-core's chunk_gated_delta_rule with the trainer's conventions: g in fp32, beta (already 2*sigmoid(b))
    in q's dtype with the kernel's own beta activation off, no initial or final state."""
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    o, _ = chunk_gated_delta_rule(q, k, v, g.float(), beta.to(q.dtype), scale=scale, output_final_state=False)
    return o
