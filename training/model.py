"""sluice-tiny: a GPT-style decoder (pre-norm RMSNorm, rotary position embeddings,
SwiGLU MLP, untied LM head) whose forward pass has the interface of Optimum's
Llama/Qwen ONNX exports:

    inputs : input_ids [b, s], attention_mask [b, past + s], position_ids [b, s],
             past_key_values.{i}.key / .value [b, heads, past, head_dim]
    outputs: logits [b, s, vocab], present.{i}.key / .value [b, heads, past + s, head_dim]
             (export.py writes new_key_values.{i}.* [b, heads, s, head_dim] instead)

so the same forward serves training (past = 0), KV-cached decoding and the export.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    vocab_size: int = 2048
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 256
    d_ff: int = 704
    context_length: int = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.n_head = cfg.n_head
        self.head_dim = cfg.head_dim
        self.q = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.k = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.v = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.o = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x, cos, sin, bias, past_k, past_v, new_only=False):
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, s, self.n_head, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, s, self.n_head, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if new_only:
            # The same attention without materialising cat(past, new): the scores over
            # past and new keys are joined (small), and the past is only read. Returns
            # the new keys/values alone, so an engine can keep the cache in place.
            scores = torch.cat(
                [torch.matmul(q, past_k.transpose(2, 3)), torch.matmul(q, k.transpose(2, 3))], dim=-1
            ) / math.sqrt(self.head_dim) + bias
            attn = torch.softmax(scores, dim=-1)
            p = past_k.shape[2]
            out = torch.matmul(attn[..., :p], past_v) + torch.matmul(attn[..., p:], v)
            out = out.transpose(1, 2).reshape(b, s, self.n_head * self.head_dim)
            return self.o(out), k, v
        k = torch.cat([past_k, k], dim=2)
        v = torch.cat([past_v, v], dim=2)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim) + bias
        attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, s, self.n_head * self.head_dim)
        return self.o(out), k, v


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, bias, past_k, past_v, new_only=False):
        h, k, v = self.attn(self.attn_norm(x), cos, sin, bias, past_k, past_v, new_only)
        x = x + h
        x = x + self.mlp(self.mlp_norm(x))
        return x, k, v


class TinyGPT(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        # Untied, so the LM head is a plain MatMul with its own weight: quantizable.
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def empty_past(self, batch: int):
        shape = (batch, self.cfg.n_head, 0, self.cfg.head_dim)
        return [(torch.zeros(shape), torch.zeros(shape)) for _ in range(self.cfg.n_layer)]

    def forward(self, input_ids, attention_mask, position_ids, past, new_only=False):
        """`past` is a list of (key, value) per layer; returns logits and the presents
        (past + new keys/values, or with `new_only` just the new ones)."""
        seq = input_ids.shape[1]
        total = attention_mask.shape[1]
        past_len = total - seq
        x = self.embed(input_ids)
        freqs = position_ids.unsqueeze(-1).to(torch.float32) * self.inv_freq
        emb = torch.cat([freqs, freqs], dim=-1).unsqueeze(1)  # [b, 1, s, hd]
        cos, sin = emb.cos(), emb.sin()
        # Query i (absolute position past_len + i) sees key j when j <= past_len + i and
        # key j is not padding. A large negative (not -inf) keeps fully masked rows finite.
        q_idx = torch.arange(seq, device=input_ids.device).unsqueeze(1) + past_len
        k_idx = torch.arange(total, device=input_ids.device).unsqueeze(0)
        causal = (k_idx <= q_idx).unsqueeze(0).unsqueeze(0)
        keep = causal & attention_mask.unsqueeze(1).unsqueeze(2).bool()
        bias = torch.where(keep, 0.0, torch.finfo(torch.float32).min)
        presents = []
        for block, (pk, pv) in zip(self.blocks, past):
            x, k, v = block(x, cos, sin, bias, pk, pv, new_only)
            presents.append((k, v))
        return self.lm_head(self.norm(x)), presents


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
