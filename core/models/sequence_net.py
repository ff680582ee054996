"""The sequence network: event embeddings, a transformer or GRU encoder, and three heads.

- **Encoder** ``seq``: a BERT-style transformer built from a ``transformers.BertConfig`` (no
  download: the weights start random); ``gru``: a one-direction GRU. Both read the start token
  plus the user's events; the transformer's output at the start token, or the GRU's state after
  the last event, is the history's summary.
- **Static tower**: a small MLP over the standardised behavioural features (attributes included).
- **Heads** on [summary, static]: the churn logit; the zero-inflated lognormal (ZILN, Wang, Liu
  & Miao 2019) with the logit of P(any spend), the lognormal's mu and its scale sigma; W weekly
  hazard logits for the survival curve.

Losses (docs/METRICS.md, "Sequence models"): binary cross-entropy for churn; the ZILN negative
log likelihood (``ziln_loss``); the discrete-time survival likelihood (``hazard_loss``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

WEEKDAYS = 7
HOURS = 24
MAX_LOG_VALUE = math.log(1e7)  # caps exp() of the lognormal mean: no overflow in float32 or bf16


@dataclass(frozen=True)
class NetConfig:
    """Sizes of the network; saved in model.json so that a model loads with its own shape."""

    encoder: str
    event_slots: int
    item_slots: int
    numeric_features: int
    static_features: int
    weeks: int
    max_events: int
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetConfig:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


class EventEmbedding(nn.Module):
    """Sum of the event name, item, weekday, hour and numeric embeddings; a learned start token."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.events = nn.Embedding(config.event_slots, config.hidden, padding_idx=0)
        self.items = nn.Embedding(config.item_slots, config.hidden, padding_idx=0)
        self.weekday = nn.Embedding(WEEKDAYS, config.hidden)
        self.hour = nn.Embedding(HOURS, config.hidden)
        self.numeric = nn.Linear(config.numeric_features, config.hidden)
        self.start = nn.Parameter(torch.zeros(config.hidden))
        self.norm = nn.LayerNorm(config.hidden)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        embedded = (
            self.events(batch["events"])
            + self.items(batch["items"])
            + self.weekday(batch["weekday"])
            + self.hour(batch["hour"])
            + self.numeric(batch["numeric"])
        )
        mask = batch["mask"].unsqueeze(-1).to(embedded.dtype)
        embedded = embedded * mask
        embedded[:, 0] = self.start
        return self.norm(embedded)


class TransformerEncoder(nn.Module):
    """A BERT encoder over embeddings (``inputs_embeds``); the start token's output summarises."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        bert_config = BertConfig(
            vocab_size=1,
            hidden_size=config.hidden,
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            intermediate_size=2 * config.hidden,
            # Dropout inside the encoder costs a third of a CPU step (random masks over every token
            # and attention weight); early stopping and the dropout of the trunk regularise instead.
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            max_position_embeddings=config.max_events + 1,
            type_vocab_size=1,
        )
        self.bert = BertModel(bert_config, add_pooling_layer=False)

    def forward(self, embedded: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        output = self.bert(inputs_embeds=embedded, attention_mask=mask.long())
        return output.last_hidden_state[:, 0]


class GRUEncoder(nn.Module):
    """A GRU over the start token and the events, oldest first; its state after the last event."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.gru = nn.GRU(config.hidden, config.hidden, num_layers=1, batch_first=True)

    def forward(self, embedded: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(
            embedded, (lengths + 1).cpu(), batch_first=True, enforce_sorted=False
        )
        _, state = self.gru(packed)
        return state[-1]


class SequenceNet(nn.Module):
    """Embeddings -> encoder; static MLP; churn, ZILN and hazard heads (module docstring)."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = EventEmbedding(config)
        self.encoder: nn.Module = (
            TransformerEncoder(config) if config.encoder == "seq" else GRUEncoder(config)
        )
        self.static = nn.Sequential(
            nn.Linear(config.static_features, config.hidden), nn.GELU(), nn.Dropout(config.dropout)
        )
        self.trunk = nn.Sequential(
            nn.Linear(2 * config.hidden, config.hidden), nn.GELU(), nn.Dropout(config.dropout)
        )
        self.churn_head = nn.Linear(config.hidden, 1)
        self.ziln_head = nn.Linear(config.hidden, 3)
        self.hazard_head = nn.Linear(config.hidden, config.weeks)

    def summary(self, batch: dict[str, torch.Tensor], embedded: torch.Tensor | None = None) -> torch.Tensor:
        """The trunk's output; ``embedded`` replaces the event embeddings (for attributions)."""
        if embedded is None:
            embedded = self.embedding(batch)
        history = self.encoder(embedded, batch["mask"], batch["lengths"])
        return self.trunk(torch.cat([history, self.static(batch["static"])], dim=-1))

    def forward(
        self, batch: dict[str, torch.Tensor], embedded: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        hidden = self.summary(batch, embedded)
        ziln = self.ziln_head(hidden)
        return {
            "churn_logit": self.churn_head(hidden).squeeze(-1),
            "spend_logit": ziln[:, 0],
            "mu": ziln[:, 1],
            "sigma": F.softplus(ziln[:, 2]) + 1e-3,
            "hazard_logits": self.hazard_head(hidden),
        }


def ziln_loss(
    spend_logit: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, value: torch.Tensor
) -> torch.Tensor:
    """Mean ZILN negative log likelihood of ``value`` >= 0.

    Per user: BCE(1[value > 0], spend_logit) plus, when value > 0, the lognormal's negative log
    density log(value) + log(sigma) + log(2 pi) / 2 + (log(value) - mu)^2 / (2 sigma^2).
    """
    positive = (value > 0).to(mu.dtype)
    classification = F.binary_cross_entropy_with_logits(spend_logit, positive, reduction="none")
    safe = torch.where(value > 0, value, torch.ones_like(value))
    log_value = torch.log(safe)
    regression = (
        log_value + torch.log(sigma) + 0.5 * math.log(2 * math.pi) + (log_value - mu) ** 2 / (2 * sigma**2)
    )
    return (classification + positive * regression).mean()


def ziln_expected_value(spend_logit: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[value] = P(spend) * exp(mu + sigma^2 / 2), the exponent capped at log(1e7)."""
    return torch.sigmoid(spend_logit) * torch.exp(torch.clamp(mu + sigma**2 / 2, max=MAX_LOG_VALUE))


def hazard_loss(hazard_logits: torch.Tensor, weeks_active: torch.Tensor) -> torch.Tensor:
    """Mean discrete-time survival negative log likelihood.

    With k = weeks_active and W weeks: the user survived weeks 0..k-1 (log(1 - h_w) each) and
    stopped at week k (log h_k) when k < W; k = W survived every week (censored at the horizon).
    """
    weeks = hazard_logits.shape[-1]
    index = torch.arange(weeks, device=hazard_logits.device).unsqueeze(0)
    k = weeks_active.unsqueeze(-1)
    survived = (index < k).to(hazard_logits.dtype)
    stopped = (index == k).to(hazard_logits.dtype)
    log_survive = F.logsigmoid(-hazard_logits)
    log_stop = F.logsigmoid(hazard_logits)
    return -(survived * log_survive + stopped * log_stop).sum(-1).mean()


def survival_curve(hazard_logits: torch.Tensor) -> torch.Tensor:
    """S(w) = prod_{k <= w} (1 - h_k) = P(weeks_active > w): an activity event in [T + 7w days, T + H)."""
    return torch.cumprod(torch.sigmoid(-hazard_logits), dim=-1)
