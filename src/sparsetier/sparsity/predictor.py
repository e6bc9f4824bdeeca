"""Neuron predictors (Deja Vu / PowerInfer): a small low-rank MLP per layer that guesses, from
the FFN's input, which neurons will be active, so gate and up are computed for those rows only.

A predictor is fc2(relu(fc1(x))): fc1 [rank, dim], fc2 [ffn, rank], no biases (PowerInfer's
layout). A neuron is predicted active when sigmoid(logit) > threshold.

- `train_predictors`: fit them (binary cross-entropy, Adam) on (FFN input, active neurons) pairs
  recorded from the model; `evaluate` reports recall and precision on held-out pairs.
- `load_powerinfer`: PowerInfer's published format, a folder of `model_{i}.pt` state dicts with
  `fc1.weight` and `fc2.weight` plus a `config.json` with `sparse_threshold` (loaded with
  weights_only=True: no pickled code runs).
- `PredictedFFN`: a block FFN that computes only the predicted neurons (an approximation:
  a missed active neuron is dropped; recall is what quality depends on).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import kernels
from ..errors import SparsetierError
from ..models.layers import DenseFFN
from .relu import RowwiseFFN


@dataclass
class Predictor:
    fc1: torch.Tensor  # [rank, dim]
    fc2: torch.Tensor  # [ffn, rank]
    threshold: float = 0.5  # probability above which a neuron is predicted active

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x.float(), self.fc1).relu_(), self.fc2)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean [..., ffn]: the neurons predicted active."""
        p = min(max(self.threshold, 1e-6), 1 - 1e-6)
        return self.logits(x) > torch.logit(torch.tensor(p)).item()


@dataclass
class Quality:
    recall: float  # active neurons that were predicted
    precision: float  # predicted neurons that were active
    predicted: float  # fraction of neurons predicted active (what is computed)


def evaluate(pred: Predictor, x: torch.Tensor, active: torch.Tensor) -> Quality:
    guess = pred.predict(x)
    tp = (guess & active).sum().item()
    return Quality(
        recall=tp / max(1, active.sum().item()),
        precision=tp / max(1, guess.sum().item()),
        predicted=guess.float().mean().item(),
    )


def train_predictor(
    x: torch.Tensor,
    active: torch.Tensor,
    rank: int = 64,
    epochs: int = 30,
    lr: float = 3e-3,
    threshold: float = 0.5,
    seed: int = 0,
) -> Predictor:
    """Fit one layer's predictor on x [N, dim] -> active [N, ffn] (bool). Active neurons are
    weighted up in the loss (a missed neuron costs quality, an extra one only time)."""
    gen = torch.Generator().manual_seed(seed)
    dim, ffn = x.shape[1], active.shape[1]
    # samples recorded under inference_mode are inference tensors: train on normal copies
    with torch.inference_mode(False), torch.enable_grad():
        x, target = x.clone().float(), active.clone().float()
        fc1 = (torch.randn(rank, dim, generator=gen) / dim**0.5).requires_grad_()
        fc2 = (torch.randn(ffn, rank, generator=gen) / rank**0.5).requires_grad_()
        opt = torch.optim.Adam([fc1, fc2], lr=lr)
        # active neurons are the minority in ReLU models: weigh them up so recall is learnt
        pos = target.mean().clamp(1e-3, 1 - 1e-3)
        weight = ((1 - pos) / pos).clamp(max=10.0)
        for _ in range(epochs):
            for idx in torch.randperm(x.shape[0], generator=gen).split(256):
                logits = F.linear(F.linear(x[idx], fc1).relu(), fc2)
                loss = F.binary_cross_entropy_with_logits(logits, target[idx], pos_weight=weight)
                opt.zero_grad()
                loss.backward()
                opt.step()
    return Predictor(fc1.detach(), fc2.detach(), threshold)


