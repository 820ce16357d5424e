"""The distributed CLIP loss equals the single-process loss of the global batch, in value
and in gradients: 2 gloo processes on CPU, rendezvous through a file (no network)."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from openwit.trainer.loss import clip_loss

BATCH, DIM, FEATURES, WORLD = 8, 12, 6, 2


def tiny_towers(seed: int = 0):
    """Two linear 'towers' and a temperature: enough to check the loss and its gradients."""
    g = torch.Generator().manual_seed(seed)
    image_w = torch.randn(DIM, FEATURES, generator=g, requires_grad=True)
    text_w = torch.randn(DIM, FEATURES, generator=g, requires_grad=True)
    scale = torch.tensor(2.0, requires_grad=True)
    images = torch.randn(BATCH, DIM, generator=g)
    texts = images + 0.5 * torch.randn(BATCH, DIM, generator=g)
    return image_w, text_w, scale, images, texts


def loss_and_grads(rows: slice):
    image_w, text_w, scale, images, texts = tiny_towers()
    image_f = F.normalize(images[rows] @ image_w, dim=-1)
    text_f = F.normalize(texts[rows] @ text_w, dim=-1)
    loss = clip_loss(image_f, text_f, scale)
    loss.backward()
    return loss.detach(), [image_w.grad, text_w.grad, scale.grad]


def worker(rank: int, store: str, results: str):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        per_rank = BATCH // WORLD
        loss, grads = loss_and_grads(slice(rank * per_rank, (rank + 1) * per_rank))
        # what DDP does: average the gradients (and we average the losses to compare)
        for tensor in [loss, *grads]:
            dist.all_reduce(tensor)
            tensor /= WORLD
        if rank == 0:
            torch.save({"loss": loss, "grads": grads}, results)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_process_loss_and_gradients_equal_the_global_batch(tmp_path):
    results = str(tmp_path / "results.pt")
    mp.spawn(worker, args=(str(tmp_path / "store"), results), nprocs=WORLD, join=True)
    distributed = torch.load(results)
    loss, grads = loss_and_grads(slice(None))  # one process, the whole batch
    assert torch.allclose(distributed["loss"], loss, atol=1e-6)
    for got, want in zip(distributed["grads"], grads):
        assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()


def test_a_rank_that_ignored_the_other_ranks_would_differ():
    """The check above can fail: the loss of each half alone is not the global loss."""
    halves = [loss_and_grads(slice(0, BATCH // 2))[0], loss_and_grads(slice(BATCH // 2, None))[0]]
    assert not torch.allclose(sum(halves) / 2, loss_and_grads(slice(None))[0], atol=1e-4)
