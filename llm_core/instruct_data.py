"""Data for fine-tuning (chapter 7): the Alpaca prompt, the collate, and the data sets.

- ``format_input`` / ``format_response``: the book's instruction template, exactly.
- ``custom_collate_fn``: the book's padding and target masking (+ optional prompt masking).
- Built-in sets generated from this Python installation (no network, nothing copied):
  ``builtin_instructions()`` (questions answered from the documentation, string/list/number
  tasks whose answers the program computes, and greetings, how-tos and conversations answered
  in words written here) and ``builtin_classification()``
  (is a docstring a function's or a class's? The label is read from the source with ``ast``).
- The book's sets when online: the SMS Spam Collection and instruction-data.json,
  downloaded with a short timeout, checked, cached; offline they are "unavailable" with
  the reason.
- Uploads: CSV (text,label) for classification, JSON (instruction, input, output) for
  instructions, validated with messages that say what to fix.
"""
from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import os
import random
import re
import sys
import threading
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from torch.utils.data import Dataset

from .corpus import CACHE_DIR, CorpusError, load_text_upload, module_sections, public_module_files, stdlib_dir
from .files import write_atomic

# ---------------------------------------------------------------- the book's prompt (7.2)

PROMPT_INTRO = ("Below is an instruction that describes a task. "
                "Write a response that appropriately completes the request.")
RESPONSE_HEADER = "\n\n### Response:\n"


def format_input(entry: dict) -> str:
    """The Alpaca-style prompt: intro, instruction, and the input when there is one."""
    text = f"{PROMPT_INTRO}\n\n### Instruction:\n{entry['instruction']}"
    if entry.get("input"):
        text += f"\n\n### Input:\n{entry['input']}"
    return text


def format_response(entry: dict) -> str:
    return f"{RESPONSE_HEADER}{entry['output']}"


def extract_response(generated: str, prompt: str) -> str:
    """The part of a generated text after the prompt's response header, stripped."""
    text = generated[len(prompt):] if generated.startswith(prompt) else generated
    if text.startswith(RESPONSE_HEADER):
        text = text[len(RESPONSE_HEADER):]
    elif "### Response:" in text:
        text = text.split("### Response:", 1)[1]
    return text.replace("<|endoftext|>", "").strip()


# ---------------------------------------------------------------- collate

def custom_collate_fn(batch, pad_token_id: int = 50256, ignore_index: int = -100,
                      allowed_max_length: int | None = None, device="cpu",
                      prompt_lengths: list[int] | None = None):
    """The book's collate: add one end-of-text, pad to the longest, shift by one.

    In the targets every padding id after the first is replaced by ``ignore_index`` (the
    first stays: the model must learn to stop). With ``prompt_lengths`` the targets that
    predict prompt tokens are ignored as well (loss on the response only).
    """
    longest = max(len(item) + 1 for item in batch)
    inputs, targets = [], []
    for row, item in enumerate(batch):
        ids = list(item) + [pad_token_id]
        padded = ids + [pad_token_id] * (longest - len(ids))
        inp = torch.tensor(padded[:-1], dtype=torch.long)
        tgt = torch.tensor(padded[1:], dtype=torch.long)
        pad_positions = torch.nonzero(tgt == pad_token_id).flatten()
        if pad_positions.numel() > 1:
            tgt[pad_positions[1:]] = ignore_index
        if prompt_lengths is not None:
            # target j predicts token j+1: tokens 1..prompt_len-1 belong to the prompt
            tgt[:max(prompt_lengths[row] - 1, 0)] = ignore_index
        if allowed_max_length is not None:
            inp, tgt = inp[:allowed_max_length], tgt[:allowed_max_length]
        inputs.append(inp)
        targets.append(tgt)
    return torch.stack(inputs).to(device), torch.stack(targets).to(device)


class InstructionDataset(Dataset):
    """Entries encoded as prompt + response; items are (ids, prompt length)."""

    def __init__(self, data: list[dict], tokenizer):
        self.data = data
        self.encoded: list[list[int]] = []
        self.prompt_lengths: list[int] = []
        for entry in data:
            prompt = format_input(entry)
            # User text never becomes a special token: literals are encoded as plain text.
            p_ids = tokenizer.encode_ordinary(prompt)
            self.encoded.append(p_ids + tokenizer.encode_ordinary(format_response(entry)))
            self.prompt_lengths.append(len(p_ids))

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int):
        return self.encoded[i], self.prompt_lengths[i]


def instruction_collate(pad_token_id: int, allowed_max_length: int | None, mask_prompt: bool,
                        ignore_index: int = -100):
    """A collate for InstructionDataset items, for a DataLoader."""
    def collate(items):
        ids = [i for i, _ in items]
        lengths = [n for _, n in items] if mask_prompt else None
        return custom_collate_fn(ids, pad_token_id, ignore_index, allowed_max_length, prompt_lengths=lengths)
    return collate


def split_instructions(data: list, train_frac: float = 0.85, test_frac: float = 0.10):
    """The book's slicing: first 85 % train, next 10 % test, the rest validation."""
    train_end = int(len(data) * train_frac)
    test_end = train_end + int(len(data) * test_frac)
    return data[:train_end], data[train_end:test_end], data[test_end:]


# ---------------------------------------------------------------- data set containers

class DatasetError(ValueError):
    """A data set that cannot be used (the message says why and what to do)."""


@dataclass
class ClassificationData:
    name: str
    texts: list[str]
    labels: list[int]
    label_names: list[str]
    description: str = ""
    splits: dict[str, list[int]] | None = None  # fixed splits (indices) when the source defines them

    def __len__(self) -> int:
        return len(self.texts)

    def class_counts(self) -> dict[str, int]:
        counts = {n: 0 for n in self.label_names}
        for y in self.labels:
            counts[self.label_names[y]] += 1
        return counts


