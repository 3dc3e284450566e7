"""What every package check is made of: a result with a status, greedy generation, and
parity metrics with their bounds per precision. export/verify.py (text) and
export/verify_vision.py (vision) both build on it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

PASS, FAIL, SKIP = "pass", "fail", "skip"

# Parity bounds per precision. fp32 must agree with PyTorch to float rounding. INT4 is
# judged by how much of the logit vector survives (cosine) and by the largest error in units
# of the reference logits' spread: top-1 agreement is reported for it but not gated, because
# on random fixture weights the logits are nearly flat and the argmax is decided by noise.
PARITY_BOUNDS = {
    "fp32": {"max_abs_diff": 1e-3, "min_top1": 1.0},
    "fp16": {"max_rel_diff": 0.1, "min_cosine": 0.999},
    "int4": {"max_rel_diff": 1.5, "min_cosine": 0.95},
}


@dataclass
class CheckResult:
    name: str
    status: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


def greedy_generate(model, prompt, new_tokens: int, prompt_length: int | None = None) -> list[int]:
    """Greedy tokens after a prompt: token ids, or the inputs a multimodal processor made
    (then `prompt_length` is their token count)."""
    import onnxruntime_genai as og

    ids = isinstance(prompt, np.ndarray)
    length = len(prompt) if ids else prompt_length
    assert length is not None, "prompt_length is required with processor inputs"
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=length + new_tokens)
    generator = og.Generator(model, params)
    if ids:
        generator.append_tokens(prompt)
    else:
        generator.set_inputs(prompt)
    produced: list[int] = []
    while not generator.is_done() and len(produced) < new_tokens:
        generator.generate_next_token()
        produced.append(int(generator.get_next_tokens()[0]))
    return produced


def parity_metrics(onnx_logits: np.ndarray, ref_logits: np.ndarray) -> dict[str, float]:
    diff = np.abs(onnx_logits - ref_logits)
    cosine = (onnx_logits * ref_logits).sum(-1) / (
        np.linalg.norm(onnx_logits, axis=-1) * np.linalg.norm(ref_logits, axis=-1) + 1e-12)
    ref_std = float(ref_logits.std())
    return {
        "positions": int(ref_logits.shape[0]),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "ref_logit_std": ref_std,
        "max_rel_diff": float(diff.max()) / max(ref_std, 1e-12),
        "top1_agreement": float((onnx_logits.argmax(-1) == ref_logits.argmax(-1)).mean()),
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
    }


def within_bounds(metrics: dict[str, float], precision: str, table: dict | None = None) -> list[str]:
    bounds = (table or PARITY_BOUNDS)[precision]
    broken = []
    if "max_abs_diff" in bounds and metrics["max_abs_diff"] > bounds["max_abs_diff"]:
        broken.append(f"max abs diff {metrics['max_abs_diff']:.3g} > {bounds['max_abs_diff']}")
    if "max_rel_diff" in bounds and metrics["max_rel_diff"] > bounds["max_rel_diff"]:
        broken.append(f"max diff / logit std {metrics['max_rel_diff']:.3g} > {bounds['max_rel_diff']}")
    if "min_top1" in bounds and metrics["top1_agreement"] < bounds["min_top1"]:
        broken.append(f"top-1 agreement {metrics['top1_agreement']:.3f} < {bounds['min_top1']}")
    if "min_cosine" in bounds and metrics["min_cosine"] < bounds["min_cosine"]:
        broken.append(f"min cosine {metrics['min_cosine']:.4f} < {bounds['min_cosine']}")
    return broken
