"""Checking a model package: files, loading, tokenizer, generation and, optionally, parity
of its logits with the PyTorch model it was exported from.

Each check returns a CheckResult; the package passes only if none fails. Checks that need a
loaded model are skipped (and say why) when the files do not match the manifest, since the
model would not be the one that was exported.
"""
from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.engines.genai import load_model
from edge_agent.manifest import Manifest, ManifestError, check_files, read_manifest

from . import data
from .checks import FAIL, PARITY_BOUNDS, PASS, SKIP, CheckResult, greedy_generate, parity_metrics, within_bounds
from .errors import ExportError

# The Phi-3.5 chat format, written out by hand from the model card, to check the template
# that the package's tokenizer actually applies.
CHAT_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Read me the label."},
    {"role": "assistant", "content": "It says: keep refrigerated."},
    {"role": "user", "content": "Thanks!"},
]
CHAT_EXPECTED = ("<|system|>\nYou are a helpful assistant.<|end|>\n"
                 "<|user|>\nRead me the label.<|end|>\n"
                 "<|assistant|>\nIt says: keep refrigerated.<|end|>\n"
                 "<|user|>\nThanks!<|end|>\n"
                 "<|assistant|>\n")
GENERATION_PROMPT = [{"role": "user", "content": "Write one sentence about the sea."}]
GENERATION_TOKENS = 16
REFERENCE_PROMPTS = (
    "<|user|>\nWhat is the capital of France?<|end|>\n<|assistant|>\n",
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.",
    "def add(a, b):\n    return a + b  # Grüße, 世界 🚀",
)

@dataclass
class VerifyReport:
    package: str
    checks: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks) and any(c.status == PASS for c in self.checks)

    def to_dict(self) -> dict:
        return {"package": self.package, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def text(self) -> str:
        lines = [f"{c.status.upper():4}  {c.name:12}  {c.detail}" for c in self.checks]
        lines.append(f"{'OK' if self.ok else 'FAILED'}: {self.package}")
        return "\n".join(lines)


def _check_manifest(package: Path) -> tuple[CheckResult, Manifest | None]:
    try:
        manifest = read_manifest(package)
    except ManifestError as exc:
        return CheckResult("manifest", FAIL, str(exc)), None
    return CheckResult("manifest", PASS, f"role {manifest.role}, {manifest.precision} for {manifest.target}, "
                       f"context {manifest.context_length}, {len(manifest.files)} files"), manifest


def _check_files(package: Path, manifest: Manifest) -> CheckResult:
    problems = check_files(package, manifest)
    if problems:
        listed = "; ".join(f"{p.path}: {p.detail}" for p in problems[:5])
        return CheckResult("files", FAIL, listed, {"problems": [asdict(p) for p in problems]})
    total = sum(f.size for f in manifest.files)
    return CheckResult("files", PASS, f"{len(manifest.files)} files, {total / 1e6:.1f} MB, sizes and sha256 match")


# the runtime's model type and the end tokens that must stop generation, by package role
def _role_expectations(role: str) -> tuple[str, tuple[int, ...]]:
    from .package import PHI3_EOS_IDS
    from .speech import WHISPER_EOS_IDS

    return {"chat": ("phi3", PHI3_EOS_IDS), "vision": ("phi3v", PHI3_EOS_IDS),
            "speech": ("whisper", WHISPER_EOS_IDS)}[role]


def _check_genai_config(package: Path, manifest: Manifest) -> CheckResult:
    from .package import eos_ids

    expected_type, required_eos = _role_expectations(manifest.role)
    config = json.loads((package / "genai_config.json").read_text())
    problems = []
    if config["search"].get("max_length") != manifest.context_length:
        problems.append(f"search.max_length {config['search'].get('max_length')} != manifest context "
                        f"{manifest.context_length}")
    eos = eos_ids(config)
    missing = [t for t in required_eos if t not in eos]
    if missing:
        problems.append(f"end-of-turn ids {missing} missing from eos_token_id {eos}")
    if config["model"].get("type") != expected_type:
        problems.append(f"model type {config['model'].get('type')!r}, expected {expected_type!r}")
    if problems:
        return CheckResult("genai_config", FAIL, "; ".join(problems))
    return CheckResult("genai_config", PASS, f"max_length {manifest.context_length}, eos {eos}")


def _check_tokenizer(tokenizer) -> CheckResult:
    vectors = data.vocab_test_vectors()
    failures = []
    for text, expected in vectors:
        got = [int(t) for t in tokenizer.encode(text)]
        if got[:1] == [1] and expected[:1] != [1]:
            got = got[1:]  # a BOS the test vectors leave out
        if got != expected:
            failures.append(text)
    if failures:
        return CheckResult("tokenizer", FAIL, f"{len(failures)} of {len(vectors)} llama.cpp vectors differ, "
                           f"first: {failures[0][:40]!r}", {"failed": len(failures), "total": len(vectors)})
    return CheckResult("tokenizer", PASS, f"all {len(vectors)} llama.cpp vocabulary vectors match",
                       {"total": len(vectors)})


def _check_chat_template(tokenizer) -> CheckResult:
    rendered = tokenizer.apply_chat_template(json.dumps(CHAT_MESSAGES), add_generation_prompt=True)
    if rendered != CHAT_EXPECTED:
        return CheckResult("chat_format", FAIL, f"template renders {rendered!r}, expected {CHAT_EXPECTED!r}")
    return CheckResult("chat_format", PASS, "template renders the Phi-3.5 chat format")


def _check_generation(model, tokenizer, vocab_size: int) -> CheckResult:
    prompt = tokenizer.apply_chat_template(json.dumps(GENERATION_PROMPT), add_generation_prompt=True)
    ids = np.asarray(tokenizer.encode(prompt), dtype=np.int32)
    start = time.perf_counter()
    first = greedy_generate(model, ids, GENERATION_TOKENS)
    seconds = time.perf_counter() - start
    second = greedy_generate(model, ids, GENERATION_TOKENS)
    info = {"prompt_tokens": len(ids), "tokens": first, "seconds": round(seconds, 4),
            "text": tokenizer.decode(np.asarray(first, dtype=np.int32))}
    if not first:
        return CheckResult("generation", FAIL, "greedy generation produced no token", info)
    if any(not 0 <= t < vocab_size for t in first):
        return CheckResult("generation", FAIL, f"token ids outside the vocabulary: {first}", info)
    if first != second:
        return CheckResult("generation", FAIL, f"greedy generation is not deterministic: {first} vs {second}", info)
    return CheckResult("generation", PASS, f"{len(first)} greedy tokens from a {len(ids)}-token prompt in "
                       f"{seconds:.2f} s, repeatable", info)


def onnx_prompt_logits(model, prompt_ids: np.ndarray) -> np.ndarray:
    """Logits for every prompt position from one prefill step: [seq, vocab] float32."""
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt_ids) + 1)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt_ids)
    return np.asarray(generator.get_output("logits"), dtype=np.float32)[0]


