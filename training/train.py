"""Train sluice-tiny on the synthetic conversations (training/work/train.jsonl).

Loss is taken only on assistant turns (their text or tool call and the closing
<|im_end|>). Batches are length-bucketed and right-padded; the step count is fixed so a
run is reproducible (seeded data order and initialisation; PyTorch CPU kernels are
deterministic for this model on a given machine). Writes training/work/model.pt and
training/work/loss.csv.

    python training/train.py [--steps N]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODEL_DIR, SEED, WORK_DIR  # noqa: E402
from data import build_examples  # noqa: E402
from model import Config, TinyGPT, count_parameters  # noqa: E402
from tokenizer import load_conversations  # noqa: E402

PAD_ID = 0


def batches(examples, tokens_per_batch: int, rng: random.Random):
    """Length-bucketed batches of (ids, loss_mask), shuffled."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    out, cur, cur_max = [], [], 0
    for i in order:
        n = len(examples[i][0])
        if cur and max(cur_max, n) * (len(cur) + 1) > tokens_per_batch:
            out.append(cur)
            cur, cur_max = [], 0
        cur.append(i)
        cur_max = max(cur_max, n)
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


def collate(examples, idx):
    width = max(len(examples[i][0]) for i in idx)
    ids = torch.full((len(idx), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    loss_mask = torch.zeros((len(idx), width), dtype=torch.float32)
    for row, i in enumerate(idx):
        toks, lm = examples[i]
        ids[row, : len(toks)] = torch.tensor(toks)
        mask[row, : len(toks)] = 1
        loss_mask[row, : len(toks)] = torch.tensor(lm, dtype=torch.float32)
    return ids, mask, loss_mask


def loss_of(model, ids, mask, loss_mask):
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits, _ = model(ids, mask, pos, model.empty_past(ids.shape[0]))
    target = ids[:, 1:]
    weight = loss_mask[:, 1:]
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    return (ce * weight.reshape(-1)).sum() / weight.sum().clamp(min=1.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2800)
    ap.add_argument("--tokens-per-batch", type=int, default=5120)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.manual_seed(SEED)
    random.seed(SEED)
    torch.set_num_threads(args.threads)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    cfg = Config(vocab_size=tok.get_vocab_size())
    train = build_examples(tok, load_conversations(WORK_DIR / "train.jsonl"))
    held = build_examples(tok, load_conversations(WORK_DIR / "eval.jsonl"))
    train = [e for e in train if len(e[0]) <= cfg.context_length]
    n_tokens = sum(len(e[0]) for e in train)
    model = TinyGPT(cfg)
    print(f"{count_parameters(model):,} parameters; {len(train)} conversations, {n_tokens:,} tokens", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    warmup = 50

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    rng = random.Random(SEED)
    plan = []
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    log = (WORK_DIR / "loss.csv").open("w", newline="")
    writer = csv.writer(log)
    writer.writerow(["step", "seconds", "train_loss", "lr"])
    started = time.time()
    model.train()
    running = 0.0
    for step in range(args.steps):
        if not plan:
            plan = batches(train, args.tokens_per_batch, rng)
        ids, mask, lm = collate(train, plan.pop())
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = loss_of(model, ids, mask, lm)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if step == 0 else 0.9 * running + 0.1 * loss.item()
        if step % 20 == 0 or step == args.steps - 1:
            elapsed = time.time() - started
            writer.writerow([step, f"{elapsed:.1f}", f"{running:.4f}", f"{lr_at(step):.6f}"])
            log.flush()
            print(f"step {step:5d}  loss {running:.4f}  {elapsed:6.0f}s", flush=True)
    log.close()

    model.eval()
    with torch.no_grad():
        total, count = 0.0, 0
        for idx in batches(held, args.tokens_per_batch, random.Random(0)):
            ids, mask, lm = collate(held, idx)
            total += loss_of(model, ids, mask, lm).item() * len(idx)
            count += len(idx)
    summary = {
        "steps": args.steps,
        "seconds": round(time.time() - started, 1),
        "parameters": count_parameters(model),
        "train_conversations": len(train),
        "train_tokens": n_tokens,
        "final_train_loss": round(running, 4),
        "held_out_loss": round(total / max(count, 1), 4),
    }
    print(json.dumps(summary), flush=True)
    (WORK_DIR / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    torch.save({"config": cfg.to_dict(), "state_dict": model.state_dict()}, WORK_DIR / "model.pt")


if __name__ == "__main__":
    main()