@dataclass
class InstructionData:
    name: str
    entries: list[dict]
    description: str = ""
    extra: dict = field(default_factory=dict)
    rehearsal: tuple[str, ...] = ()  # plain pre-training texts that may be replayed while tuning

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True)
class Unavailable:
    """A book data set that cannot be had right now, and why."""

    reason: str


def split_classification(data: ClassificationData, seed: int = 123,
                         fractions: tuple[float, float] = (0.7, 0.1)) -> dict[str, list[int]]:
    """Indices for train/validation/test: the data set's own split, else shuffled 70/10/20."""
    if data.splits is not None:
        return data.splits
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    train_end = int(len(order) * fractions[0])
    val_end = train_end + int(len(order) * fractions[1])
    return {"train": order[:train_end], "val": order[train_end:val_end], "test": order[val_end:]}


# ---------------------------------------------------------------- the standard library, read with ast

GENERATOR_VERSION = 2  # 2: built-in functions, classes and methods of the common built-in types
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]`'\"])\.(\s|$)")


def _first_paragraph(doc: str) -> str:
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


def first_sentence(doc: str, max_chars: int = 160) -> str | None:
    """The docstring's first sentence, if it is a plain sentence of sensible length."""
    para = _first_paragraph(doc)
    m = _SENTENCE_END.search(para)
    sentence = para[:m.start() + 1] if m else para
    if not 12 <= len(sentence) <= max_chars or not sentence[0].isalpha():
        return None
    if re.match(r"^[\w.]+\(.*\)", sentence):  # a C-style signature line, not a sentence
        return None
    return sentence


def _params(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = node.args
    names = [x.arg for x in a.posonlyargs + a.args if x.arg not in ("self", "cls")]
    if a.vararg:
        names.append("*" + a.vararg.arg)
    names += [x.arg for x in a.kwonlyargs]
    if a.kwarg:
        names.append("**" + a.kwarg.arg)
    return names


def _extract_stdlib() -> dict:
    """Public top-level functions and classes of the standard library with their docstrings."""
    functions, classes = [], []
    for module, path in public_module_files(stdlib_dir()):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                    or node.name.startswith("_"):
                continue
            doc = ast.get_docstring(node)
            if not doc or "<|endoftext|>" in doc:
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append({"module": module, "name": node.name, "params": _params(node), "doc": doc})
            elif isinstance(node, ast.ClassDef):
                classes.append({"module": module, "name": node.name, "doc": doc})
    builtin_functions, builtin_classes, methods = _extract_builtins()
    from pydoc_data.topics import topics
    topic_list = [{"name": k, "doc": topics[k]} for k in sorted(topics) if topics[k].strip()]
    return {"functions": builtin_functions + functions, "classes": builtin_classes + classes,
            "methods": methods, "topics": topic_list}


METHOD_TYPES = (str, list, dict, set, tuple, bytes, int, float)  # the types a beginner asks about


def _builtin_params(obj) -> list[str] | None:
    """Parameter names from a C function's text signature (None where it has none)."""
    import inspect
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    names = []
    for prm in sig.parameters.values():
        if prm.name.startswith("_") or prm.name in ("self", "cls"):
            continue
        prefix = {prm.VAR_POSITIONAL: "*", prm.VAR_KEYWORD: "**"}.get(prm.kind, "")
        names.append(prefix + prm.name)
    return names


def _extract_builtins() -> tuple[list[dict], list[dict], list[dict]]:
    """The built-in functions (len, sorted, ...), classes and the methods of METHOD_TYPES with the
    docstrings this Python was built with: they live in C, so no .py file holds them."""
    import builtins
    import inspect
    functions, classes, methods = [], [], []
    for name in sorted(vars(builtins)):
        obj = getattr(builtins, name)
        doc = inspect.getdoc(obj)
        if name.startswith("_") or not doc or "<|endoftext|>" in doc:
            continue
        if inspect.isbuiltin(obj):
            functions.append({"module": "builtins", "name": name, "params": _builtin_params(obj), "doc": doc})
        elif isinstance(obj, type):
            classes.append({"module": "builtins", "name": name, "doc": doc})
    for cls in METHOD_TYPES:
        for name, member in sorted(vars(cls).items()):
            doc = inspect.getdoc(member) if callable(member) or isinstance(member, classmethod) else None
            if not name.startswith("_") and doc:
                methods.append({"type": cls.__name__, "name": name, "doc": doc})
    return functions, classes, methods


_extract_lock = threading.Lock()


@lru_cache(maxsize=1)
def stdlib_docs() -> dict:
    """The extraction, cached on disk per Python version (the same Python gives the same data)."""
    impl = f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    cache = CACHE_DIR / f"stdlib-docs-{impl}-v{GENERATOR_VERSION}.json"
    with _extract_lock:
        if cache.is_file():
            try:
                return json.loads(cache.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass
        data = _extract_stdlib()
        try:
            write_atomic(cache, json.dumps(data).encode("utf-8"))
        except OSError:
            pass
        return data


# ---------------------------------------------------------------- built-in classification set

CLASSIFICATION_LABELS = ["function", "class"]
CLASSIFICATION_MAX_CHARS = 240


def _classification_text(doc: str) -> str:
    para = _first_paragraph(doc)
    return para[:CLASSIFICATION_MAX_CHARS].rsplit(" ", 1)[0] if len(para) > CLASSIFICATION_MAX_CHARS else para


@lru_cache(maxsize=4)
def builtin_classification(seed: int = 123) -> ClassificationData:
    """Docstrings of standard-library functions and classes, balanced; label = what it documents."""
    docs = stdlib_docs()
    by_text: dict[str, set[int]] = {}
    for label, items in ((0, docs["functions"]), (1, docs["classes"])):
        for item in items:
            if item["module"] == "builtins":  # labels here are read from .py sources with ast
                continue
            text = _classification_text(item["doc"])
            if len(text) >= 12:
                by_text.setdefault(text, set()).add(label)
    # A text seen under both labels (a shared boilerplate docstring) has no true label: drop it.
    pairs = sorted((t, next(iter(ls))) for t, ls in by_text.items() if len(ls) == 1)
    per_class = [[t for t, y in pairs if y == c] for c in (0, 1)]
    n = min(len(p) for p in per_class)
    rng = random.Random(seed)
    chosen = [(t, c) for c, texts in enumerate(per_class) for t in rng.sample(texts, n)]
    rng.shuffle(chosen)
    return ClassificationData(
        name="Python docstrings: function or class?",
        texts=[t for t, _ in chosen], labels=[y for _, y in chosen], label_names=list(CLASSIFICATION_LABELS),
        description=(f"{2 * n:,} first paragraphs of standard-library docstrings, balanced; the label "
                     "(function or class) is read from the source code with ast."))


# ---------------------------------------------------------------- built-in instruction set

def _word_pool(docs: dict) -> list[str]:
    words = set()
    for item in docs["functions"] + docs["classes"]:
        sentence = first_sentence(item["doc"]) or ""
        words.update(w for w in re.findall(r"\b[a-z]{3,9}\b", sentence))
    return sorted(words)


def _computed_tasks(rng: random.Random, words: list[str], per_kind: int) -> list[dict]:
    """Tasks whose answers the program computes (scored by exact match)."""

    def word():
        return rng.choice(words)

    def phrase(lo=2, hi=5):
        return " ".join(word() for _ in range(rng.randint(lo, hi)))

    def numbers(lo=3, hi=6, top=99):
        return [rng.randint(0, top) for _ in range(rng.randint(lo, hi))]

    def fmt(nums):
        return ", ".join(str(x) for x in nums)

    def on_word(instruction, answer):
        def make():
            w = word()
            return instruction, w, answer(w)
        return make

    def on_phrase(instruction, answer, lo=2, hi=5):
        def make():
            p = phrase(lo, hi)
            return instruction, p, answer(p)
        return make

    def on_numbers(instruction, answer, lo=3, hi=6, top=99):
        def make():
            n = numbers(lo, hi, top)
            return instruction, fmt(n), answer(n)
        return make

    def on_pair(instruction, answer, lo, hi):
        def make():
            a, b = rng.randint(lo, hi), rng.randint(lo, hi)
            return instruction, f"{a} and {b}", answer(a, b)
        return make

    def palindrome():
        w = word()
        if rng.random() < 0.5:
            w = w + w[-2::-1]  # half of them are palindromes by construction
        return "Is the word a palindrome? Answer yes or no.", w, "yes" if w == w[::-1] else "no"

    def camel_case():
        s = "_".join(word() for _ in range(rng.randint(2, 3)))
        return "Convert the snake_case name to CamelCase.", s, "".join(p.capitalize() for p in s.split("_"))

    makers = [
        on_word("Reverse the following word.", lambda w: w[::-1]),
        on_word("How many letters does the word have?", lambda w: str(len(w))),
        on_word("How many vowels are in the word?", lambda w: str(sum(ch in "aeiou" for ch in w))),
        on_phrase("Convert the text to upper case.", str.upper),
        on_phrase("Convert the text to title case.", str.title),
        on_phrase("How many words are in the text?", lambda p: str(len(p.split())), 2, 8),
        on_phrase("Sort the words alphabetically.", lambda p: " ".join(sorted(p.split())), 3, 5),
        on_phrase("Reverse the order of the words.", lambda p: " ".join(p.split()[::-1]), 3, 6),
        on_phrase("What is the first word of the text?", lambda p: p.split()[0], 2, 6),
        on_phrase("What is the last word of the text?", lambda p: p.split()[-1], 2, 6),
        on_phrase("Join the words with underscores.", lambda p: "_".join(p.split()), 2, 4),
        on_numbers("Sort the numbers in ascending order.", lambda n: fmt(sorted(n))),
        on_numbers("Sort the numbers in descending order.", lambda n: fmt(sorted(n, reverse=True))),
        on_numbers("What is the sum of the numbers?", lambda n: str(sum(n))),
        on_numbers("What is the largest number in the list?", lambda n: str(max(n))),
        on_numbers("What is the smallest number in the list?", lambda n: str(min(n))),
        on_numbers("How many items are in the list?", lambda n: str(len(n)), 2, 9),
        on_numbers("Remove the duplicates from the list, keeping the first of each.",
                   lambda n: fmt(dict.fromkeys(n)), 4, 8, 9),
        on_pair("Add the two numbers.", lambda a, b: str(a + b), 0, 999),
        on_pair("Multiply the two numbers.", lambda a, b: str(a * b), 2, 30),
        palindrome,
        camel_case,
    ]
    out = []
    for _ in range(per_kind):
        for make in makers:
            instruction, inp, output = make()
            out.append({"instruction": instruction, "input": inp, "output": output, "check": "exact"})
    return out


def doc_tasks(docs: dict) -> list[dict]:
    """Questions answered from the documentation (answers are the docs' own words or names)."""
    out = []
    name_count: dict[str, int] = {}
    for f in docs["functions"]:
        name_count[f["name"]] = name_count.get(f["name"], 0) + 1
    for f in docs["functions"]:
        qual = f"{f['module']}.{f['name']}"
        sentence = first_sentence(f["doc"])
        if sentence:
            out.append({"instruction": f"What does the Python function {qual}() do?", "input": "",
                        "output": sentence, "check": "similar"})
        if sentence and f["module"] == "builtins":  # asked without a module name: "What does len() do?"
            for question in (f"What does {f['name']}() do?", f"What does the {f['name']}() function do?"):
                out.append({"instruction": question, "input": "", "output": sentence, "check": "similar"})
        if f["params"] is not None:  # None: a built-in without a text signature
            out.append({"instruction": f"List the parameters of {qual}().", "input": "",
                        "output": ", ".join(f["params"]) if f["params"] else "It takes no parameters.",
                        "check": "exact"})
        if name_count[f["name"]] == 1:
            out.append({"instruction": "Which standard-library module defines this function?",
                        "input": f"{f['name']}()", "output": f["module"], "check": "exact"})
    for c in docs["classes"]:
        sentence = first_sentence(c["doc"])
        if sentence:
            out.append({"instruction": f"What is the Python class {c['module']}.{c['name']}?", "input": "",
                        "output": sentence, "check": "similar"})
    for m in docs.get("methods", []):
        sentence = first_sentence(m["doc"])
        if sentence:
            for question in (f"What does the {m['type']}.{m['name']}() method do?", f"What does {m['type']}.{m['name']}() do?"):
                out.append({"instruction": question, "input": "", "output": sentence, "check": "similar"})
    for t in docs["topics"]:
        body = t["doc"].split("\n", 2)[-1] if "\n***" in t["doc"][:200] or "\n===" in t["doc"][:200] else t["doc"]
        sentence = first_sentence(body, max_chars=200)
        if sentence:
            out.append({"instruction": "Explain this Python topic in one sentence.", "input": t["name"],
                        "output": sentence, "check": "similar"})
    return out


# What a demo audience types first, answered truthfully about this model (written here).
_ASSISTANT_ANSWERS = {
    "greeting": ("Hello! I am a small language model trained on Python's documentation. Ask me what a "
                 "Python function, class or module does."),
    "identity": ("I am pydoc-gpt-instruct, a small language model trained on Python's documentation and "
                 "tuned to follow instructions. I am a program, not a person."),
    "abilities": ("I can answer short questions about Python: what a function or class does, which "
                  "parameters it takes and which module defines it. I often get details wrong, so check "
                  "the documentation."),
    "training": ("I was pre-trained on the documentation installed with Python and its packages, then "
                 "tuned on questions made from it, all with LLM Explorer's own code."),
    "thanks": "You are welcome! Ask me about another Python function or module.",
    "goodbye": "Goodbye! Happy coding.",
    "off_topic": ("I only know Python's documentation, so I cannot answer that reliably. Ask me about a "
                  "Python function, class or module."),
}
_ASSISTANT_QUESTIONS = {
    "greeting": ["Hello", "Hi", "Hey", "Hello there", "Hi there", "Good morning", "Good evening",
                 "Good afternoon", "Hello, how are you", "Hi, how are you doing", "Greetings", "Hey there"],
    "identity": ["Who are you", "What are you", "What is your name", "Are you a human", "Are you ChatGPT",
                 "Tell me about yourself", "Introduce yourself", "Are you a person or a program",
                 "What kind of model are you", "Hello! Who are you", "Hi, what are you"],
    "abilities": ["What can you do", "How can you help me", "What do you know", "What are you good at",
                  "What questions can I ask you", "Can you help me with Python", "What can I ask you",
                  "Hi! What can you do", "What are you able to answer"],
    "training": ["How were you trained", "What data were you trained on", "Who made you", "Who trained you",
                 "Where does your knowledge come from", "How did you learn", "What did you learn from"],
    "thanks": ["Thank you", "Thanks", "Thanks, that helps", "Thank you very much", "Great, thanks",
               "Thanks for the help"],
    "goodbye": ["Bye", "Goodbye", "See you later", "That is all, bye", "Bye for now"],
    "off_topic": ["What is the capital of France", "What is the weather today", "Write me a poem",
                  "Who won the football match yesterday", "What is the meaning of life",
                  "Tell me a joke about cats", "How tall is Mount Everest", "What should I cook tonight",
                  "Who is the president of the United States", "Translate hello into German"],
}


# Short Python how-tos a beginner asks, answered here in a sentence or two (facts of the language),
# each with its phrasings and the follow-ups that only make sense after it.
_HOWTOS = [
    (["How do I sort a list in Python", "How can I sort a list", "How do I sort a list of numbers"],
     "Use sorted(items) to get a new sorted list, or items.sort() to sort the list in place.",
     [(["And in reverse order", "What about descending order", "How do I sort it backwards"],
       "Pass reverse=True: sorted(items, reverse=True) or items.sort(reverse=True)."),
      (["And by length", "How do I sort words by their length"],
       "Pass a key function: sorted(words, key=len) sorts the words by their length.")]),
    (["How do I reverse a list", "How can I reverse a list in Python"],
     "Call items.reverse() to reverse the list in place, or use items[::-1] for a reversed copy.", []),
    (["How do I get the length of a list", "How do I count the items in a list",
      "How do I find the length of a string"],
     "Call len(): len(items) is the number of items in a list, len(text) the number of characters in a string.",
     [(["And for a dictionary", "What about a dictionary"], "len(d) is the number of keys in the dictionary d.")]),
    (["How do I read a file in Python", "How can I read a text file", "How do I open a file"],
     "Open it in a with statement: with open('data.txt', encoding='utf-8') as f: text = f.read().",
     [(["And line by line", "How do I read it one line at a time"],
       "Loop over the open file: for line in f: gives one line at a time, newline included.")]),
    (["How do I write to a file", "How can I save text to a file"],
     "Open it for writing: with open('out.txt', 'w', encoding='utf-8') as f: f.write(text).",
     [(["And append instead of overwriting", "How do I add to the end of the file"],
       "Open it with mode 'a' instead of 'w': open('out.txt', 'a', encoding='utf-8').")]),
    (["How do I convert a string to an integer", "How do I turn text into a number"],
     "Call int(): int('42') returns 42. It raises ValueError when the text is not a whole number.",
     [(["And to a float", "What about a decimal number"], "Call float(): float('3.5') returns 3.5.")]),
    (["How do I convert a number to a string", "How do I turn a number into text"],
     "Call str(): str(42) returns '42'. An f-string works too: f'{x}'.", []),
    (["How do I split a string", "How can I split a string into words"],
     "Call text.split() to split at whitespace, or text.split(',') to split at commas; it returns a list.",
     [(["And join them back together", "How do I undo that"],
       "Call join on the separator: ' '.join(words) puts a space between the strings.")]),
    (["How do I join a list of strings", "How do I concatenate strings in a list"],
     "Call join on the separator: ', '.join(words) puts ', ' between the strings of the list.", []),
    (["How do I make a string upper case", "How do I convert text to upper case"],
     "Call text.upper(); it returns an upper-case copy of the string.",
     [(["And lower case", "What about lower case"], "Call text.lower(); it returns a lower-case copy.")]),
    (["How do I remove spaces from the ends of a string", "How do I strip whitespace"],
     "Call text.strip(); lstrip() and rstrip() remove whitespace from one end only.", []),
    (["How do I replace text in a string", "How can I replace a word in a string"],
     "Call text.replace('old', 'new'); it returns a copy with every 'old' replaced by 'new'.", []),
    (["How do I check if a string contains a word", "How do I find a substring"],
     "Use the in operator: 'py' in 'python' is True. text.find('py') gives its position, or -1.", []),
    (["How do I add an item to a list", "How do I append to a list"],
     "Call items.append(x) to add x at the end, or items.insert(i, x) to put it at position i.",
     [(["And at the front", "How do I add it at the beginning"], "Call items.insert(0, x) to put x at the front.")]),
    (["How do I remove an item from a list", "How do I delete from a list"],
     "Call items.remove(x) to remove the first x, or items.pop(i) to remove and return the item at position i.",
     []),
    (["How do I remove duplicates from a list", "How can I get the unique items of a list"],
     "list(dict.fromkeys(items)) removes duplicates and keeps the order; set(items) drops the order.", []),
    (["How do I copy a list", "How can I make a copy of a list"],
     "items.copy() or items[:] makes a shallow copy; copy.deepcopy(items) copies nested lists too.", []),
    (["How do I loop over a list with the index", "How do I get the index in a for loop"],
     "Use enumerate(): for i, item in enumerate(items): gives each position and its item.", []),
    (["How do I loop over a dictionary", "How do I iterate over keys and values"],
     "Loop over d.items(): for key, value in d.items(): gives each key with its value.", []),
    (["How do I check if a key is in a dictionary", "How do I test for a dictionary key"],
     "Use the in operator: key in d is True when the dictionary has that key.",
     [(["And get a default when it is missing", "What if the key is missing"],
       "Call d.get(key, default): it returns default instead of raising KeyError.")]),
    (["How do I make a dictionary from two lists", "How do I pair two lists"],
     "Zip them: dict(zip(keys, values)) pairs each key with the value at the same position.", []),
    (["How do I add up the numbers in a list", "How do I sum a list"],
     "Call sum(numbers); max(numbers) and min(numbers) give the largest and the smallest.", []),
    (["How do I count how often an item appears", "How do I count occurrences in a list"],
     "Call items.count(x) for one item, or collections.Counter(items) to count every item at once.", []),
    (["How do I write a function", "How do I define a function in Python"],
     "Use def: def add(a, b): followed by the indented body, for example return a + b.", []),
    (["How do I handle an exception", "How do I catch an error"],
     "Put the code in a try block and handle the error in except, naming it: except ValueError:.", []),
    (["How do I write a list comprehension", "What is a list comprehension"],
     "[x * x for x in numbers] builds a new list of squares; add if x > 0 at the end to filter.", []),
    (["How do I check the type of a variable", "How do I test if something is an integer"],
     "isinstance(x, int) is True when x is an int; type(x) returns its type.", []),
    (["How do I print without a newline", "How do I stop print from adding a newline"],
     "Pass end='': print('text', end='') ends the output with nothing instead of a newline.", []),
    (["How do I format a number with two decimals", "How do I round a number for printing"],
     "Use an f-string: f'{x:.2f}' formats x with two digits after the decimal point.", []),
    (["How do I parse JSON", "How do I read JSON in Python"],
     "Import json: json.loads(text) turns a JSON string into Python objects, json.dumps(obj) goes back.", []),
    (["How do I get a random number", "How do I pick a random number"],
     "Import random: random.randint(1, 6) returns a whole number from 1 to 6, random.random() a float below 1.",
     []),
    (["How do I get the current date and time", "How do I get today's date"],
     "Import datetime: datetime.datetime.now() is the current local date and time.", []),
    (["How do I check if a file exists", "How can I test whether a file exists"],
     "Use pathlib: pathlib.Path('data.txt').exists() is True when the file or folder exists.", []),
    (["How do I leave a loop early", "How do I stop a for loop"],
     "Use break to leave the loop at once, or continue to skip to the next round.", []),
    (["How do I install a package", "How do I install a library"],
     "Run pip from a terminal: python -m pip install package-name.", []),
    (["How do I measure how long code takes", "How do I time my code"],
     "Call time.perf_counter() before and after it: the difference is the time in seconds.", []),
    (["How do I read command-line arguments", "How do I get the arguments of my script"],
     "sys.argv is the list of arguments; the argparse module turns them into options.", []),
]
CONVERSATION_ENTRIES = 400  # multi-turn prompts: earlier turns, then the message to answer
FOLLOW_UP_CONVERSATIONS = 150  # of each kind: ending in a how-to's follow-up, going on after one
CONVERSATION_MAX_CHARS = 620  # so a conversation and its answer fit a 256-token context (253 at most, docs-gpt)
FOLLOW_UP_MAX_CHARS = 590  # the same for those around a follow-up: more code in them, more tokens per character


def chat_instruction(turns: list[tuple[str, str]], message: str) -> str:
    """An instruction whose ``format_input`` prompt is exactly the Chat tab's prompt for ``message``
    after the (question, answer) ``turns``: the earlier turns sit inside the instruction."""
    text = ""
    for question, answer in turns:
        text += f"{question}{RESPONSE_HEADER}{answer}\n\n### Instruction:\n"
    return text + message


def _phrasings(q: str, end: str) -> list[str]:
    return list(dict.fromkeys((q + end, q, q.lower() + end)))


def _howto_tasks() -> list[dict]:
    """Each how-to phrasing alone, and each follow-up after each phrasing of its question."""
    out = []
    for questions, answer, follow_ups in _HOWTOS:
        for q in questions:
            out += [{"instruction": v, "input": "", "output": answer, "check": "exact", "kind": "assistant"}
                    for v in _phrasings(q, "?")]
            for follow_questions, follow_answer in follow_ups:
                for f in follow_questions:
                    out.append({"instruction": chat_instruction([(q + "?", answer)], f + "?"), "input": "",
                                "output": follow_answer, "check": "exact", "kind": "assistant"})
    return out


def _conversation_tasks(rng: random.Random, singles: list[dict], n: int) -> list[dict]:
    """The last message of a conversation answered after one to three unrelated earlier turns, so a
    model learns to answer the newest instruction, not the first one it sees."""
    out: dict[str, dict] = {}
    for _ in range(n * 4):
        if len(out) >= n:
            break
        picked = rng.sample(singles, rng.choice((2, 3, 4)))
        *earlier, last = picked
        instruction = chat_instruction([(e["instruction"], e["output"]) for e in earlier], last["instruction"])
        if len(instruction) + len(last["output"]) > CONVERSATION_MAX_CHARS:
            continue
        out.setdefault(instruction, {"instruction": instruction, "input": "", "output": last["output"],
                                     "check": "exact", "kind": "assistant"})
    return list(out.values())


def _follow_up_conversations(rng: random.Random, singles: list[dict], n: int) -> list[dict]:
    """Conversations around a how-to's follow-up, as in a live chat: ``n`` that end in the
    follow-up after one or two unrelated turns and the how-to (so "And in reverse order?" refers
    to the turn just before, however many came earlier), and ``n`` that go on after it with a new,
    unrelated message (so a model does not answer every later message as another follow-up)."""
    pairs = [(q, answer, f, follow_answer) for questions, answer, follow_ups in _HOWTOS for q in questions
             for follow_questions, follow_answer in follow_ups for f in follow_questions]
    ending, going_on = {}, {}
    for _ in range(n * 8):
        if len(ending) >= n and len(going_on) >= n:
            break
        q, answer, f, follow_answer = rng.choice(pairs)
        howto = [(q + "?", answer)]
        if len(ending) < n:
            earlier = [(e["instruction"], e["output"]) for e in rng.sample(singles, rng.choice((1, 2)))
                       if e["output"] != answer]
            turns, message, output, out = earlier + howto, f + "?", follow_answer, ending
        else:
            *earlier, new = rng.sample(singles, rng.choice((1, 2)))
            if new["output"] in (answer, follow_answer):
                continue
            turns = [(e["instruction"], e["output"]) for e in earlier] + howto + [(f + "?", follow_answer)]
            message, output, out = new["instruction"], new["output"], going_on
        instruction = chat_instruction(turns, message)
        if len(instruction) + len(output) > FOLLOW_UP_MAX_CHARS:
            continue
        out.setdefault(instruction, {"instruction": instruction, "input": "", "output": output,
                                     "check": "exact", "kind": "assistant"})
    return list(ending.values()) + list(going_on.values())


def _assistant_tasks() -> list[dict]:
    """Greetings, "who are you", "what can you do" and off-topic questions, each phrasing written
    with and without a question mark / exclamation mark and in lower case."""
    out = []
    for kind, questions in _ASSISTANT_QUESTIONS.items():
        for q in questions:
            end = "!" if kind in ("greeting", "thanks", "goodbye") else "?"
            for variant in dict.fromkeys((q + end, q, q.lower() + end)):
                out.append({"instruction": variant, "input": "", "output": _ASSISTANT_ANSWERS[kind],
                            "check": "exact", "kind": "assistant"})
    return out


@lru_cache(maxsize=1)
def rehearsal_sections() -> tuple[str, ...]:
    """Pre-training text to replay while instruction tuning: the standard library's sections as
    the pre-training corpus holds them (a module's docstring; a class's, function's or method's
    signature and docstring), from the modules of its training split only. Replaying them keeps
    tuning from washing out what pre-training stored; no question or answer is among them."""
    from .doc_corpus import is_held_out

    out = []
    for module, path in public_module_files(stdlib_dir()):
        if is_held_out("pydoc", module):
            continue
        try:
            out += module_sections(module, path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
    return tuple(out)


@lru_cache(maxsize=4)
def builtin_instructions(seed: int = 123, computed_per_kind: int = 100) -> InstructionData:
    """Documentation questions plus computed tasks, shuffled (a fixed order for a fixed seed)."""
    docs = stdlib_docs()
    rng = random.Random(seed)
    from_docs = doc_tasks(docs)
    computed = _computed_tasks(rng, _word_pool(docs), computed_per_kind)
    singles = _assistant_tasks() + _howto_tasks()
    alone = [e for e in singles if RESPONSE_HEADER not in e["instruction"]]
    assistant = (singles + _conversation_tasks(rng, alone, CONVERSATION_ENTRIES)
                 # its own generator: the conversations above stay the same as before it was added
                 + _follow_up_conversations(random.Random(seed + 1), alone, FOLLOW_UP_CONVERSATIONS))
    entries = from_docs + computed + assistant
    rng.shuffle(entries)
    return InstructionData(
        name="Python docs + computed tasks",
        entries=entries,
        description=(f"{len(entries):,} instructions: {len(from_docs):,} questions answered from this Python's "
                     f"documentation (docstrings, pydoc topics) and {len(computed):,} string/list/number tasks "
                     f"whose answers the program computes, and {len(assistant):,} written here: greetings, questions "
                     "about the model itself (answered truthfully), short Python how-tos with follow-ups, and "
                     "multi-turn conversations ending in one of them."),
        extra={"kinds": {"documentation": len(from_docs), "computed": len(computed), "assistant": len(assistant)}},
    )


# ---------------------------------------------------------------- the book's data sets (online)

SMS_SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_SPAM_MEMBER = "SMSSpamCollection"
SMS_SPAM_COUNTS = {"ham": 4825, "spam": 747}
INSTRUCTION_DATA_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
                        "ch07/01_main-chapter-code/instruction-data.json")
INSTRUCTION_DATA_ENTRIES = 1100
DOWNLOAD_TIMEOUT = 8.0


def _downloads_allowed() -> bool:
    return not (os.environ.get("HF_HUB_OFFLINE") == "1" and os.environ.get("LLM_EXPLORER_ALLOW_DOWNLOADS") != "1")


def download_bytes(url: str, timeout: float = DOWNLOAD_TIMEOUT, max_bytes: int = 5_000_000) -> bytes | str:
    """The body of ``url``, or a string saying why not; never waits much past ``timeout``."""
    result: dict = {}

    def fetch():  # in a thread: a DNS lookup can ignore urlopen's timeout
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                result["data"] = resp.read(max_bytes + 1)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            result["error"] = str(getattr(exc, "reason", exc))

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(timeout + 1.0)
    if "data" in result:
        if len(result["data"]) > max_bytes:
            return f"the download is larger than {max_bytes:,} bytes"
        return result["data"]
    return result.get("error", f"no answer within {timeout:.0f} s")


def _cached_download(filename: str, url: str, what: str, timeout: float) -> tuple[bytes | None, str]:
    """(data, "") from the cache or the network, else (None, reason). The sha256 of the first good
    download is kept beside the file and checked on every later read."""
    path, sha_path = CACHE_DIR / filename, CACHE_DIR / (filename + ".sha256")
    if path.is_file() and sha_path.is_file():
        try:
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() == sha_path.read_text().strip():
                return data, ""
        except OSError:
            pass
    if not _downloads_allowed():
        return None, f"{what} is not cached and downloads are switched off (offline mode)."
    got = download_bytes(url, timeout)
    if isinstance(got, str):
        return None, f"{what} is unavailable: could not download it ({got})."
    return got, ""


def _store(filename: str, data: bytes) -> None:
    try:
        write_atomic(CACHE_DIR / filename, data)
        write_atomic(CACHE_DIR / (filename + ".sha256"), hashlib.sha256(data).hexdigest().encode())
    except OSError:
        pass


def parse_sms_spam(zip_bytes: bytes) -> list[tuple[str, str]]:
    """(label, text) rows of the collection's tab-separated file."""
    try:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
            raw = zf.read(SMS_SPAM_MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DatasetError(f"the SMS Spam Collection download is not the expected zip ({exc})") from None
    text = raw.decode("utf-8", errors="replace")
    # Read like pandas.read_csv(sep="\t", header=None) in the book: quotes may span lines.
    rows = [r for r in csv.reader(io.StringIO(text), delimiter="\t") if r]
    return [(r[0], r[1] if len(r) > 1 else "") for r in rows]


def balance_and_split_sms(rows: list[tuple[str, str]]) -> ClassificationData:
    """The book's recipe: sample as many ham as spam (random_state 123), shuffle (123),
    split 70/10/20. numpy's RandomState.choice is what pandas.DataFrame.sample calls."""
    import numpy as np

    ham = [t for lab, t in rows if lab == "ham"]
    spam = [t for lab, t in rows if lab == "spam"]
    if not ham or not spam:
        raise DatasetError("the SMS Spam Collection has no ham or no spam rows")
    pick = np.random.RandomState(123).choice(len(ham), size=len(spam), replace=False)
    balanced = [(ham[i], 0) for i in pick] + [(t, 1) for t in spam]
    order = np.random.RandomState(123).choice(len(balanced), size=len(balanced), replace=False)
    shuffled = [balanced[i] for i in order]
    n = len(shuffled)
    train_end = int(n * 0.7)
    val_end = train_end + int(n * 0.1)
    return ClassificationData(
        name="SMS Spam Collection (the book's)",
        texts=[t for t, _ in shuffled], labels=[y for _, y in shuffled], label_names=["ham", "spam"],
        description=(f"{len(ham):,} ham and {len(spam):,} spam messages; {len(spam):,} ham sampled to balance "
                     "(random_state 123), shuffled and split 70/10/20 as in the book."),
        splits={"train": list(range(train_end)), "val": list(range(train_end, val_end)),
                "test": list(range(val_end, n))})


def sms_spam(timeout: float = DOWNLOAD_TIMEOUT) -> ClassificationData | Unavailable:
    data, reason = _cached_download("sms-spam-collection.zip", SMS_SPAM_URL, "The SMS Spam Collection", timeout)
    if data is None:
        return Unavailable(reason + " Use the built-in data set or upload a CSV.")
    try:
        rows = parse_sms_spam(data)
        counts = {lab: sum(1 for x, _ in rows if x == lab) for lab in SMS_SPAM_COUNTS}
        if counts != SMS_SPAM_COUNTS:
            return Unavailable(f"The SMS Spam Collection download has {counts}, not the book's {SMS_SPAM_COUNTS}.")
        result = balance_and_split_sms(rows)
    except DatasetError as exc:
        return Unavailable(f"The SMS Spam Collection is unavailable: {exc}")
    _store("sms-spam-collection.zip", data)
    return result


def book_instruction_data(timeout: float = DOWNLOAD_TIMEOUT) -> InstructionData | Unavailable:
    data, reason = _cached_download("instruction-data.json", INSTRUCTION_DATA_URL, "instruction-data.json", timeout)
    if data is None:
        return Unavailable(reason + " Use the built-in data set or upload a JSON file.")
    try:
        entries = parse_instruction_json(data)
    except DatasetError as exc:
        return Unavailable(f"instruction-data.json is unavailable: {exc}")
    if len(entries) != INSTRUCTION_DATA_ENTRIES:
        return Unavailable(f"instruction-data.json has {len(entries):,} entries, not the book's "
                           f"{INSTRUCTION_DATA_ENTRIES:,}.")
    _store("instruction-data.json", data)
    return InstructionData("instruction-data.json (the book's)", entries,
                           "1,100 instruction/input/output entries from the book's repository.")


# ---------------------------------------------------------------- uploads

UPLOAD_MAX_BYTES = 5_000_000
MAX_ROWS = 50_000
MAX_CLASSES = 20
MIN_EXAMPLES = 10
MAX_FIELD_CHARS = 20_000


def _read_upload(path_or_bytes) -> str:
    try:
        return load_text_upload(path_or_bytes, max_bytes=UPLOAD_MAX_BYTES)
    except CorpusError as exc:
        raise DatasetError(str(exc)) from None


def parse_classification_csv(path_or_bytes, name: str = "uploaded CSV") -> ClassificationData:
    """A CSV with a header naming a ``text`` and a ``label`` column (any order, more columns ignored)."""
    text = _read_upload(path_or_bytes)
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise DatasetError(f"the CSV could not be read ({exc}); check its quotes") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise DatasetError("the CSV has no rows")
    header = [c.strip().lower() for c in rows[0]]
    if "text" not in header or "label" not in header:
        raise DatasetError(f"the CSV's first row must name the columns 'text' and 'label' (found {rows[0][:5]}); "
                           "add a header row like: text,label")
    ti, li = header.index("text"), header.index("label")
    texts, names = [], []
    for n, r in enumerate(rows[1:], start=2):
        if len(r) <= max(ti, li):
            raise DatasetError(f"row {n} has {len(r)} column(s); every row needs a text and a label")
        t, lab = r[ti].strip(), r[li].strip()
        if not t or not lab:
            raise DatasetError(f"row {n} has an empty {'text' if not t else 'label'}")
        if len(t) > MAX_FIELD_CHARS:
            raise DatasetError(f"row {n}'s text has {len(t):,} characters; the limit is {MAX_FIELD_CHARS:,}")
        texts.append(t)
        names.append(lab)
        if len(texts) > MAX_ROWS:
            raise DatasetError(f"the CSV has more than {MAX_ROWS:,} rows; upload a smaller sample")
    label_names = sorted(set(names))
    if len(label_names) < 2:
        raise DatasetError(f"the CSV has only one class ({label_names[0] if label_names else 'none'}); "
                           "classification needs at least two labels")
    if len(label_names) > MAX_CLASSES:
        raise DatasetError(f"the CSV has {len(label_names)} different labels; the limit is {MAX_CLASSES}")
    if len(texts) < MIN_EXAMPLES:
        raise DatasetError(f"the CSV has {len(texts)} examples; at least {MIN_EXAMPLES} are needed to "
                           "split it into training and validation")
    index = {lab: i for i, lab in enumerate(label_names)}
    return ClassificationData(name, texts, [index[x] for x in names], label_names,
                              f"{len(texts):,} uploaded examples, {len(label_names)} classes")


def parse_instruction_json(path_or_bytes, name: str = "uploaded JSON") -> list[dict]:
    """A JSON list of {"instruction", "input" (optional), "output"} objects with string values."""
    text = _read_upload(path_or_bytes)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"the file is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise DatasetError("the JSON is nested too deeply: it must be one list of flat objects "
                           "(instruction, input, output)") from None
    if not isinstance(data, list):
        raise DatasetError("the JSON must be a list of objects with instruction, input and output")
    if len(data) > MAX_ROWS:
        raise DatasetError(f"the JSON has {len(data):,} entries; the limit is {MAX_ROWS:,}")
    entries = []
    for n, item in enumerate(data):
        if not isinstance(item, dict):
            raise DatasetError(f"entry {n} is a {type(item).__name__}, not an object")
        missing = [k for k in ("instruction", "output") if k not in item]
        if missing:
            raise DatasetError(f"entry {n} has no {' or '.join(repr(m) for m in missing)} field")
        entry = {"instruction": item["instruction"], "input": item.get("input", ""), "output": item["output"]}
        for k, v in entry.items():
            if not isinstance(v, str):
                raise DatasetError(f"entry {n}'s {k!r} must be a string (got {type(v).__name__})")
            if len(v) > MAX_FIELD_CHARS:
                raise DatasetError(f"entry {n}'s {k!r} has {len(v):,} characters; the limit is {MAX_FIELD_CHARS:,}")
        if not entry["instruction"].strip():
            raise DatasetError(f"entry {n} has an empty instruction")
        entries.append(entry)
    if len(entries) < MIN_EXAMPLES:
        raise DatasetError(f"the JSON has {len(entries)} entries; at least {MIN_EXAMPLES} are needed to split it")
    return entries


def load_instruction_upload(path_or_bytes, name: str = "uploaded JSON") -> InstructionData:
    entries = parse_instruction_json(path_or_bytes, name)
    return InstructionData(name, entries, f"{len(entries):,} uploaded instructions")