def load_reference(reference: Path, work: Path):
    """The PyTorch model from a snapshot, loaded without running any of its code."""
    import torch
    from transformers import AutoModelForCausalLM

    from .snapshot import open_snapshot, stage_view
    from .text import TEXT_ARCHITECTURES

    snapshot = open_snapshot(reference, TEXT_ARCHITECTURES)
    view = stage_view(snapshot, work / "reference")
    model = AutoModelForCausalLM.from_pretrained(str(view), dtype=torch.float32, trust_remote_code=False)
    return snapshot, model.eval()


def _check_reference(model, tokenizer, manifest: Manifest, reference: Path) -> CheckResult:
    import torch

    with tempfile.TemporaryDirectory(prefix="edge-agent-verify-") as work:
        snapshot, ref_model = load_reference(reference, Path(work))
        if snapshot.config_sha256 != manifest.source.get("config_sha256"):
            return CheckResult("reference", FAIL, f"{reference} is not the snapshot this package was exported "
                               "from (config.json hash differs from the manifest's)")
        per_prompt = []
        for prompt in REFERENCE_PROMPTS:
            ids = np.asarray(tokenizer.encode(prompt), dtype=np.int32)
            onnx_logits = onnx_prompt_logits(model, ids)
            with torch.no_grad():
                ref_logits = ref_model(torch.tensor(ids, dtype=torch.long)[None]).logits[0].float().numpy()
            per_prompt.append(parity_metrics(onnx_logits, ref_logits))
    summary: dict[str, Any] = {
        "prompts": len(per_prompt),
        "positions": sum(m["positions"] for m in per_prompt),
        "max_abs_diff": max(m["max_abs_diff"] for m in per_prompt),
        "max_rel_diff": max(m["max_rel_diff"] for m in per_prompt),
        "top1_agreement": float(np.average([m["top1_agreement"] for m in per_prompt],
                                           weights=[m["positions"] for m in per_prompt])),
        "min_cosine": min(m["min_cosine"] for m in per_prompt),
        "bounds": PARITY_BOUNDS[manifest.precision],
        "per_prompt": per_prompt,
    }
    text = (f"{summary['positions']} positions: max abs diff {summary['max_abs_diff']:.3g} "
            f"({summary['max_rel_diff']:.3g} x logit std), top-1 agreement {summary['top1_agreement']:.1%}, "
            f"min cosine {summary['min_cosine']:.4f}")
    broken = within_bounds(summary, manifest.precision)
    if broken:
        return CheckResult("reference", FAIL, f"{text}; outside the {manifest.precision} bounds: "
                           + "; ".join(broken), summary)
    return CheckResult("reference", PASS, f"{text} (within {manifest.precision} bounds)", summary)


