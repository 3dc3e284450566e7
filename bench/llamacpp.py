"""Benchmark: our INT4 ONNX packages side by side with llama.cpp Q4_0 on the same weights, in one run.

    bash bench/build_llamacpp.sh                      # once: llama-bench, llama-quantize (~10 min)
    python bench/llamacpp.py --fixture HF_DIR --package PKG [--package PKG2 ...] \\
        [--llama-cpp DIR] [--variants default,no_spinning] [--threads 2]

The full-size random Phi-3.5-mini snapshot (`python -m export fixture --size full`) is converted
to GGUF with llama.cpp's own converter (f16, then `llama-quantize` to Q4_0). The fixtures have no
`tokenizer.model`, which llama.cpp's Phi-3 converter asks for, so the vocabulary is read from
`tokenizer.json` through its Llama-HF vocab path, padded to the model's 32064 rows as the
Phi-3 path pads. Speed does not depend on weight values.

Measured, llama.cpp first and again last (so drift on a shared machine shows), with the same
thread count on both sides:
- llama.cpp: `llama-bench -p 512 -n 128 -d 0,512 -fa on,off`: prompt processing of 512 tokens
  (pp512), decode of 128 tokens at depth 0 and after 512 tokens of context; each figure is the
  faster of flash attention on and off (its default, auto, is not always the faster).
- onnxruntime-genai, for each package and session-option variant, in a fresh process
  (bench/export_text.py's measure): 512-token prompt to first token, 128 tokens decoded after a
  16-token prompt and after the 512-token prompt.
Ratios are ours / llama.cpp (mean of its two runs); goals from issue #12: decode >= 1.0 at depth
0 and 512, prefill >= 1.2.

Writes bench/results/llamacpp.json. Not run in CI (needs the full-size fixture, ~8 GB disk for
the f16 GGUF, ~15 min).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, machine, write_result  # noqa: E402
from bench.export_text import run_child  # noqa: E402

PROMPT_TOKENS = 512
DECODE_TOKENS = 128
REPEATS = 3

# onnxruntime session options tried to close the decode gap (genai_config names)
VARIANTS: dict[str, dict] = {
    "default": {},
    # threads that wait sleep instead of spinning: less CPU burnt between decode steps
    "no_spinning": {"session.intra_op.allow_spinning": "0"},
    # smaller work items for the thread pool: decode's MatMulNBits split more evenly over 2 cores
    "dynamic_block_base_4": {"session.dynamic_block_base": "4"},
    # the allocator without onnxruntime's arena
    "no_mem_arena": {"enable_cpu_mem_arena": False},
    # fewer graph rewrites (the default is all of them)
    "graph_optimization_extended": {"graph_optimization_level": "ORT_ENABLE_EXTENDED"},
}


def llama_cpp_tools(source: Path) -> tuple[Path, Path, Path]:
    bench_bin = source / "build" / "bin" / "llama-bench"
    quantize_bin = source / "build" / "bin" / "llama-quantize"
    converter = source / "convert_hf_to_gguf.py"
    for path in (bench_bin, quantize_bin, converter):
        if not path.exists():
            raise SystemExit(f"{path} is missing: run bash bench/build_llamacpp.sh first")
    return bench_bin, quantize_bin, converter


def convert(fixture: Path, source: Path, out: Path) -> None:
    """In a child process: llama.cpp's converter, with the vocabulary read from tokenizer.json."""
    sys.path.insert(0, str(source / "gguf-py"))
    sys.path.insert(0, str(source))
    import gguf
    from conversion import phi

    def vocab_from_tokenizer_json(self) -> None:
        vocab = gguf.LlamaHfVocab(self.dir_model)
        tokens, scores, types = [], [], []
        for text, score, kind in vocab.all_tokens():
            tokens.append(text)
            scores.append(score)
            types.append(kind)
        # the embedding has more rows than the tokenizer has tokens; llama.cpp wants one per row
        for index in range(len(tokens), self.hparams["vocab_size"]):
            tokens.append(f"[PAD{index}]".encode())
            scores.append(-10000.0)
            types.append(gguf.TokenType.UNUSED)
        self.gguf_writer.add_tokenizer_model("llama")
        self.gguf_writer.add_tokenizer_pre("default")
        self.gguf_writer.add_token_list(tokens)
        self.gguf_writer.add_token_scores(scores)
        self.gguf_writer.add_token_types(types)
        gguf.SpecialVocab(self.dir_model, n_vocab=len(tokens)).add_to_gguf(self.gguf_writer)

    if not (fixture / "tokenizer.model").exists():
        phi.Phi3MiniModel.set_vocab = vocab_from_tokenizer_json
    import convert_hf_to_gguf

    sys.argv = ["convert_hf_to_gguf.py", str(fixture), "--outfile", str(out), "--outtype", "f16"]
    convert_hf_to_gguf.main()


def build_gguf(fixture: Path, source: Path, work: Path, threads: int) -> tuple[Path, dict]:
    _bench, quantize_bin, _converter = llama_cpp_tools(source)
    q4 = work / "phi-3.5-mini-q4_0.gguf"
    info: dict = {"path": str(q4)}
    if q4.exists():
        info["reused"] = True
        return q4, info
    f16 = work / "phi-3.5-mini-f16.gguf"
    wall, rss, _ = run_child([sys.executable, str(Path(__file__).resolve()), "--convert", str(fixture),
                              "--llama-cpp", str(source), "--convert-output", str(f16)])
    info["convert_f16_s"], info["convert_peak_rss_bytes"] = round(wall, 1), rss
    start = time.perf_counter()
    subprocess.run([str(quantize_bin), str(f16), str(q4), "Q4_0", str(threads)], check=True,
                   stdout=subprocess.DEVNULL, stderr=sys.stderr)
    info["quantize_s"] = round(time.perf_counter() - start, 1)
    info["bytes"] = q4.stat().st_size
    f16.unlink()
    return q4, info


