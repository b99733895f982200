"""`deepforcing` (Deep Forcing, arXiv 2512.05081): deep sink + participative compression.

No reference code exists; the choices are SPEC_NEXT §1.3's, each a named option. The window of
`window` frames is filled as

    [ sink ‖ compressed: C frames' worth of tokens ‖ recent clean frames ‖ current block ]

Frames leaving the recent window join the compressed region's candidates. When the attended
tokens would exceed the window, each layer keeps its own top C·T candidate tokens (C = window -
sink - recent - nf) by the importance the block's first call gives them: attention of the current
block's queries (at t = 1000) and of the recent clean frames' queries (saved in their recache pass)
to every candidate key, summed over queries, averaged over heads. The selection stays fixed for the
block's remaining calls. Kept tokens are sorted by (frame, token), cut into pseudo-frames of T
tokens and placed at contiguous temporal positions after the sink; each keeps its own height /
width position. Keys are cached un-rotated and rotated once at their assigned position, which equals
the paper's incremental phase shift without accumulating rounding error.

Scores leave the temporal rotation out (height / width kept) because a candidate's temporal position
is only assigned after the selection [our choice]. With `hysteresis` the region shrinks to C - nf
frames and grows back by one block, like the paper's 21 -> 16 frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from pipeline.context.policy import PolicySetup, write_back
from pipeline.context.window_recache import CleanLatents, SwitchOptions, WindowRecache
from pipeline.prompt_schedule import Block
from wan.block_attention import BlockContext, CachedFrames
from wan.rope import grid_position

class TokenScorer(Protocol):
    def __call__(self, q: torch.Tensor, k: torch.Tensor, candidates: slice, frames: torch.Tensor) -> torch.Tensor:
        """q: [B, Sq, n, d] scoring queries; k: [B, Sk, n, d] every key they would attend; `candidates`
        the columns of k that compete; frames: [B, M] their source frames -> importance [B, M]."""


class AttentionScore:
    """Sum over queries of the attention probability (`softmax`) or the scaled logit (`logits`, Eq. 7), head mean."""

    def __init__(self, probabilities: bool):
        self.probabilities = probabilities

    def __call__(self, q, k, candidates, frames):
        q = q.float() * q.shape[-1] ** -0.5
        total = 0
        for head in range(q.shape[2]):  # one head at a time bounds memory at full size
            qh, kh = q[:, :, head], k[:, :, head].float()
            if self.probabilities:
                logits = torch.einsum("bqd,bkd->bqk", qh, kh)  # [B, Sq, Sk]: the only full-size temporary
                probs = (logits[..., candidates] - logits.logsumexp(dim=-1, keepdim=True)).exp_()
                total = total + probs.sum(dim=1)
            else:  # a sum of logits over queries is the logit of the summed query
                total = total + torch.einsum("bd,bkd->bk", qh.sum(dim=1), kh[:, candidates])
        return total / q.shape[2]


@dataclass
class TokenStore:
    """Candidate / kept tokens of one layer: keys (before RoPE), values and where each token came from."""

    k: torch.Tensor  # [B, M, n, d]
    v: torch.Tensor
    frame: torch.Tensor  # [B, M] source frame
    token: torch.Tensor  # [B, M] index within its frame (row-major over the patch grid)

    def append(self, k: torch.Tensor, v: torch.Tensor, frames: list[int], tokens_per_frame: int) -> None:
        """k, v: [B, m, T, n, d] of whole frames."""
        b = k.shape[0]
        frame = torch.tensor(frames, device=self.frame.device).repeat_interleave(tokens_per_frame).expand(b, -1)
        token = torch.arange(tokens_per_frame, device=self.token.device).repeat(len(frames)).expand(b, -1)
        self.k, self.v = torch.cat([self.k, k.flatten(1, 2)], 1), torch.cat([self.v, v.flatten(1, 2)], 1)
        self.frame, self.token = torch.cat([self.frame, frame], 1), torch.cat([self.token, token], 1)

    def keep(self, index: torch.Tensor) -> None:
        """index: [B, C] ascending positions to keep (so the store stays in (frame, token) order)."""
        gather = index[..., None, None].expand(-1, -1, *self.k.shape[2:])
        self.k, self.v = self.k.gather(1, gather), self.v.gather(1, gather)
        self.frame, self.token = self.frame.gather(1, index), self.token.gather(1, index)

    @property
    def size(self) -> int:
        return self.k.shape[1]


@dataclass
class CompressedTokens:
    """The compressed region as a context source; compresses each layer on its first use in the block."""

    policy: "DeepForcingPolicy"
    first_position: int
    keep: int | None  # tokens to keep per layer this block; None: no compression
    selected: set = field(default_factory=set)

    def keys_values(self, layer, q, k):
        store = self.policy.stores[layer]
        if self.keep is not None and layer not in self.selected:
            self.policy.compress(layer, q, k, self.keep)
            self.selected.add(layer)
        t = self.first_position + torch.arange(store.size, device=store.k.device) // self.policy.tokens_per_frame
        h, w = grid_position(store.token, self.policy.grid_hw)
        return self.policy.rope.rotate_tokens(store.k, t.unsqueeze(0), h, w), store.v

    def describe(self, row):
        """[frame, pseudo-frame position, tokens] per run of tokens from one frame at one position (layer 0)."""
        store = self.policy.stores[0]
        pos = (self.first_position + torch.arange(store.size) // self.policy.tokens_per_frame).tolist()
        runs: list[list[int]] = []
        for f, p in zip(store.frame[row].tolist(), pos):
            if runs and runs[-1][:2] == [f, p]:
                runs[-1][2] += 1
            else:
                runs.append([f, p, 1])
        return runs


class DeepForcingPolicy:
    def __init__(self, setup: PolicySetup, window: int, sink_size: int, recent: int = 2, scorer: TokenScorer | None = None,
                 current_queries: bool = True, clean_queries: bool = True, hysteresis: bool = False,
                 switch: SwitchOptions = SwitchOptions()):
        """current_queries / clean_queries: which queries score the candidates (the block's at t = 1000,
        the recent clean frames' from their recache pass; the paper's best variant uses both)."""
        g = setup.geometry
        nf = g.frames_per_block
        self.capacity = window - sink_size - recent - nf  # C: compressed frames' worth
        if self.capacity < (nf + 1 if hysteresis else 1):
            raise ValueError(f"window {window} - sink {sink_size} - recent {recent} - block {nf} leaves {self.capacity} "
                             "frames for compressed tokens; need at least 1 (a block more with hysteresis)")
        self.window, self.sink_size, self.recent, self.nf = window, sink_size, recent, nf
        self.scorer = scorer or AttentionScore(probabilities=True)
        self.current_queries, self.clean_queries, self.hysteresis = current_queries, clean_queries, hysteresis
        self.rope, self.grid_hw, self.tokens_per_frame = setup.rope, g.grid_hw, g.tokens_per_frame
        # the cache holds the sink, the recent clean frames and the block; older frames move to `stores`
        self.cache = g.window_cache(sink_size + recent + nf, sink_size)
        empty = torch.zeros(g.batch, 0, g.num_heads, g.head_dim, device=g.device, dtype=g.dtype)
        index = torch.zeros(g.batch, 0, dtype=torch.long, device=g.device)
        self.stores = [TokenStore(empty, empty, index, index) for _ in range(g.num_layers)]
        self.clean_q: list[torch.Tensor | None] = [None] * g.num_layers  # [B, recent * T, n, d] per layer
        self.recache = WindowRecache(switch, setup.clean_pass, setup.rope, g.grid_hw, nf)

    def switch(self, block: Block, latents: CleanLatents) -> dict:
        """LongLive's window recache of the whole frames still cached (sink, recent, last block), at the positions the
        last block gave them; the compressed tokens keep the old prompt's K/V (their frames' latents are gone)."""
        frames = self.cache.frames
        base = self.stores[0].size // self.tokens_per_frame
        positions = [s if s < self.sink_size else base + s for s in range(len(frames))]
        return self.recache(self.cache, frames, positions, block.frames[0] > self.window, block, latents)

    def begin_block(self, block: Block) -> BlockContext:
        leaving = self.cache.overflow(len(block.frames))
        if leaving:
            k, v = self.cache.read_all_layers(leaving)
            frames = [self.cache.frame_at(s) for s in leaving]
            for layer, store in enumerate(self.stores):
                store.append(k[layer], v[layer], frames, self.tokens_per_frame)
        slots = self.cache.admit(block.frames)
        stored = self.stores[0].size // self.tokens_per_frame
        keep = None
        if self.cache.length + stored > self.window:
            target = self.capacity - self.nf if self.hysteresis else self.capacity
            keep = target * self.tokens_per_frame
            stored = target
        sink = list(range(min(self.sink_size, slots[0])))
        recent = list(range(len(sink), slots[0]))
        self._scoring_slots = (self.cache.index(sink), self.cache.index(recent))  # what `compress` reads, per layer
        sources = []
        if sink:
            sources.append(CachedFrames(self.cache, sink, sink, self.rope, self.grid_hw))
        if self.stores[0].size:
            sources.append(CompressedTokens(self, len(sink), keep))
        base = stored  # recent and current frames follow the compressed pseudo-frames
        if recent:
            sources.append(CachedFrames(self.cache, recent, [base + s for s in recent], self.rope, self.grid_hw))
        positions = [base + s for s in slots]
        return BlockContext(block.frames, sources, positions, positions, slots)

    def _hw_only(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate x: [B, F*T, n, d] of whole frames along height / width only (temporal position 0)."""
        frames = x.shape[1] // self.tokens_per_frame
        return self.rope.rotate(x, torch.zeros(frames, dtype=torch.long, device=x.device), self.grid_hw)

    def compress(self, layer: int, q: torch.Tensor, k: torch.Tensor, keep: int) -> None:
        """Keep the `keep` most important candidate tokens of `layer`. q, k: [B, nf*T, n, d] of the block's first call."""
        store = self.stores[layer]
        sink, recent = self._scoring_slots
        sink_k, recent_k = self.cache.read(layer, sink)[0], self.cache.read(layer, recent)[0]
        h, w = grid_position(store.token, self.grid_hw)
        zeros = torch.zeros_like(store.token)
        keys = torch.cat([self._hw_only(sink_k), self.rope.rotate_tokens(store.k, zeros, h, w).to(k.dtype),
                          self._hw_only(recent_k), self._hw_only(k)], dim=1)
        queries = []
        if self.current_queries:
            queries.append(self._hw_only(q))
        if self.clean_queries and self.clean_q[layer] is not None:
            queries.append(self._hw_only(self.clean_q[layer]))
        candidates = slice(sink_k.shape[1], sink_k.shape[1] + store.size)
        scores = self.scorer(torch.cat(queries, 1), keys, candidates, store.frame)
        store.keep(scores.topk(keep, dim=1).indices.sort(dim=1).values)

    def before_recache(self, context, x0) -> None:
        pass

    def end_block(self, block, context, x0, kv) -> dict:
        write_back(self.cache, context, kv)
        for layer, q in enumerate(kv.q if self.recent else []):
            saved = q if self.clean_q[layer] is None else torch.cat([self.clean_q[layer], q], 1)
            self.clean_q[layer] = saved[:, -self.recent * self.tokens_per_frame :]
        return {}

    def extras(self) -> dict:
        return {}

    def close(self) -> None:
        pass
