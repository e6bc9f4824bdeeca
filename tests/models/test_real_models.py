"""Our forward pass against transformers on the real GGUF files.

transformers loads the same GGUF (gguf_file=...), dequantized to float32; we run the
quantized weights with the exact (float-activation) kernels. Over a prompt of real prose:
next-token logits agree to 1e-3 and a 64-token greedy continuation is identical.
The Gemma prompt is longer than its 512-token sliding window, so local layers really slide.
"""

from __future__ import annotations

import os

import pytest
import torch

from sparsetier import kernels
from sparsetier.engine import GREEDY, Engine
from tests.helpers import hf_greedy, real_model_path, reference_text

CASES = [
    pytest.param("smollm2-135m", 200, id="smollm2"),
    pytest.param("gemma3-270m", 600, id="gemma3"),
    pytest.param("qwen2.5-coder-0.5b", 120, id="qwen2.5-0.5b"),
    pytest.param("qwen2.5-coder-1.5b", 120, id="qwen2.5-1.5b", marks=pytest.mark.slow),
]
N_NEW = 64


@pytest.mark.parametrize("name,n_prompt", CASES)
def test_matches_transformers(name: str, n_prompt: int) -> None:
    transformers = pytest.importorskip("transformers")
    path = real_model_path(name)
    engine = Engine.load(path, ctx_size=1024, progress=False, prefault=False)
    prompt = engine.tokenizer.encode(reference_text(8000, offset=1000))[:n_prompt]
    assert len(prompt) == n_prompt >= 64

    hf = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
    ).eval()
    ref_logits, ref_tokens = hf_greedy(hf, torch.tensor([prompt]), N_NEW)
    del hf

    with kernels.set_exact(True):
        # prefill in chunks that do not align with anything, to exercise chunked prefill
        engine.prefill_chunk = 77
        logits = engine.prefill(prompt)
        ours = list(engine.generate(prompt, GREEDY, max_tokens=N_NEW, stop_ids=set()))

    diff = (logits - ref_logits).abs().max().item()
    assert diff <= 1e-3, f"next-token logits differ by {diff}"
    first_mismatch = next((i for i, (a, b) in enumerate(zip(ours, ref_tokens, strict=False)) if a != b), None)
    assert ours == ref_tokens, f"greedy continuation diverges at token {first_mismatch}"
