"""The shared training loop: LR schedule, margin ramp, exact resume, refusing other settings,
and one-line errors from DataLoader workers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from speaker.models.heads import AAMSoftmax
from speaker.training.trainer import (
    CheckpointTarget,
    DistContext,
    Schedule,
    SpeakerNet,
    Trainer,
    config_differences,
    epoch_seed,
    init_distributed,
    scaled_schedule,
    unwrap_worker_errors,
)
from store.errors import UserError

# ---- schedule ------------------------------------------------------------------------------


def test_learning_rate_warms_up_linearly_then_decays_exponentially_to_final_lr():
    s = Schedule(lr=0.1, final_lr=1e-3, warmup_epochs=2)
    total = 10

    def decay(e: float) -> float:  # the direct formula: lr * (final/lr) ** (e / total)
        return 0.1 * (1e-3 / 0.1) ** (e / total)

    assert s.learning_rate(0.0, total) == 0.0
    for e in (0.25, 0.5, 1.0, 1.5, 1.99):
        assert s.learning_rate(e, total) == pytest.approx(decay(e) * e / 2, rel=1e-12)
    for e in (2.0, 3.3, 7.0, 9.99):
        assert s.learning_rate(e, total) == pytest.approx(decay(e), rel=1e-12)
    assert s.learning_rate(total, total) == pytest.approx(1e-3, rel=1e-12)
    assert s.learning_rate(total + 5, total) == pytest.approx(1e-3, rel=1e-12)  # clamped
    # linear in the warm-up: equal steps in epoch give equal steps in lr/decay
    ratios = [s.learning_rate(e, total) / decay(e) for e in (0.5, 1.0, 1.5)]
    assert ratios == pytest.approx([0.25, 0.5, 0.75])
    # monotone decay after warm-up
    lrs = [s.learning_rate(2 + 0.1 * i, total) for i in range(81)]
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))


def test_learning_rate_depends_on_total_epochs():
    s = Schedule(lr=0.1, final_lr=1e-3, warmup_epochs=0)
    assert s.learning_rate(5, 10) == pytest.approx(0.01)
    assert s.learning_rate(5, 20) == pytest.approx(0.1 * math.sqrt(0.1))  # halfway in log
    assert s.learning_rate(0, 10) == 0.1  # no warm-up


def test_scaled_schedule_is_wespeakers_at_150_epochs_and_stretches_warmup_on_short_runs():
    long = scaled_schedule(150)
    assert (long.optimizer, long.lr, long.warmup_epochs) == ("sgd", 0.1, 6.0)
    assert (long.margin_increase_start, long.margin_fix_start) == (18.75, 40.0)
    short = scaled_schedule(8, "adamw", 1e-3, final_lr=5e-6)
    assert (short.lr, short.final_lr, short.weight_decay) == (1e-3, 5e-6, 1e-2)
    assert (short.warmup_epochs, short.margin_increase_start, short.margin_fix_start) == (
        1.0, 1.0, 4.0)
    assert scaled_schedule(4, "sgd", 0.02).final_lr == pytest.approx(2e-4)


def test_margin_ramp():
    m = Schedule(margin=0.2, margin_increase_start=2, margin_fix_start=4).margin_scheduler()
    assert m.margin(0.0) == m.margin(0.99) == 0.0
    assert 0.0 < m.margin(1.5) < m.margin(2.5) < 0.2
    assert m.margin(3.0) == m.margin(10.0) == 0.2


def test_epoch_seed_is_distinct_per_run_and_epoch():
    seeds = {epoch_seed(s, e) for s in range(5) for e in range(50)}
    assert len(seeds) == 250 and all(0 <= x < 2**63 for x in seeds)


def test_init_distributed_alone(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert init_distributed("cpu") == DistContext()
    assert DistContext().is_main and not DistContext(rank=1, world_size=2).is_main


# ---- config comparison ---------------------------------------------------------------------


def test_config_differences():
    saved = {"epochs": 2, "workers": 0, "schedule": {"lr": 0.1, "margin": 0.2},
             "augment": {"speeds": (1.0,)}, "data": {"train": Path("/a")}}
    same = {"epochs": 2, "workers": 4, "schedule": {"lr": 0.1, "margin": 0.2},
            "augment": {"speeds": [1.0]}, "data": {"train": "/a"}}
    assert config_differences(saved, same) == []  # workers ignored; tuple == list; Path == str
    other = {**same, "epochs": 3, "schedule": {"lr": 0.1}, "new": 1}
    assert config_differences(saved, other) == [
        "epochs: 2 -> 3", "new: null -> 1", "schedule.margin: 0.2 -> null"]


# ---- the loop on a synthetic task ----------------------------------------------------------


class Features(Dataset):
    """32 noisy fbank-shaped inputs of 4 classes; item i of epoch e is fixed by (i, e)."""

    def __init__(self) -> None:
        self.epoch = 0

    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(1000 * self.epoch + i)
        label = i % 4
        return torch.randn(20, 80, generator=g) + label, label


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed_dim = 8
        self.proj = nn.Linear(80, 8)
        self.drop = nn.Dropout(0.3)  # draws from torch's global RNG: seeded per epoch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(x)).mean(1)


def ce_step(net, batch, epoch):
    x, y = batch
    _, logits, _ = net(x, y)
    loss = nn.functional.cross_entropy(logits, y)
    return loss, {"loss": loss.item()}


SGD_SCHEDULE = Schedule(lr=0.1, final_lr=0.01, warmup_epochs=1, margin_increase_start=1,
                        margin_fix_start=2)


def make_trainer(path: Path, epochs: int = 3, config: dict | None = None,
                 label_map: dict | None = None, evaluate=None,
                 schedule: Schedule = SGD_SCHEDULE) -> Trainer:
    torch.manual_seed(0)
    net = SpeakerNet(Tiny(), AAMSoftmax(8, 4))
    return Trainer(
        net,
        schedule,
        epochs=epochs,
        steps_per_epoch=4,
        checkpoint=CheckpointTarget(path, "test_tiny", {}, label_map or {"speakers": list("abcd")},
                                    config or {"epochs": epochs, "workers": 0}),
        seed=5,
        evaluate=evaluate,
        eval_every=2,
    )


def fit(trainer: Trainer) -> None:
    data = Features()

    def batches(epoch: int):
        data.epoch = epoch
        return DataLoader(data, batch_size=8, shuffle=True)  # shuffle: global RNG too

    trainer.fit(batches, ce_step)


@pytest.fixture(autouse=True)
def tiny_arch():
    """Register the test architecture so checkpoints of it can be loaded."""
    from speaker.models import _REGISTRY, _Entry

    _REGISTRY["test_tiny"] = _Entry(lambda: Tiny(), "fbank")
    yield
    del _REGISTRY["test_tiny"]


class Stop(Exception):
    pass


def bias(model: nn.Module) -> dict[str, float]:
    """A stand-in evaluation: any number that depends on the weights."""
    return {"eer": model.proj.bias[0].item()}


def test_resume_after_each_epoch_matches_uninterrupted(tmp_path):
    full = make_trainer(tmp_path / "full.pt", evaluate=bias)
    fit(full)
    assert [h["epoch"] for h in full.history] == [1, 2, 3]
    assert "eer" in full.history[1] and "eer" in full.history[2] and "eer" not in full.history[0]

    path = tmp_path / "part.pt"
    for stop_after in (1, 2):
        part = make_trainer(path, evaluate=bias)
        assert part.resume() == (stop_after == 2)
        original = part._save

        def save(epochs_done, original=original, stop_after=stop_after):
            original(epochs_done)
            if epochs_done == stop_after:
                raise Stop

        part._save = save
        with pytest.raises(Stop):
            fit(part)
    last = make_trainer(path, evaluate=bias)
    assert last.resume() and last.start_epoch == 2
    fit(last)
    for (name, a), b in zip(full.net.state_dict().items(), last.net.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert last.history == full.history
    sa, sb = full.optimizer.state_dict()["state"], last.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"]) for k in sa)


def test_adamw_resume_matches_uninterrupted(tmp_path):
    adamw = Schedule(optimizer="adamw", lr=3e-3, final_lr=3e-5, warmup_epochs=1,
                     weight_decay=1e-2, margin_increase_start=1, margin_fix_start=2)
    full = make_trainer(tmp_path / "full.pt", schedule=adamw)
    assert isinstance(full.optimizer, torch.optim.AdamW)
    fit(full)
    part = make_trainer(tmp_path / "part.pt", schedule=adamw)
    original = part._save

    def save(epochs_done):
        original(epochs_done)
        if epochs_done == 1:
            raise Stop

    part._save = save
    with pytest.raises(Stop):
        fit(part)
    last = make_trainer(tmp_path / "part.pt", schedule=adamw)
    assert last.resume() and last.start_epoch == 1
    fit(last)
    for (name, a), b in zip(full.net.state_dict().items(), last.net.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    sa, sb = full.optimizer.state_dict()["state"], last.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)


def test_resume_keeps_the_thread_count_of_the_run(tmp_path):
    """The automatic thread count follows --workers, which a resume may change; the
    result depends on it on CPU, so a resumed run goes on with the saved count."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        first = make_trainer(tmp_path / "run.pt", epochs=1)
        fit(first)
        torch.set_num_threads(2)
        again = make_trainer(tmp_path / "run.pt", epochs=1)
        assert again.resume() and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_build_optimizer_follows_the_schedule():
    params = [nn.Parameter(torch.zeros(3))]
    sgd = SGD_SCHEDULE.build_optimizer(params)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    adamw = Schedule(optimizer="adamw", lr=1e-3, momentum=0.8,
                     weight_decay=0.05).build_optimizer(params)
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.defaults["betas"] == (0.8, 0.999) and adamw.defaults["weight_decay"] == 0.05