@dataclass(frozen=True)
class VerifyRequest:
    """What the user gave `verify` besides the package."""
    reference: Path | None = None  # the snapshot, for parity with PyTorch
    images: tuple[Path, ...] = ()  # vision packages: answer `question` about each
    question: str = "What does it say?"
    audios: tuple[Path, ...] = ()  # speech packages: transcribe each


def phi3_tokenizer_checks(tokenizer) -> list[CheckResult]:
    return [_check_tokenizer(tokenizer), _check_chat_template(tokenizer)]


def text_checks(package: Path, manifest: Manifest, model, tokenizer, request: VerifyRequest,
                progress: Callable[[str], None]) -> list[CheckResult]:
    """The checks of a chat package once it has loaded: tokenizer, generation, and parity if asked."""
    results = phi3_tokenizer_checks(tokenizer)
    progress("generating")
    vocab = int(json.loads((package / "genai_config.json").read_text())["model"]["vocab_size"])
    results.append(_check_generation(model, tokenizer, vocab))
    if request.reference is not None:
        progress(f"comparing logits with the PyTorch model from {request.reference}")
        results.append(_check_reference(model, tokenizer, manifest, Path(request.reference)))
    return results


@dataclass(frozen=True)
class RoleChecks:
    names: tuple[str, ...]  # the checks it runs (skipped by name when the package cannot load)
    run: Callable[..., list[CheckResult]]


def _vision_checks(*args, **kwargs) -> list[CheckResult]:
    from .verify_vision import vision_checks  # torch-free until a vision package is verified

    return phi3_tokenizer_checks(args[3]) + vision_checks(*args, **kwargs)


def _speech_checks(*args, **kwargs) -> list[CheckResult]:
    from .verify_speech import speech_checks

    return speech_checks(*args, **kwargs)


# what is checked after loading, by the package's role
ROLE_CHECKS = {"chat": RoleChecks(("tokenizer", "chat_format", "generation"), text_checks),
               "vision": RoleChecks(("tokenizer", "chat_format", "preprocessing", "generation"), _vision_checks),
               "speech": RoleChecks(("tokenizer", "preprocessing", "transcription"), _speech_checks)}
# what each role's own inputs are called on the command line
ROLE_INPUTS = {"images": ("vision", "--image"), "audios": ("speech", "--audio")}


def verify_package(package: Path, reference: Path | None = None, threads: int | None = None,
                   progress: Callable[[str], None] | None = None, images: list[Path] | None = None,
                   question: str = "What does it say?", audios: list[Path] | None = None) -> VerifyReport:
    package = Path(package)
    if not package.is_dir():
        raise ExportError(f"package folder {package} does not exist")
    request = VerifyRequest(reference, tuple(images or ()), question, tuple(audios or ()))
    say = progress or (lambda _msg: None)
    report = VerifyReport(str(package), [])
    result, manifest = _check_manifest(package)
    report.checks.append(result)
    if manifest is None:
        return report
    role = ROLE_CHECKS[manifest.role]
    for field, (wanted_role, option) in ROLE_INPUTS.items():
        if getattr(request, field) and manifest.role != wanted_role:
            raise ExportError(f"{option} needs a {wanted_role} package; this one is a {manifest.role} package")
    say("checking file hashes")
    files = _check_files(package, manifest)
    report.checks.append(files)
    dependent = ["genai_config", "load", *role.names]
    if reference is not None:
        dependent.append("reference")
    if files.status == FAIL:
        report.checks += [CheckResult(name, SKIP, "package files do not match the manifest") for name in dependent]
        return report
    report.checks.append(_check_genai_config(package, manifest))

    import onnxruntime_genai as og

    # a CUDA package is still checked on a machine without CUDA, on the CPU provider
    cpu_fallback = manifest.target == "cuda" and not og.is_cuda_available()
    say("loading the package with onnxruntime-genai" + (" on the CPU (no CUDA here)" if cpu_fallback else ""))
    start = time.perf_counter()
    try:
        model = load_model(package, threads, cpu_only=cpu_fallback)
        tokenizer = og.Tokenizer(model)
    except Exception as exc:  # onnxruntime-genai raises RuntimeError with its own message
        report.checks.append(CheckResult("load", FAIL, f"onnxruntime-genai cannot load it: {exc}"))
        report.checks += [CheckResult(n, SKIP, "the package did not load") for n in dependent[2:]]
        return report
    load_seconds = time.perf_counter() - start
    fallback_note = ", CUDA package run on the CPU provider" if cpu_fallback else ""
    report.checks.append(CheckResult("load", PASS, f"loaded in {load_seconds:.2f} s ({model.type} on "
                                     f"{model.device_type}{fallback_note})",
                                     {"seconds": round(load_seconds, 3), "cpu_fallback": cpu_fallback}))
    report.checks += role.run(package, manifest, model, tokenizer, request, say)
    return report
