"""The book's sliding-window data: GPTDatasetV1 and create_dataloader_v1.

A text becomes one long list of token ids; each training example is a window of
``max_length`` ids (the input) and the same window shifted one to the right (the target).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset


def window_starts(n_tokens: int, max_length: int, stride: int) -> range:
    """Where each input window starts: ``range(0, n_tokens - max_length, stride)``.

    The end is exclusive so the last window still has its one-token-later target.
    """
    if max_length < 1 or stride < 1:
        raise ValueError(f"max_length and stride must be at least 1 (got {max_length}, {stride})")
    return range(0, max(n_tokens - max_length, 0), stride)


def num_windows(n_tokens: int, max_length: int, stride: int) -> int:
    return len(window_starts(n_tokens, max_length, stride))


def num_batches(n_tokens: int, max_length: int, stride: int, batch_size: int, drop_last: bool = True) -> int:
    n = num_windows(n_tokens, max_length, stride)
    return n // batch_size if drop_last else -(-n // batch_size)


class GPTDatasetV1(Dataset):
    """Input/target windows over a tokenized text (the book's chapter 2 dataset)."""

    def __init__(self, txt: str, tokenizer, max_length: int, stride: int, token_ids: list[int] | None = None):
        ids = token_ids if token_ids is not None else tokenizer.encode(txt, allow_special=True)
        self.token_ids = torch.as_tensor(ids, dtype=torch.long)
        self.starts = window_starts(len(ids), max_length, stride)
        self.max_length = max_length
        self.stride = stride

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = self.starts[idx]
        return (self.token_ids[i:i + self.max_length],
                self.token_ids[i + 1:i + self.max_length + 1])


def create_dataloader_v1(txt: str, batch_size: int = 4, max_length: int = 256, stride: int = 128,
                         shuffle: bool = True, drop_last: bool = True, num_workers: int = 0,
                         tokenizer=None, seed: int | None = None, token_ids: list[int] | None = None,
                         pin_memory: bool = False) -> DataLoader:
    """The book's loader. ``tokenizer`` defaults to GPT-2's.

    With ``seed=None`` (the book's call) a shuffled loader draws from the global random generator,
    so ``torch.manual_seed(123)`` beforehand gives the book's batch order. A ``seed`` fixes the
    order through a private ``torch.Generator`` instead and leaves the global generator alone (the
    app's own runs: users share one process). ``token_ids`` skips encoding when the caller already
    has the ids of ``txt``. ``pin_memory`` (for batches bound for a CUDA GPU, see
    ``device.pin_host_memory``) makes each batch in page-locked memory."""
    if tokenizer is None and token_ids is None:
        from .tokenizers import gpt2_tokenizer
        tokenizer = gpt2_tokenizer()
    dataset = GPTDatasetV1(txt, tokenizer, max_length, stride, token_ids=token_ids)
    shuffle = shuffle and len(dataset) > 0  # torch refuses to shuffle nothing
    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers, generator=generator, pin_memory=pin_memory)