def test_without_resume_state_is_not_restored(tmp_path):
    """Guards the test above: a restart without the checkpoint ends elsewhere."""
    full = make_trainer(tmp_path / "full.pt")
    fit(full)
    restarted = make_trainer(tmp_path / "other.pt")
    restarted.start_epoch = 1  # skip epoch 1 without loading its result
    fit(restarted)
    assert not torch.equal(full.net.model.proj.weight, restarted.net.model.proj.weight)


def test_resume_refuses_other_settings(tmp_path):
    path = tmp_path / "m.pt"
    trainer = make_trainer(path, epochs=1)
    fit(trainer)
    assert make_trainer(path, epochs=1, config={"epochs": 1, "workers": 3}).resume()
    with pytest.raises(UserError, match=r"other settings \(epochs: 1 -> 2\)"):
        make_trainer(path, epochs=2).resume()
    with pytest.raises(UserError, match="label map"):
        make_trainer(path, epochs=1, label_map={"speakers": list("abce")}).resume()


def test_resume_refuses_a_checkpoint_without_state(tmp_path):
    from speaker.models.checkpoint import save_checkpoint

    path = tmp_path / "export.pt"
    save_checkpoint(path, arch="test_tiny", arch_kwargs={}, model=Tiny(), head=AAMSoftmax(8, 4),
                    label_map={"speakers": list("abcd")}, config={"epochs": 3, "workers": 0})
    with pytest.raises(UserError, match="no training state"):
        make_trainer(path).resume()
    assert make_trainer(tmp_path / "none.pt").resume() is False


