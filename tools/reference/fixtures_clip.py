"""CLIPTextModel (quick_gelu, legacy eos id 2) and CLIPTextModelWithProjection (gelu,
eos id 299) from transformers with small random weights: weights, ids, every hidden
state, pooled output and projected embeddings."""
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from common import save, gen

entries = {}
cases = [
    ("l", CLIPTextModel, dict(hidden_act="quick_gelu", eos_token_id=2)),
    ("g", CLIPTextModelWithProjection, dict(hidden_act="gelu", eos_token_id=299, projection_dim=24)),
]
for name, cls, extra in cases:
    torch.manual_seed(0 if name == "l" else 1)
    cfg = CLIPTextConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, max_position_embeddings=16, bos_token_id=298, pad_token_id=1,
                         **extra)
    model = cls(cfg).eval()
    with torch.no_grad():  # make biases and norms non-trivial so the test sees them
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen(p.numel())) * 0.05)
    ids = torch.tensor([[298, 5, 17, 200, 299, 299, 299, 299, 299, 299],
                        [298, 3, 299, 0, 0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    for k, v in model.state_dict().items():
        if "position_ids" not in k:
            entries[f"{name}.weights.{k}"] = v
    entries[f"{name}.ids"] = ids.float()
    entries[f"{name}.last_hidden_state"] = out.last_hidden_state
    for i, h in enumerate(out.hidden_states):
        entries[f"{name}.hidden_states.{i}"] = h
    if name == "l":
        entries[f"{name}.pooled"] = out.pooler_output
    else:
        entries[f"{name}.text_embeds"] = out.text_embeds
save("clip", entries)
