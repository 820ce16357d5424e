"""The distributed CLIP loss equals the single-process loss of the global batch, in value
and in gradients: 2 gloo processes on CPU, rendezvous through a file (no network)."""

import os

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
        dist.barrier()  # neither rank tears the group down while the other still uses it
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


def test_ranks_get_disjoint_shards_covering_all():
    from openwit.trainer.data import rank_shards

    shards = [f"{i:05d}.tar" for i in range(7)]
    parts = [rank_shards(shards, rank, 3) for rank in range(3)]
    assert sorted(sum(parts, [])) == shards and all(parts)
    with pytest.raises(ValueError, match="cannot feed 8 ranks"):
        rank_shards(shards, 0, 8)


def ddp_rank(rank: int, cfg):
    """What torchrun sets up for each process, with a file rendezvous instead of TCP."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "GLOO_SOCKET_IFNAME": "lo"})
    from openwit.trainer.train import train

    train(cfg)


@pytest.mark.timeout(240)
def test_ddp_trains_with_two_cpu_ranks(tmp_path):
    """The torchrun code path (WORLD_SIZE=2: DDP, gloo on CPU, per-rank shards, the gathered
    loss): rank 0 logs and saves a plain (unwrapped) checkpoint."""
    import json

    from test_trainer import write_shards

    from openwit.trainer.config import TrainConfig

    shards = write_shards(tmp_path / "shards", num_samples=128, per_shard=32)
    output = tmp_path / "ddp.pt"
    cfg = TrainConfig(shards=str(shards), steps=4, batch_size=16, output=str(output), log_every=1,
                      dist_init_method=f"file://{tmp_path / 'rendezvous'}")
    mp.spawn(ddp_rank, args=(cfg,), nprocs=2, join=True)
    steps = [json.loads(line) for line in (tmp_path / "ddp.pt.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [0, 1, 2, 3]
    payload = torch.load(output, weights_only=True)
    assert payload["step"] == 4 and not any(k.startswith("module.") for k in payload["model"])