def llama_bench(source: Path, gguf_path: Path, threads: int) -> dict:
    bench_bin, _quantize, _converter = llama_cpp_tools(source)
    argv = [str(bench_bin), "-m", str(gguf_path), "-t", str(threads), "-p", str(PROMPT_TOKENS),
            "-n", str(DECODE_TOKENS), "-d", f"0,{PROMPT_TOKENS}", "-r", str(REPEATS), "-fa", "on,off", "-o", "json"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    rows = json.loads(out)

    def rate(prompt: int, gen: int, depth: int) -> dict:
        """llama.cpp at its best: flash attention on or off, whichever is faster for this test
        (on this machine off decodes faster after 512 tokens, on prefills faster)."""
        both = [r for r in rows if r["n_prompt"] == prompt and r["n_gen"] == gen and r["n_depth"] == depth]
        best = max(both, key=lambda r: r["avg_ts"])
        return {"tok_s": round(best["avg_ts"], 2), "stddev": round(best["stddev_ts"], 2),
                "flash_attn": best.get("flash_attn"), "samples": [round(x, 2) for x in best.get("samples_ts", [])],
                "by_flash_attn": {str(r.get("flash_attn")): round(r["avg_ts"], 2) for r in both}}

    first = rows[0]
    return {
        "build": {"commit": first.get("build_commit"), "cpu_info": first.get("cpu_info"),
                  "backends": first.get("backends"), "type_k": first.get("type_k")},
        "prefill_512": rate(PROMPT_TOKENS, 0, 0),
        "prefill_512_at_512": rate(PROMPT_TOKENS, 0, PROMPT_TOKENS),
        "decode": rate(0, DECODE_TOKENS, 0),
        "decode_at_512": rate(0, DECODE_TOKENS, PROMPT_TOKENS),
    }


def onnx_run(package: Path, threads: int, options: dict) -> dict:
    _wall, peak, out = run_child([sys.executable, str(REPO / "bench" / "export_text.py"), "--measure", str(package),
                                  "--measure-threads", str(threads), "--measure-session-options", json.dumps(options)])
    run = json.loads(out)
    run["peak_rss_bytes"] = peak
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixture", type=Path, help="full-size Hugging Face snapshot (random fixture)")
    parser.add_argument("--package", type=Path, action="append", default=[], help="INT4 package(s) of that snapshot")
    parser.add_argument("--llama-cpp", type=Path, default=None, help="llama.cpp source dir with build/bin "
                        "(default: what bench/build_llamacpp.sh builds)")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "work")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"session-option variants for the first package, of: {', '.join(VARIANTS)}")
    parser.add_argument("--output", type=Path, default=RESULTS / "llamacpp.json")
    parser.add_argument("--convert", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--convert-output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    source = args.llama_cpp or next((args.work / "llamacpp").glob("llama_cpp_python-*/vendor/llama.cpp"), None)
    if source is None:
        raise SystemExit("no llama.cpp build: run bash bench/build_llamacpp.sh or pass --llama-cpp")
    if args.convert:
        convert(args.convert, source, args.convert_output)
        return 0
    if args.fixture is None or not args.package:
        parser.error("--fixture and --package are required")
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants: {unknown}")

    from edge_agent.manifest import read_manifest
    from export.package import tool_versions

    args.work.mkdir(parents=True, exist_ok=True)
    result: dict = {"benchmark": "llamacpp", "machine": machine(), "tools": tool_versions(), "threads": args.threads,
                    "prompt_tokens": PROMPT_TOKENS, "decode_tokens": DECODE_TOKENS, "repeats": REPEATS}
    gguf_path, result["gguf"] = build_gguf(args.fixture, source, args.work, args.threads)
    runs_llama = [llama_bench(source, gguf_path, args.threads)]
    print(json.dumps({"llama.cpp": runs_llama[0]}), file=sys.stderr)
    ours = []
    plan = [(args.package[0], v) for v in variants] + [(p, "default") for p in args.package[1:]]
    for package, variant in plan:
        quant = read_manifest(package).quantization
        run = {"package": package.name, "block_size": quant.get("block_size"),
               "accuracy_level": quant.get("accuracy_level"), "variant": variant,
               "session_options": VARIANTS[variant], **onnx_run(package, args.threads, VARIANTS[variant])}
        print(json.dumps({k: v for k, v in run.items() if k != "samples"}), file=sys.stderr)
        ours.append(run)
    runs_llama.append(llama_bench(source, gguf_path, args.threads))
    llama = {key: round(statistics.mean(r[key]["tok_s"] for r in runs_llama), 2)
             for key in ("prefill_512", "decode", "decode_at_512")}
    result["llama_cpp"] = {"runs": runs_llama, "mean": llama}
    result["onnxruntime_genai"] = ours
    result["ratios_ours_vs_llama_cpp"] = [
        {"package": r["package"], "variant": r["variant"],
         "prefill_512": round(r["prefill_tok_s"] / llama["prefill_512"], 3),
         "decode": round(r["decode_tok_s"] / llama["decode"], 3),
         "decode_at_512": round(r["decode_tok_s_at_512"] / llama["decode_at_512"], 3)} for r in ours]
    result["goals"] = {"prefill_512": 1.2, "decode": 1.0, "decode_at_512": 1.0}
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
