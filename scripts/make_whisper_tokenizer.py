"""Write export/data/whisper-tokenizer/ from the `openai-whisper` source distribution.

Run once by a maintainer (the output is committed; tests and CI never run this):

    pip download --no-deps --no-binary :all: openai-whisper==20250625
    tar xzf openai_whisper-20250625.tar.gz
    pip install tiktoken          # only to write the outside-check vectors
    python scripts/make_whisper_tokenizer.py openai_whisper-20250625

Whisper's multilingual vocabulary ships as tiktoken ranks (`whisper/assets/multilingual.tiktoken`,
MIT). A Hugging Face snapshot of Whisper holds the same vocabulary as a byte-level BPE
`tokenizer.json`: 50,257 ranked tokens, then `<|endoftext|>` and the special tokens in
whisper/tokenizer.py's order (start of transcript, 99 languages, tasks, `<|nocaptions|>` (the
name Hugging Face's checkpoints give `<|nospeech|>`), `<|notimestamps|>`, 1,501 timestamps):
51,865 ids for whisper-tiny/base/small/medium/large-v2. The merges are recovered from the ranks
(each token's merge is the pair that byte-pair encoding with the lower ranks leaves), and
`vocab-tests.json` holds tiktoken's own encoding of test strings, so the converted tokenizer is
checked against the original rather than against itself.
"""
from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "export" / "data" / "whisper-tokenizer"
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
NUM_LANGUAGES = 99  # multilingual checkpoints before large-v3 (which adds "yue")
TEST_STRINGS = (
    "", " ", "  ", "\n", "\n\n", "\t", "Hello world", " Hello world", "Hello World", "hello, world!",
    "What is this?", "Read the label.", "It's 3:45 pm; the store's open 'til 9.", "12345678901234567890",
    "Ünïcödé: Grüße, ½ café naïve façade", "Привет, мир", "こんにちは世界", "你好，世界", "مرحبا بالعالم",
    "🚀 emoji 👍🏽 and ♪♪ music", "   leading spaces", "trailing spaces   ", "tabs\tand\nnewlines\r\n",
    "def add(a, b):\n    return a + b",
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.",
    "Mr. O'Neill's dog—it's 2.5 kg—doesn't bite.", "(SPEAKING FOREIGN LANGUAGE) [music] ♪♪♪",
)