def load_powerinfer(folder: str, n_layers: int | None = None) -> list[Predictor]:
    """PowerInfer's predictor folder: model_0.pt ... model_{L-1}.pt and config.json."""
    cfg_path = os.path.join(folder, "config.json")
    try:
        with open(cfg_path) as f:
            threshold = float(json.load(f).get("sparse_threshold", 0.5))
    except (OSError, ValueError) as e:
        raise SparsetierError(f"{cfg_path}: cannot read the predictor config ({e})") from None
    preds = []
    i = 0
    while os.path.exists(os.path.join(folder, f"model_{i}.pt")) and (n_layers is None or i < n_layers):
        path = os.path.join(folder, f"model_{i}.pt")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises UnpicklingError and friends for refused content
            raise SparsetierError(f"{path}: not a predictor state dict ({e})") from None
        if not isinstance(sd, dict) or "fc1.weight" not in sd or "fc2.weight" not in sd:
            raise SparsetierError(f"{path}: expected fc1.weight and fc2.weight")
        fc1, fc2 = sd["fc1.weight"].float(), sd["fc2.weight"].float()
        if fc1.dim() != 2 or fc2.dim() != 2 or fc2.shape[1] != fc1.shape[0]:
            raise SparsetierError(f"{path}: fc1 {list(fc1.shape)} and fc2 {list(fc2.shape)} do not chain")
        preds.append(Predictor(fc1, fc2, threshold))
        i += 1
    if n_layers is not None and len(preds) != n_layers:
        raise SparsetierError(f"{folder}: {len(preds)} predictors (model_0.pt...) for {n_layers} layers")
    return preds


def save_powerinfer(preds: list[Predictor], folder: str) -> None:
    """Write predictors in PowerInfer's format (what `load_powerinfer` reads)."""
    os.makedirs(folder, exist_ok=True)
    for i, p in enumerate(preds):
        torch.save({"fc1.weight": p.fc1, "fc2.weight": p.fc2}, os.path.join(folder, f"model_{i}.pt"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"sparse_threshold": preds[0].threshold if preds else 0.5}, f)


class PredictedFFN(RowwiseFFN):
    """Decode computes gate/up rows and down columns of the predicted neurons only; prefill
    stays dense. Counts computed neurons (`computed`, `seen`)."""

    def __init__(self, ffn: DenseFFN, predictor: Predictor, columns: bool = True):
        super().__init__(ffn, columns)
        self.predictor = predictor
        self.computed = self.seen = 0

    def _row(self, x: torch.Tensor) -> torch.Tensor:
        idx = self.predictor.predict(x)[0].nonzero().squeeze(1)
        n = self.down.shape[-1]
        self.seen += n
        self.computed += idx.numel()
        if idx.numel() == 0:
            return torch.zeros(self.down.shape[0])
        g = kernels.linear_rows(x, self.gate, idx)
        u = kernels.linear_rows(x, self.up, idx)
        h = self._act(g, u)[0]
        return self._down(h, idx, n)


def record_ffn_samples(
    model: object, run: Callable[[], object], max_rows: int = 4096
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(FFN input, active neurons) per layer while `run()` drives the model; active = h != 0
    for ReLU-family FFNs, else |h| above the row's median (the half of neurons that matter)."""
    samples: list[list[torch.Tensor]] = [[] for _ in model.blocks]
    acts: list[list[torch.Tensor]] = [[] for _ in model.blocks]
    originals = []
    for i, blk in enumerate(model.blocks):
        ffn = blk.ffn
        originals.append(ffn.hidden)

        def hidden(x: torch.Tensor, ffn=ffn, i=i, orig=ffn.hidden) -> torch.Tensor:
            h = orig(x)
            if sum(s.shape[0] for s in samples[i]) < max_rows:
                x2, h2 = x.reshape(-1, x.shape[-1]), h.reshape(-1, h.shape[-1]).abs()
                on = h2 > 0 if ffn.act in ("relu", "drelu") else h2 > h2.median(dim=1, keepdim=True).values
                samples[i].append(x2.float().clone())
                acts[i].append(on)
            return h

        ffn.hidden = hidden
    try:
        run()
    finally:
        for blk, orig in zip(model.blocks, originals, strict=True):
            del blk.ffn.hidden  # the instance attribute; the class method shows again
            assert blk.ffn.hidden.__func__ is orig.__func__
    return [(torch.cat(s)[:max_rows], torch.cat(a)[:max_rows]) for s, a in zip(samples, acts, strict=True)]
