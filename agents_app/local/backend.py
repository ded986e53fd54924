"""The llama.cpp side: load the verified GGUF once, tokenize, and generate text pieces.

Everything here runs on the model's worker thread (never on the event loop). Generation
checks a `threading.Event` between prompt batches and between tokens, so a Stop frees the
model within one step.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents_app.local.grammar import GrammarCache, OutputConstraint

logger = logging.getLogger(__name__)

# Prompt tokens evaluated per step: small enough that a Stop during a long prompt takes
# effect within a fraction of a second on 2 cores, big enough to keep prefill efficient.
PREFILL_CHUNK = 128


# A snapshot is restored only when it saves at least this many prompt tokens.
MIN_SNAPSHOT_GAIN = 32
MIN_SNAPSHOT_TOKENS = 64
SNAPSHOT_BUDGET_BYTES = 384 * 1024 * 1024  # ~28 KB per token for the 1.5B: ~13k tokens


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


@dataclass
class Snapshot:
    tokens: tuple[int, ...]
    data: bytes
    shared: int = 0


class SnapshotCache:
    """Least recently used KV-cache snapshots, keyed by the tokens they hold."""

    def __init__(self, budget_bytes: int = SNAPSHOT_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self._entries: list[Snapshot] = []  # oldest first

    def best(self, tokens: Sequence[int]) -> Snapshot | None:
        best: Snapshot | None = None
        for entry in self._entries:
            shared = common_prefix(entry.tokens, tokens)
            if shared and (best is None or shared > best.shared):
                best = Snapshot(entry.tokens, entry.data, shared)
        if best is not None:
            self._touch(best.tokens)
        return best

    def add(self, tokens: tuple[int, ...], data: bytes) -> None:
        # A snapshot whose tokens are a prefix of the new one is superseded by it.
        self._entries = [e for e in self._entries if e.tokens != tokens[: len(e.tokens)]]
        self._entries.append(Snapshot(tokens, data))
        while sum(len(e.data) for e in self._entries) > self.budget_bytes and len(self._entries) > 1:
            self._entries.pop(0)

    def _touch(self, tokens: tuple[int, ...]) -> None:
        for index, entry in enumerate(self._entries):
            if entry.tokens == tokens:
                self._entries.append(self._entries.pop(index))
                return

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the previous request's KV cache
    finish_reason: str = "stop"  # stop | length | cancelled

    def plus(self, other: GenerationStats) -> GenerationStats:
        """Two generations of one model call (a retry) counted as one request."""
        return GenerationStats(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            finish_reason=other.finish_reason,
        )



# Candidates the grammar checks per token before it falls back to the whole vocabulary.
GRAMMAR_SHORTLIST = 64


class GrammarGate:
    """A llama.cpp grammar applied the cheap way, as a logits processor.

    llama.cpp's grammar sampler checks every candidate it is given: on the whole 152k-token
    vocabulary that costs 30–200 ms per token on 2 cores, more than generating the token. Here
    it checks only the `GRAMMAR_SHORTLIST` most likely candidates (and end-of-generation), and
    the whole vocabulary only when none of those fits. Everything else is masked, so sampling
    can only pick a token the grammar accepts; with temperature 0 that is the most likely
    allowed token, exactly as with the grammar on the whole vocabulary.
    """

    def __init__(self, llama_cpp: Any, vocab: Any, gbnf: str, *, prompt_tokens: int, n_vocab: int) -> None:
        import numpy as np

        self._np = np
        self._lib = llama_cpp
        self._sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        if not self._sampler:
            raise ValueError("llama.cpp could not parse the grammar")
        self._accepted = prompt_tokens  # input ids up to here are in the grammar's state
        self._n_vocab = n_vocab
        ends = {llama_cpp.llama_vocab_eos(vocab), llama_cpp.llama_vocab_eot(vocab)}
        self._end = np.array(sorted(t for t in ends if t is not None and t >= 0), dtype=np.intc)
        self._buffers: dict[int, tuple[Any, Any]] = {}
        self.full_scans = 0  # how often the shortlist had no allowed token (for tests and tuning)

    def close(self) -> None:
        if self._sampler:
            self._lib.llama_sampler_free(self._sampler)
            self._sampler = None

    def _buffer(self, size: int) -> tuple[Any, Any]:
        if size not in self._buffers:
            buffer = (self._lib.llama_token_data * size)()
            self._buffers[size] = (buffer, self._np.ctypeslib.as_array(buffer))
        return self._buffers[size]

    def _allowed(self, ids: Any, logits: Any) -> Any:
        """The ids among `ids` that the grammar accepts next."""
        size = len(ids)
        buffer, view = self._buffer(size)
        view["id"], view["logit"], view["p"] = ids, logits, 0.0
        array = self._lib.llama_token_data_array(data=buffer, size=size, selected=-1, sorted=False)
        self._lib.llama_sampler_apply(self._sampler, ctypes.byref(array))
        return view["id"][self._np.isfinite(view["logit"])]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        np = self._np
        # The tokens sampled since the last call move the grammar forward.
        for token in input_ids[self._accepted :].tolist():
            self._lib.llama_sampler_accept(self._sampler, int(token))
        self._accepted = len(input_ids)
        top = np.argpartition(scores, -GRAMMAR_SHORTLIST)[-GRAMMAR_SHORTLIST:].astype(np.intc)
        ids = np.unique(np.concatenate([top, self._end]))
        allowed = self._allowed(ids, scores[ids])
        if not len(allowed):
            self.full_scans += 1
            everything = np.arange(self._n_vocab, dtype=np.intc)
            allowed = self._allowed(everything, scores[: self._n_vocab])
        masked = np.full_like(scores, -np.inf)
        masked[allowed] = scores[allowed]
        return masked


class LlamaBackend:
    """One `llama_cpp.Llama` per process, loaded on first use."""

    def __init__(
        self, model_path: Path, *, n_ctx: int, n_threads: int, before_load: Callable[[], object] | None = None
    ) -> None:
        self.model_path = Path(model_path)
        self.before_load = before_load  # e.g. refuse a file whose verification marker is gone
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._llm: Any = None
        self._vocab: Any = None
        self._lock = threading.Lock()
        self.snapshots = SnapshotCache()
        self.grammars = GrammarCache()

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def load(self) -> None:
        with self._lock:
            if self._llm is not None:
                return
            import llama_cpp

            if self.before_load is not None:
                self.before_load()
            self._llm = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                n_batch=512,
                verbose=False,
            )
            self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)

    def close(self) -> None:
        """Free the weights (LocalModel.shutdown calls it at exit, before interpreter teardown
        removes what llama-cpp-python's own finaliser needs)."""
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = self._vocab = None

    def remember(self) -> None:
        """Snapshot the KV cache of the last request (a few ms per thousand tokens), so that
        a later prompt sharing its prefix skips re-evaluating it."""
        import llama_cpp

        llm = self._llm
        if llm is None or llm.n_tokens < MIN_SNAPSHOT_TOKENS:
            return
        size = llama_cpp.llama_state_seq_get_size(llm.ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(llm.ctx, buffer, size, 0)
        self.snapshots.add(tuple(int(t) for t in llm.input_ids[: llm.n_tokens]), bytes(buffer[:written]))

    def _restore(self, tokens: tuple[int, ...], data: bytes) -> bool:
        import llama_cpp

        llm = self._llm
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(llm.ctx), 0, -1, -1)
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if llama_cpp.llama_state_seq_set_data(llm.ctx, buffer, len(data), 0) != len(data):
            llm.n_tokens = 0  # the cache is gone: evaluate the whole prompt
            return False
        llm.input_ids[: len(tokens)] = tokens
        llm.n_tokens = len(tokens)
        return True

    def tokenize(self, text: str) -> list[int]:
        self.load()
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def generate(
        self,
        tokens: list[int],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float | None,
        constraint: OutputConstraint | None,
        cancel: threading.Event,
    ) -> Generator[str, None, GenerationStats]:
        import llama_cpp

        self.load()
        llm = self._llm
        stats = GenerationStats(prompt_tokens=len(tokens))
        # An output that must be a call starts with text known in advance: evaluate it with
        # the prompt instead of sampling it token by token (against the grammar).
        forced = constraint.forced_prefix() if constraint is not None else ""
        prompt_length = len(tokens)
        if forced:
            tokens = [*tokens, *self.tokenize(forced)]

        # Reuse the KV cache for the prefix shared with an earlier prompt (a chat's history):
        # the live cache, or a snapshot when one shares more (another chat, or the prompt
        # variant with tools after a turn without them). Then evaluate the rest in small
        # steps so that a Stop is noticed during a long prompt.
        cached = common_prefix(llm.input_ids[: llm.n_tokens], tokens)
        snapshot = self.snapshots.best(tokens)
        if snapshot is not None and snapshot.shared > cached + MIN_SNAPSHOT_GAIN:
            cached = snapshot.shared if self._restore(snapshot.tokens, snapshot.data) else 0
        cached = min(cached, len(tokens) - 1)  # at least one token to refresh the logits
        stats.cached_tokens = cached
        llm.n_tokens = cached  # eval() drops the KV cache beyond n_tokens
        for start in range(cached, len(tokens), PREFILL_CHUNK):
            if cancel.is_set():
                stats.finish_reason = "cancelled"
                return stats
            llm.eval(tokens[start : start + PREFILL_CHUNK])

        gate = None
        if constraint is not None:
            try:
                gate = GrammarGate(
                    llama_cpp,
                    self._vocab,
                    self.grammars.gbnf(constraint),
                    prompt_tokens=prompt_length,  # the forced text goes through the grammar too
                    n_vocab=llama_cpp.llama_vocab_n_tokens(self._vocab),
                )
            except Exception:  # a schema feature the converter lacks: the prompt still says what to write
                logger.warning("No grammar for %s; generating without one.", constraint.describe(), exc_info=True)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        if forced:
            stats.completion_tokens += len(tokens) - prompt_length
            yield forced
        # The whole prompt is now in the KV cache, so generate() starts sampling at once.
        sampler = llm.generate(
            tokens,
            temp=temperature,
            top_p=top_p if top_p is not None else 0.95,
            top_k=40,
            min_p=0.05,
            repeat_penalty=1.0,
            logits_processor=[gate] if gate is not None else None,
        )
        try:
            for token in sampler:
                if cancel.is_set():
                    stats.finish_reason = "cancelled"
                    break
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    break
                stats.completion_tokens += 1
                piece = decoder.decode(llm.detokenize([token], special=False))
                if piece:
                    yield piece
                if stats.completion_tokens >= max_tokens or llm.n_tokens >= self.n_ctx - 1:
                    stats.finish_reason = "length"
                    break
        finally:
            sampler.close()
            if gate is not None:
                gate.close()
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail
        return stats
