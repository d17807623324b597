"""Model configuration: the book's GPT_CONFIG_124M and its relatives."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = False
    tie_weights: bool = False  # share tok_emb and out_head (GPT-2 does; the book's GPTModel does not)

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise ValueError("Invalid model config: " + "; ".join(problems))

    def problems(self) -> list[str]:
        out = []
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            if int(getattr(self, name)) < 1:
                out.append(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.n_heads >= 1 and self.emb_dim % self.n_heads:
            out.append(f"emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads})")
        if not 0.0 <= self.drop_rate < 1.0:
            out.append(f"drop_rate must be in [0, 1) (got {self.drop_rate})")
        return out

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def with_(self, **changes) -> "GPTConfig":
        return replace(self, **changes)


# The four GPT-2 sizes (OpenAI's weights use qkv_bias=True and tied embeddings).
PRESETS: dict[str, GPTConfig] = {
    "gpt2-small": GPTConfig(emb_dim=768, n_layers=12, n_heads=12),
    "gpt2-medium": GPTConfig(emb_dim=1024, n_layers=24, n_heads=16),
    "gpt2-large": GPTConfig(emb_dim=1280, n_layers=36, n_heads=20),
    "gpt2-xl": GPTConfig(emb_dim=1600, n_layers=48, n_heads=25),
    # Small configs (GPT-2 vocabulary) that run and train on a laptop CPU.
    "tiny": GPTConfig(context_length=128, emb_dim=128, n_layers=2, n_heads=4, drop_rate=0.0),
    "mini": GPTConfig(context_length=256, emb_dim=256, n_layers=4, n_heads=4, drop_rate=0.0),
}
PRESET_LABELS = {
    "gpt2-small": "GPT-2 small (124M): 768 dims, 12 layers, 12 heads",
    "gpt2-medium": "GPT-2 medium (355M): 1024 dims, 24 layers, 16 heads",
    "gpt2-large": "GPT-2 large (774M): 1280 dims, 36 layers, 20 heads",
    "gpt2-xl": "GPT-2 XL (1558M): 1600 dims, 48 layers, 25 heads",
    "tiny": "tiny: 128 dims, 2 layers, 4 heads, context 128",
    "mini": "mini: 256 dims, 4 layers, 4 heads, context 256",
}

GPT_CONFIG_124M = PRESETS["gpt2-small"]
