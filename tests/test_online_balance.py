"""Online balancing in the trainer's loader: each epoch keeps a sample with MetaCLIP's
probability from the pool's per-entry counts, drawn anew per epoch and seeded."""
import functools

import pytest
import webdataset as wds
from scenes import jpeg, scene

from openwit.pipeline.stages import write
from openwit.schemas.record import Record
from openwit.trainer.config import TrainConfig
from openwit.trainer.data import balanced_epoch, entry_counts, list_shards, sample_pipeline
from openwit.trainer.train import train

HEAD, TAIL = 160, 10  # samples of entry 0, and of each of entries 1-4


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Real openwit shards (tar + Parquet index) whose samples match known entries."""
    root = tmp_path_factory.mktemp("online")
    image = root / "scene.jpg"
    image.write_bytes(jpeg(scene(1, (48, 48))))
    entries = [0] * HEAD + [e for e in range(1, 5) for _ in range(TAIL)]
    records = [Record(uid=f"{i:032x}", url=f"http://127.0.0.1/{i}.jpg", caption=f"a photo of entry {e}",
                      source=f"test:{i}", entry_ids=(e,), image_format="jpg", image_path=str(image),
                      sha256=f"{i:064x}", stored_sha256=f"{i:064x}")
               for i, e in enumerate(entries)]
    out = root / "shards"
    for shard in range(2):
        write.write_shard(shard, records[shard::2], str(out))
    return out


def kept_keys(shards, t, seed, epoch):
    raw = wds.DataPipeline(wds.SimpleShardList(list_shards(shards)), wds.tarfile_to_samples(),
                           functools.partial(balanced_epoch, counts=entry_counts(tuple(list_shards(shards))),
                                             threshold=t, seed=seed, epoch=epoch))
    return {int(sample["__key__"], 16) for sample in raw}


def test_counts_come_from_the_shards_indexes(shards):
    assert entry_counts(tuple(list_shards(shards))).tolist() == [HEAD, TAIL, TAIL, TAIL, TAIL]


def test_each_epoch_caps_the_head_keeps_the_tail_and_draws_anew(shards):
    tail = set(range(HEAD, HEAD + 4 * TAIL))
    epochs = [kept_keys(shards, t=20, seed=0, epoch=e) for e in range(3)]
    for kept in epochs:
        assert tail <= kept  # t/count >= 1: always kept
        head = kept - tail
        assert 6 <= len(head) <= 36  # ~Binomial(160, 20/160): mean 20, sd 4.2
    assert epochs[0] != epochs[1] != epochs[2]
    assert kept_keys(shards, t=20, seed=0, epoch=1) == epochs[1]  # seeded: the same again
    assert kept_keys(shards, t=20, seed=5, epoch=1) != epochs[1]
    assert len(kept_keys(shards, t=HEAD, seed=0, epoch=0)) == HEAD + 4 * TAIL  # t above every count


def test_the_training_loader_sees_the_balanced_epoch(shards, tmp_path):
    cfg = TrainConfig(shards=str(shards), output=str(tmp_path / "m.pt"), online_balance=20, batch_size=8,
                      steps=4, shuffle_buffer=16)
    seen = sum(1 for _ in sample_pipeline(cfg, epoch=2, train=True))
    assert seen == len(kept_keys(shards, t=20, seed=0, epoch=2))
    result = train(cfg)  # trains through it
    assert result.checkpoint and (tmp_path / "m.pt").exists()
