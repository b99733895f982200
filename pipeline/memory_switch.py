"""What the retrieval memory may bring back after a prompt switch (`model_kwargs.memory_switch_policy`).

Every history-bank entry carries the segment (prompt) it was generated in. At a segment boundary
the policy decides which entries stay retrievable and whether an old entry's K/V, computed under an
old prompt, must be recomputed before a block of the new segment attends it:

  scoped               (default) only the current segment's entries: old-prompt K/V is never
                       retrieved; memory restarts once the new segment's frames pass the recency guard
  global               every entry, segments ignored (the paper's rule as written)
  recache_on_retrieve  every entry; an old-segment entry's K/V is recomputed from its stored clean
                       latent under the current prompt the first time a segment retrieves it

At a hard cut (`#`) every policy makes the old entries ineligible. Entries that can never be
retrieved again leave the bank at once, so they hold no budget. The policy is an object built
once (pipeline/build.py); the memory asks it without knowing which one it holds.
"""
from __future__ import annotations

from typing import Protocol

from pipeline.prompt_schedule import Block


class MemorySwitchPolicy(Protocol):
    name: str  # the config's memory_switch_policy, for logs
    keeps_latents: bool  # the bank keeps every entry's clean latent (to re-encode it)

    def floor(self, block: Block, floor: int) -> int:
        """The oldest segment whose entries stay retrievable from `block` on (`floor`: before it)."""

    def stale(self, segment: int, scene: int) -> bool:
        """Whether an entry of `segment` must be re-encoded before a block of segment `scene` attends it."""


class ScopedMemory:
    name = "scoped"
    keeps_latents = False

    def floor(self, block: Block, floor: int) -> int:
        return block.scene

    def stale(self, segment: int, scene: int) -> bool:
        return False


class GlobalMemory:
    name = "global"
    keeps_latents = False

    def floor(self, block: Block, floor: int) -> int:
        return block.scene if block.cut else floor

    def stale(self, segment: int, scene: int) -> bool:
        return False


class RecacheOnRetrieve(GlobalMemory):
    name = "recache_on_retrieve"
    keeps_latents = True

    def stale(self, segment: int, scene: int) -> bool:
        return segment != scene


MEMORY_SWITCH_POLICIES: dict[str, type] = {
    "scoped": ScopedMemory, "global": GlobalMemory, "recache_on_retrieve": RecacheOnRetrieve}
