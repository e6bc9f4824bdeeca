"""Runner: transformers with accelerate's disk offload (`device_map`, `max_memory`,
`offload_folder`), the usual answer for a model larger than memory in the Hugging Face stack.

transformers cannot disk-offload a GGUF-loaded model with a tied embedding (a KeyError on the
embedding) nor save one (`save_pretrained` refuses GGUF-quantized models), so `prepare` (run once,
outside any memory limit) dequantizes the GGUF, unties the head and writes a plain safetensors
folder; `load` then maps it with everything that does not fit `max_memory` left on disk.
"""

from __future__ import annotations

import os
from typing import Any

from .measure import Loaded
from .run_transformers import greedy_generator

RESERVE_BYTES = 300 << 20  # activations, KV cache and page cache of the offloaded reads


def folder_for(path: str, dtype: str) -> str:
    from ..weights import catalog

    stem = os.path.splitext(os.path.basename(path))[0]
    root = os.path.join(os.path.dirname(catalog.cache_dir()), "offload")
    return os.path.join(root, f"{stem}-{dtype}")


def prepare(path: str, options: dict[str, Any]) -> dict[str, Any]:
    """Write (once) the untied safetensors folder; the options `load` needs."""
    import json

    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    dtype = options.get("dtype", "bfloat16")
    folder = folder_for(path, dtype)
    if not os.path.exists(os.path.join(folder, "model.safetensors")):
        logging.set_verbosity_error()
        path = os.path.abspath(path)
        model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(path), gguf_file=os.path.basename(path), dtype=getattr(torch, dtype)
        )
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        embed = model.get_input_embeddings().weight
        head = model.get_output_embeddings().weight
        head_key = next((k for k in state if k.endswith("lm_head.weight")), "lm_head.weight")
        # untied: the head gets its own tensor on disk (a copy of the embedding if they were tied)
        state[head_key] = (embed if head.data_ptr() == embed.data_ptr() else head).detach().clone()
        os.makedirs(folder, exist_ok=True)
        model.config.tie_word_embeddings = False
        if hasattr(model.config, "quantization_config"):
            delattr(model.config, "quantization_config")
        model.config.save_pretrained(folder)
        tmp = os.path.join(folder, "model.safetensors.tmp")
        save_file(state, tmp, metadata={"format": "pt"})
        os.replace(tmp, os.path.join(folder, "model.safetensors"))
        with open(os.path.join(folder, "source.json"), "w") as f:
            json.dump({"gguf": path, "dtype": dtype}, f)
    return {"hf_folder": folder, "offload_folder": folder + "-offload"}


def load(path: str, threads: int, ctx_size: int, options: dict[str, Any]) -> Loaded:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    from .measure import peak_rss_bytes

    logging.set_verbosity_error()
    torch.set_num_threads(threads)
    dtype = getattr(torch, options.get("dtype", "bfloat16"))
    folder = options.get("hf_folder") or prepare(path, options)["hf_folder"]
    limit = options.get("memory_limit")
    # Without a limit every weight goes to disk; with one, what the limit leaves stays in memory.
    cpu = max(0, int(limit) - peak_rss_bytes() - RESERVE_BYTES) if limit else 0
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        dtype=dtype,
        device_map="auto",
        max_memory={"cpu": max(cpu, 1 << 20)},
        offload_folder=options.get("offload_folder") or folder + "-offload",
    )
    model.eval()

    generate = greedy_generator(model)

    # offloaded parameters sit on the meta device: count bytes from shapes (the head is untied)
    params = list(model.parameters())
    size = params[0].element_size()
    embed = model.get_input_embeddings().weight
    per_token = (sum(p.numel() for p in params) - embed.numel() + embed.shape[1]) * size
    return Loaded(generate, per_token)
