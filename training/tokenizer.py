"""Train the byte-level BPE tokenizer of sluice-tiny on the rendered TRAIN conversations.

    python training/tokenizer.py     # after sales_db.py and data.py

Writes models/sluice-tiny/tokenizer.json and tokenizer_config.json (HF style, with the
chat template of common.py). Vocabulary at most 2048 (the synthetic text runs out of
merges at about 1,500); the special tokens of common.SPECIAL_TOKENS
get ids 0..4; digits are split into single tokens before the byte-level split so that
numbers are copied digit by digit; no BOS/EOS is added by a post-processor.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    CHAT_TEMPLATE, CONTEXT_LENGTH, EOS, IM_END, MODEL_DIR, SPECIAL_TOKENS, WORK_DIR, render,
)

VOCAB_SIZE = 2048
_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


def load_conversations(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def new_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train(conversations: list[dict]) -> Tokenizer:
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )

    def texts():
        # The special tokens are cut out so that they never take part in merges.
        for c in conversations:
            for piece in _SPECIAL_RE.split(render(c["messages"], c["tools"])):
                if piece:
                    yield piece

    tok.train_from_iterator(texts(), trainer=trainer)
    return tok


def tokenizer_config() -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": EOS,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": CONTEXT_LENGTH,
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True}
            for i, t in enumerate(SPECIAL_TOKENS)
        },
        "additional_special_tokens": SPECIAL_TOKENS[1:2] + SPECIAL_TOKENS[3:],
    }


def verify(tok: Tokenizer, conversations: list[dict]) -> None:
    # The synthetic corpus may saturate before VOCAB_SIZE (every word already one token);
    # the vocabulary is then smaller, never larger.
    assert len(SPECIAL_TOKENS) + 256 <= tok.get_vocab_size() <= VOCAB_SIZE, tok.get_vocab_size()
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
        assert tok.encode(t, add_special_tokens=False).ids == [i], t
        assert tok.decode([i], skip_special_tokens=False) == t, t
    # special tokens glued to text still split out exactly
    s = "".join(SPECIAL_TOKENS) + "a" + IM_END + "1" + SPECIAL_TOKENS[3] + "{}" + SPECIAL_TOKENS[4]
    assert tok.decode(tok.encode(s, add_special_tokens=False).ids, skip_special_tokens=False) == s
    # no BOS/EOS added by a post-processor
    assert tok.encode("hi").ids == tok.encode("hi", add_special_tokens=False).ids
    # digits are single tokens, also inside numbers and after spaces
    for d in "0123456789":
        assert len(tok.encode(d, add_special_tokens=False).ids) == 1, d
    enc = tok.encode("x = 1234567.89", add_special_tokens=False)
    digit_tokens = [t for t in enc.tokens if any(ch.isdigit() for ch in t)]
    assert all(len(t) == 1 for t in digit_tokens), enc.tokens
    # rendered conversations round-trip exactly
    for c in conversations:
        text = render(c["messages"], c["tools"])
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == text
    for text in ["héllo wörld ✓ 日本", "  two  spaces\n\n\ttab", "Ünïcödé €100"]:
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False) == text


def main() -> None:
    train_path = WORK_DIR / "train.jsonl"
    if not train_path.exists():
        sys.exit(f"{train_path} is missing: run training/data.py first")
    convs = load_conversations(train_path)
    tok = train(convs)
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    tok.save(str(MODEL_DIR / "tokenizer.json"))
    with open(MODEL_DIR / "tokenizer_config.json", "w") as f:
        json.dump(tokenizer_config(), f, indent=2, ensure_ascii=False)
        f.write("\n")
    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    eval_convs = load_conversations(WORK_DIR / "eval.jsonl") if (WORK_DIR / "eval.jsonl").exists() else []
    verify(tok, convs[:3000] + eval_convs)
    # build_examples' piecewise tokenization must agree with the whole text
    from data import build_examples
    build_examples(tok, convs[:3000] + eval_convs)
    lens = [len(tok.encode(render(c["messages"], c["tools"]), add_special_tokens=False).ids) for c in convs]
    print(f"wrote {MODEL_DIR / 'tokenizer.json'} (vocab {tok.get_vocab_size()}); verified; "
          f"train conversations: mean {sum(lens) / len(lens):.1f} tokens, max {max(lens)}")


if __name__ == "__main__":
    main()