def load_ranks(path: Path) -> dict[bytes, int]:
    ranks = {}
    for line in path.read_text().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def special_tokens(languages: list[str]) -> list[str]:
    return (["<|endoftext|>", "<|startoftranscript|>"] + [f"<|{code}|>" for code in languages[:NUM_LANGUAGES]]
            + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
               "<|notimestamps|>"] + [f"<|{i * 0.02:.2f}|>" for i in range(1501)])


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-ins for bytes, as byte-level BPE files spell tokens."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def merge_of(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """Byte-pair encode `token` with the ranks below its own: the two parts left are its merge."""
    parts = [bytes([b]) for b in token]
    limit = ranks[token]
    while len(parts) > 2:
        best = None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < limit and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            raise ValueError(f"token {token!r} cannot be built from lower ranks")
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts[0], parts[1]


def languages_of(source: Path) -> list[str]:
    text = (source / "whisper" / "tokenizer.py").read_text()
    block = text[text.index("LANGUAGES = {"):text.index("}", text.index("LANGUAGES = {"))]
    return re.findall(r'^\s+"([a-z]+)": "', block, flags=re.M)


def main(source: Path) -> None:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    ranks = load_ranks(source / "whisper" / "assets" / "multilingual.tiktoken")
    spell = byte_to_unicode()

    def text_of(token: bytes) -> str:
        return "".join(spell[b] for b in token)

    vocab = {text_of(token): rank for token, rank in ranks.items()}
    ordered = sorted((rank, token) for token, rank in ranks.items() if len(token) > 1)
    merges = [tuple(text_of(p) for p in merge_of(token, ranks)) for _, token in ordered]
    specials = special_tokens(languages_of(source))

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    # the regex is Whisper's (GPT-2's); splitting and byte mapping are byte-level BPE's
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    assert tokenizer.get_vocab_size() == 51865, tokenizer.get_vocab_size()
    assert tokenizer.token_to_id("<|startoftranscript|>") == 50258
    assert tokenizer.token_to_id("<|en|>") == 50259 and tokenizer.token_to_id("<|transcribe|>") == 50359
    assert tokenizer.token_to_id("<|notimestamps|>") == 50363 and tokenizer.token_to_id("<|30.00|>") == 51864

    OUT.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(OUT / "tokenizer.json"), pretty=False)
    config = {
        "tokenizer_class": "WhisperTokenizer", "model_max_length": 1024, "add_prefix_space": False,
        "errors": "replace", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "clean_up_tokenization_spaces": True,
        "additional_special_tokens": specials[1:NUM_LANGUAGES + 8],
    }
    (OUT / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")

    import tiktoken

    reference = tiktoken.Encoding(name="multilingual", pat_str=PATTERN, mergeable_ranks=ranks,
                                  special_tokens={t: len(ranks) + i for i, t in enumerate(specials)})
    vectors = [{"text": s, "ids": reference.encode_ordinary(s)} for s in TEST_STRINGS]
    non_speech = non_speech_tokens(reference)
    (OUT / "vocab-tests.json").write_text(json.dumps(
        {"source": "tiktoken " + tiktoken.__version__ + " on whisper/assets/multilingual.tiktoken",
         "vectors": vectors, "non_speech_tokens": non_speech}, ensure_ascii=False, indent=1) + "\n")
    mismatched = [v["text"] for v in vectors if tokenizer.encode(v["text"], add_special_tokens=False).ids != v["ids"]]
    print(f"wrote {OUT}: {tokenizer.get_vocab_size()} ids, {len(merges)} merges, "
          f"{len(vectors) - len(mismatched)}/{len(vectors)} vectors match tiktoken", file=sys.stderr)
    if mismatched:
        raise SystemExit(f"differs from tiktoken on: {mismatched}")
    write_configs(specials, non_speech)


# The published sizes of the two checkpoints the fixtures imitate (whisper/__init__.py's
# ModelDimensions of tiny and base: audio/text state, heads, layers)
SIZES = {"whisper-tiny": (384, 6, 4), "whisper-base": (512, 8, 6)}


def write_configs(specials: list[str], non_speech: list[int]) -> None:
    """config.json and generation_config.json as Hugging Face's openai/whisper-* snapshots lay
    them out; `suppress_tokens` is whisper's non-speech list plus the task and
    start-of-something tokens, as its decoder suppresses them."""
    ids = {token: 50257 + i for i, token in enumerate(specials)}
    suppress = non_speech + [ids[t] for t in ("<|startoftranscript|>", "<|translate|>", "<|transcribe|>",
                                              "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>")]
    configs = OUT.parent / "configs"
    for name, (width, heads, layers) in SIZES.items():
        config = {
            "_name_or_path": f"openai/{name}", "activation_dropout": 0.0, "activation_function": "gelu",
            "architectures": ["WhisperForConditionalGeneration"], "attention_dropout": 0.0,
            "begin_suppress_tokens": [220, 50257], "bos_token_id": 50257, "d_model": width,
            "decoder_attention_heads": heads, "decoder_ffn_dim": 4 * width, "decoder_layerdrop": 0.0,
            "decoder_layers": layers, "decoder_start_token_id": 50258, "dropout": 0.0,
            "encoder_attention_heads": heads, "encoder_ffn_dim": 4 * width, "encoder_layerdrop": 0.0,
            "encoder_layers": layers, "eos_token_id": 50257, "init_std": 0.02, "is_encoder_decoder": True,
            "max_length": 448, "max_source_positions": 1500, "max_target_positions": 448, "model_type": "whisper",
            "num_hidden_layers": layers, "num_mel_bins": 80, "pad_token_id": 50257, "scale_embedding": False,
            "suppress_tokens": suppress, "torch_dtype": "float32", "use_cache": True, "vocab_size": 51865,
        }
        (configs / f"{name}.config.json").write_text(json.dumps(config, indent=2) + "\n")
    languages = specials[2:NUM_LANGUAGES + 2]
    generation = {
        "begin_suppress_tokens": [220, 50257], "bos_token_id": 50257, "decoder_start_token_id": 50258,
        "eos_token_id": 50257, "is_multilingual": True, "lang_to_id": {t: ids[t] for t in languages},
        "max_initial_timestamp_index": 50, "max_length": 448, "no_timestamps_token_id": ids["<|notimestamps|>"],
        "pad_token_id": 50257, "prev_sot_token_id": ids["<|startofprev|>"], "return_timestamps": False,
        "suppress_tokens": suppress, "task_to_id": {"transcribe": ids["<|transcribe|>"],
                                                    "translate": ids["<|translate|>"]},
    }
    (configs / "whisper.generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    preprocessor = {
        "chunk_length": 30, "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 80,
        "hop_length": 160, "n_fft": 400, "n_samples": 480000, "nb_max_frames": 3000, "padding_side": "right",
        "padding_value": 0.0, "processor_class": "WhisperProcessor", "return_attention_mask": False,
        "sampling_rate": 16000,
    }
    (configs / "whisper.preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")


def non_speech_tokens(encoding) -> list[int]:
    """whisper/tokenizer.py's list of tokens a transcript should not start symbols with (the
    checkpoints' `suppress_tokens`), recomputed from the same rule."""
    symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
    symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
    miscellaneous = set("♩♪♫♬♭♮♯")
    result = {encoding.encode(" -")[0], encoding.encode(" '")[0]}
    for symbol in symbols + sorted(miscellaneous):
        for tokens in (encoding.encode(symbol), encoding.encode(" " + symbol)):
            if len(tokens) == 1 or symbol in miscellaneous:
                result.add(tokens[0])
    return sorted(result)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
