"""Stage 2 · Data sampling: what the book's GPTDatasetV1 and create_dataloader_v1 make of a text.

``compute`` runs the dataset and the dataloader and returns one ``Sampling`` holding everything
the tab draws (windows, the shown batch and its window indices, coverage, warnings).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data import create_dataloader_v1
from .token_text import ids_text, token_label


@dataclass
class Sampling:
    """What GPTDatasetV1 and create_dataloader_v1 produced, plus what to tell the learner."""

    text_chars: int
    origin: str
    tokenizer: object
    token_ids: torch.Tensor
    starts: range
    dataset: object
    max_length: int
    stride: int
    batch_size: int
    shuffle: bool
    seed: int
    drop_last: bool
    num_batches: int
    window: int | None
    batch_index: int | None
    batch: tuple[torch.Tensor, torch.Tensor] | None
    batch_windows: list[int]
    context_length: int | None
    model_name: str | None
    as_input: np.ndarray       # per token: how many input windows contain it
    as_target: np.ndarray      # per token: how many target windows contain it
    warnings: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    def label(self, token_id: int) -> str:
        """One token as the tab shows it (``token_text.token_label``)."""
        return token_label(self.tokenizer, token_id)

    def text_of(self, ids) -> str:
        """Several tokens' text joined, whitespace marked (``token_text.ids_text``)."""
        return ids_text(self.tokenizer, ids)

    @property
    def num_windows(self) -> int:
        return len(self.dataset)


def coverage(n_tokens: int, starts: range, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """How many of the dataset's input windows / target windows contain each token."""
    s = np.asarray(starts, dtype=np.int64)
    as_input = np.zeros(n_tokens + 2, dtype=np.int64)
    np.add.at(as_input, s, 1)
    np.add.at(as_input, np.minimum(s + max_length, n_tokens + 1), -1)
    as_target = np.zeros(n_tokens + 2, dtype=np.int64)
    np.add.at(as_target, np.minimum(s + 1, n_tokens + 1), 1)
    np.add.at(as_target, np.minimum(s + 1 + max_length, n_tokens + 1), -1)
    return np.cumsum(as_input)[:n_tokens], np.cumsum(as_target)[:n_tokens]


def compute(text: str, origin: str, tokenizer, max_length: int, stride: int, batch_size: int,
            shuffle: bool, seed: int, drop_last: bool, window: int, batch_index: int,
            context_length: int | None = None, model_name: str | None = None,
            model_vocab: int | None = None) -> Sampling:
    loader = create_dataloader_v1(text, batch_size=batch_size, max_length=max_length, stride=stride,
                                  shuffle=shuffle, drop_last=drop_last, num_workers=0,
                                  tokenizer=tokenizer, seed=seed)
    dataset = loader.dataset
    n_tokens, n_windows = len(dataset.token_ids), len(dataset)
    warnings, notices = [], []

    if n_windows == 0:
        warnings.append(
            f"The text is too short for max_length {max_length}: it has {n_tokens:,} tokens, and a window "
            f"needs max_length + 1 = {max_length + 1:,} (the inputs plus the one-token-later target). "
            f"Lower max_length to at most {max(n_tokens - 1, 1):,} or use a longer text.")
    if context_length is not None and max_length > context_length:
        warnings.append(
            f"max_length {max_length:,} is larger than the active model's context ({context_length:,} positions): "
            f"{model_name} could not take these windows (it has no position embedding past "
            f"{context_length - 1:,}). Use max_length ≤ {context_length:,} to train it.")
    if model_vocab is not None and n_tokens and int(dataset.token_ids.max()) >= model_vocab:
        notices.append(
            f"These ids go up to {int(dataset.token_ids.max()):,}, but {model_name} has only {model_vocab:,} "
            "tokens in its vocabulary: choose “the active model's tokenizer” to make windows it can train on.")
    if tokenizer.eot_id is not None and bool((dataset.token_ids == tokenizer.eot_id).any()):
        notices.append(f"The text contains <|endoftext|>: it is encoded as the special token "
                       f"{tokenizer.eot_id} (the book's GPTDatasetV1 allows it), marking a document boundary.")

    n_batches = len(loader)
    batch = None
    batch_windows: list[int] = []
    shown_batch = None
    if n_windows and n_batches == 0:
        warnings.append(
            f"drop_last drops every window: there are {n_windows:,} windows, fewer than batch_size "
            f"{batch_size}, so no full batch exists. Lower batch_size or untick drop_last.")
    elif n_batches:
        shown_batch = min(batch_index, n_batches - 1)
        if shown_batch != batch_index:
            notices.append(f"There is no batch {batch_index} (the loader has {n_batches:,}): showing batch {shown_batch}.")
        batch = next(itertools.islice(iter(loader), shown_batch, None))
        # The same loader over token positions instead of ids draws the same shuffle (same
        # seed, same number of windows), so its first column says where each row starts.
        positions = create_dataloader_v1("", batch_size=batch_size, max_length=max_length, stride=stride,
                                         shuffle=shuffle, drop_last=drop_last, num_workers=0, seed=seed,
                                         token_ids=list(range(n_tokens)))
        pos_batch = next(itertools.islice(iter(positions), shown_batch, None))[0]
        batch_windows = [dataset.starts.index(int(p)) for p in pos_batch[:, 0]]

    shown_window = None
    if n_windows:
        shown_window = min(window, n_windows - 1)
        if shown_window != window:
            notices.append(f"There is no window {window} (there are {n_windows:,}, numbered from 0): "
                           f"showing window {shown_window}.")

    as_input, as_target = coverage(n_tokens, dataset.starts, max_length)
    return Sampling(text_chars=len(text), origin=origin, tokenizer=tokenizer, token_ids=dataset.token_ids,
                    starts=dataset.starts, dataset=dataset, max_length=max_length, stride=stride,
                    batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                    num_batches=n_batches, window=shown_window, batch_index=shown_batch, batch=batch,
                    batch_windows=batch_windows, context_length=context_length, model_name=model_name,
                    as_input=as_input, as_target=as_target, warnings=warnings, notices=notices)
