"""Every supported architecture, built small and random from transformers' own config classes,
saved as safetensors, loaded by our Hugging Face loader and compared with transformers.

Weights are drawn with a large initializer range so logits are peaked: a greedy comparison
over near-uniform logits would test float noise, not the model.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from sparsetier import kernels
from sparsetier.engine import GREEDY, Engine
from sparsetier.weights.loader import open_model
from tests.helpers import hf_greedy

transformers = pytest.importorskip("transformers")

VOCAB = 512
COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=VOCAB,
    max_position_embeddings=1024,
    initializer_range=0.3,
    rms_norm_eps=1e-6,
)


def _llama(**kw):
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**COMMON, "num_hidden_layers": 3, **kw}))


def _drelu_llama():
    """dReLU (TurboSparse): relu(gate) * relu(up). transformers has no such activation, so the
    reference patches each MLP's forward with that formula."""
    model = _llama(hidden_act="relu")
    for layer in model.model.layers:
        mlp = layer.mlp
        mlp.forward = lambda x, m=mlp: m.down_proj(torch.relu(m.gate_proj(x)) * torch.relu(m.up_proj(x)))
    return model


ARCHS = {
    "llama": lambda: _llama(),
    "llama-tied": lambda: _llama(tie_word_embeddings=True),
    "llama-mqa-wide-heads": lambda: _llama(num_key_value_heads=1, head_dim=32),
    "llama3-rope-scaling": lambda: _llama(
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
    ),
    "llama-linear-rope": lambda: _llama(
        rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}
    ),
    "llama-relu": lambda: _llama(hidden_act="relu"),
    "llama-drelu": _drelu_llama,
    "mistral-sliding": lambda: transformers.MistralForCausalLM(
        transformers.MistralConfig(**{**COMMON, "num_hidden_layers": 2, "sliding_window": 24, "head_dim": 16})
    ),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(**{**COMMON, "num_hidden_layers": 2})
    ),
    "qwen2-yarn": lambda: transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(
            **{
                **COMMON,
                "num_hidden_layers": 2,
                "rope_parameters": {
                    "rope_type": "yarn",
                    "rope_theta": 10000.0,
                    "factor": 4.0,
                    "original_max_position_embeddings": 256,
                },
            }
        )
    ),
    "qwen3": lambda: transformers.Qwen3ForCausalLM(
        transformers.Qwen3Config(**{**COMMON, "num_hidden_layers": 2, "head_dim": 32})
    ),
    "gemma3": lambda: transformers.Gemma3ForCausalLM(
        transformers.Gemma3TextConfig(
            **{
                **COMMON,
                "num_hidden_layers": 7,
                "num_key_value_heads": 1,
                "head_dim": 32,
                "sliding_window": 24,
                "query_pre_attn_scalar": 24,
            }
        )
    ),
}


def _save(model, folder: str, name: str) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    if name == "llama-drelu":
        cfg_path = os.path.join(folder, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["hidden_act"] = "drelu"
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)


@pytest.mark.parametrize("name", list(ARCHS))
def test_random_model_matches_transformers(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    model = ARCHS[name]().float().eval()
    if name == "gemma3":  # random norms, so the (1 + w) convention is really exercised
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "norm" in n:
                    p.normal_(0, 0.3)
    _save(model, str(tmp_path), name)

    prompt = torch.randint(0, VOCAB, (80,)).tolist()
    ref_logits, ref_tokens = hf_greedy(model, torch.tensor([prompt]), 64)
    top2 = torch.topk(ref_logits, 2).values
    assert top2[0] - top2[1] > 1e-3, "reference logits are too flat for a meaningful greedy test"

    engine = Engine(open_model(str(tmp_path)), tokenizer=None, ctx_size=256, prefill_chunk=33)
    with kernels.set_exact(True):
        logits = engine.prefill(prompt)
        ours = list(engine.generate(prompt, GREEDY, max_tokens=64, stop_ids=set()))
    assert (logits - ref_logits).abs().max().item() <= 1e-3
    assert ours == ref_tokens


def test_batched_decode_matches_single_rows(tmp_path) -> None:
    """Several sequences at different positions decoded in one step give each row's own logits."""
    torch.manual_seed(1)
    _save(ARCHS["gemma3"]().float().eval(), str(tmp_path), "gemma3")
    src = open_model(str(tmp_path))
    engine = Engine(src, tokenizer=None, ctx_size=128, n_slots=3)
    prompts = [torch.randint(0, VOCAB, (n,)).tolist() for n in (5, 30, 17)]
    with kernels.set_exact(True):
        for slot, p in enumerate(prompts):
            engine.prefill(p[:-1], slot=slot)
        from sparsetier.models import Batch

        tokens = torch.tensor([[p[-1]] for p in prompts])
        batched = engine.model.forward(tokens, engine.cache, Batch([0, 1, 2], [len(p) - 1 for p in prompts]))
        single = Engine(src, tokenizer=None, ctx_size=128)
        for row, p in enumerate(prompts):
            single.slots[0].tokens = []
            expected = single.prefill(p)
            assert (batched[row] - expected).abs().max().item() <= 1e-4
