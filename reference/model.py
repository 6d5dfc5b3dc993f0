"""The modified Trompt exactly as the original slow script computes it: the numerical oracle.

Deliberately slow. It repeats parameters over the batch and materialises the expansion as a
(B, P, C, D) tensor (≈ 64 MB per sample and cell in float32), as the original does. Never optimise
this file: every fast backend is judged against it. Shapes: B batch, C columns, P prompts,
D d_model, N cycles (= cells).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from backends.spec import LN_EPS, TromptConfig


class TromptCell(nn.Module):
    def __init__(self, cfg: TromptConfig) -> None:
        super().__init__()
        C, P, D = cfg.n_columns, cfg.n_prompts, cfg.d_model
        # Registration order = the original's parameter order (matters for optimizer state).
        self.feature_emb_weight = nn.Parameter(torch.empty(C, D))
        self.feature_emb_bias = nn.Parameter(torch.empty(C, D))
        self.emb_column = nn.Parameter(torch.empty(C, D))
        self.emb_prompt = nn.Parameter(torch.empty(P, D))
        self.ln_emb = nn.LayerNorm(D, eps=LN_EPS)
        self.ln_col = nn.LayerNorm(D, eps=LN_EPS)
        self.ln_prompt = nn.LayerNorm(D, eps=LN_EPS)
        self.dense_imp = nn.Linear(2 * D, D)
        self.dense_expand = nn.Linear(1, P)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        # Feature embedding: every scalar x[b, c] becomes a D-vector.
        h = F.relu(x.unsqueeze(-1) * self.feature_emb_weight + self.feature_emb_bias)  # (B, C, D)
        emb = self.ln_emb(h)  # (B, C, D)

        # Importance getter. The parameters are repeated over the batch, as in the original,
        # although every row is the same function of the parameters only.
        emb_prompt = self.emb_prompt.unsqueeze(0).repeat(B, 1, 1)  # (B, P, D)
        emb_column = self.emb_column.unsqueeze(0).repeat(B, 1, 1)  # (B, C, D)
        fused = torch.cat([self.ln_prompt(emb_prompt), prompt], dim=-1)  # (B, P, 2D)
        query = self.dense_imp(fused) + emb_prompt  # (B, P, D); residual is the raw emb_prompt
        key = self.ln_col(emb_column)  # (B, C, D)
        mask = torch.softmax(query @ key.transpose(1, 2), dim=-1)  # (B, P, C)

        # Expansion: each scalar emb[b, c, d] becomes P values w_p * e + b_p, plus the residual.
        expanded = self.dense_expand(emb.unsqueeze(-1))  # (B, C, D, P)
        expanded = expanded.permute(0, 3, 1, 2) + emb.unsqueeze(1)  # (B, P, C, D)

        # Prompt-wise pooling over the columns.
        return (mask.unsqueeze(-1) * expanded).sum(dim=2)  # (B, P, D)


class TromptDownstream(nn.Module):
    def __init__(self, cfg: TromptConfig) -> None:
        super().__init__()
        D = cfg.d_model
        self.dense0 = nn.Linear(D, 1)
        self.dense1 = nn.Linear(D, D)
        self.ln = nn.LayerNorm(D, eps=LN_EPS)
        self.dense_out = nn.Linear(D, 1)

    def forward(self, cell_out: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.dense0(cell_out), dim=1)  # (B, P, 1)
        pooled = (weights * cell_out).sum(dim=1)  # (B, D)
        hidden = self.ln(F.relu(self.dense1(pooled)))  # (B, D)
        return self.dense_out(hidden)  # (B, 1)


class Trompt(nn.Module):
    def __init__(self, cfg: TromptConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.prompt = nn.Parameter(torch.empty(cfg.n_prompts, cfg.d_model))
        self.tcells = nn.ModuleList(TromptCell(cfg) for _ in range(cfg.n_cycles))
        self.tdown = TromptDownstream(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        prompt = self.prompt.unsqueeze(0).repeat(B, 1, 1)  # (B, P, D)
        outputs = []
        for cell in self.tcells:
            # Every cell gets the model-level prompt, not the previous cell's output: this is
            # the "modification" that makes the cells independent (docs/SPEC.md §4, F1).
            cell_out = cell(x, prompt)  # (B, P, D)
            outputs.append(self.tdown(cell_out))  # (B, 1)
        return torch.stack(outputs, dim=1).squeeze(-1)  # (B, N)


def mse_over_cycles(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training loss: the same standardised target for every cycle, mean over B * N."""
    return F.mse_loss(pred, y.unsqueeze(1).expand_as(pred))
