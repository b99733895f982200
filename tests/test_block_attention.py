"""Block attention: the context is assembled once per block into reused per-layer buffers."""
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import FIXTURES, load_fixture
from pipeline.build import build_context_method
from pipeline.descriptors import AvgPoolDescriptor
from pipeline.prompt_schedule import PromptSchedule
from pipeline.replay import build_model, rollout_config
from pipeline.retrieval import TopKRetrieval
from pipeline.rollout import CausalRollout
from wan.block_attention import RetrievedFrames


class LargestCat(TorchDispatchMode):
    """Largest output (elements) of any concatenation run inside the mode."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.cat.default:
            self.largest = max(self.largest, out.numel())
        return out


def test_context_is_copied_once_per_block_into_reused_buffers_and_the_retrieved_kv_released():
    trace = load_fixture("gen_latentmem_avgpool.pt")
    rcfg, model = rollout_config(trace, FIXTURES), build_model(trace["config"], FIXTURES)
    policy = build_context_method(rcfg, lambda: TopKRetrieval(AvgPoolDescriptor(), "avg_pool")).policy
    frames = 30  # 10 blocks: latentmem attends K = 6 retrieved frames from block 8 on
    rollout = CausalRollout(model, rcfg, policy, [trace["prompt_embeds"]], tuple(trace["noise"].shape[2:]), frames)
    noise = lambda shape: torch.zeros(shape)  # noqa: E731 (values do not matter here)
    storage = []
    for block in PromptSchedule.single("").blocks(frames, rcfg.num_frame_per_block):
        attn = rollout.begin_block(block)
        x = trace["noise"][:, block.frames[0] : block.frames[-1] + 1]
        retrieved = [s for s in attn.context.sources if isinstance(s, RetrievedFrames)]
        x0 = rollout.predict_x0(attn, x, 1000.0)  # the first call assembles every layer's context
        assert all(s.kv is None for s in retrieved)  # copied into the buffers: the gathered K/V are dropped
        keys, values = attn._layers[0]
        with LargestCat() as cats:
            x0 = rollout.predict_x0(attn, x0, 500.0)
            _, kv = rollout.recache(attn, x0, noise)
        assert cats.largest < keys[0].numel() // 4  # later calls concatenate nothing of context size
        assert attn._layers[0][0] is keys and attn._layers[0][1] is values
        rollout.end_block(block, attn, x0, kv)
        storage.append((keys.data_ptr(), keys.shape[1], bool(retrieved)))
    # the buffers grow while the window and the retrieved set fill (K = 6 from block 8 on), then every
    # block writes into the same memory
    assert [tokens for _, tokens, _ in storage] == [48] + [96] * 5 + [112, 160, 192, 192]
    assert len({ptr for ptr, _, _ in storage[8:]}) == 1 and all(r for _, _, r in storage[8:])