def test_non_finite_loss_stops(tmp_path):
    trainer = make_trainer(tmp_path / "m.pt")

    def bad_step(net, batch, epoch):
        loss, logs = ce_step(net, batch, epoch)
        return loss * float("nan"), logs

    with pytest.raises(UserError, match="NaN/inf at epoch 1 step 0: training diverged"):
        trainer.fit(lambda e: DataLoader(Features(), batch_size=8), bad_step)
    assert not (tmp_path / "m.pt").exists()


# ---- DataLoader worker errors --------------------------------------------------------------


class Broken(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        if i == 2:
            raise UserError(f"cannot read audio /data/{i}.wav: no such file")
        return torch.zeros(1)


@pytest.mark.parametrize("workers", [0, 1])
def test_worker_user_error_is_one_line(workers):
    loader = DataLoader(Broken(), batch_size=1, num_workers=workers)
    got = []
    with pytest.raises(UserError) as info:
        for batch in unwrap_worker_errors(loader):
            got.append(batch)
    assert str(info.value) == "cannot read audio /data/2.wav: no such file"
    assert len(got) == 2


def test_other_errors_pass_through():
    def gen():
        yield 1
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        list(unwrap_worker_errors(gen()))
    assert list(unwrap_worker_errors([1, 2])) == [1, 2]
