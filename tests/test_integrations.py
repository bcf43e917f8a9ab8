"""The training frameworks users run the optimizers in, used for real: Lightning (gradient
clipping under AMP; on a CPU Lightning runs "16-mixed" as bf16, so fp16 is the GPU's to test),
transformers' Trainer (its param groups and lr), accelerate (a prepared
optimizer steps as a plain one) and timm's optimizer factory (our registry entries, its
no-decay groups). The `test` extra installs them."""
from __future__ import annotations

import copy

import pytest
import torch

import swd_kernels


def batches(seed, count=6, batch=16):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 16, generator=generator),
             torch.randn(batch, 4, generator=generator)) for _ in range(count)]


def small_model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32),
                               torch.nn.Tanh(), torch.nn.Linear(32, 4))


# ----- Lightning ------------------------------------------------------------------------------
def lightning_fit(model, data, precision, make_optimizer):
    L = pytest.importorskip("lightning")

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = model

        def training_step(self, batch, index):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x).float(), y)

        def configure_optimizers(self):
            return make_optimizer(self.parameters())

    trainer = L.Trainer(max_steps=len(data), precision=precision, gradient_clip_val=0.5,
                        accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    loader = torch.utils.data.DataLoader(data, batch_size=None)
    trainer.fit(Module(), loader)


def test_lightning_clips_under_bf16_amp_with_unscale_in_step_false(backend):
    """Lightning refuses gradient_clip_val with an optimizer that unscales inside its step;
    unscale_in_step=False lets it clip, and training equals the loop Lightning runs:
    autocast forward, backward, clip_grad_norm_, step."""
    data = batches(0)
    model = small_model(0)
    expected = copy.deepcopy(model)

    def make(params):
        return swd_kernels.AdamS(params, lr=1e-2, weight_decay=5e-4, backend=backend,
                                 unscale_in_step=False)

    lightning_fit(model, data, "bf16-mixed", make)
    opt = make(expected.parameters())
    for x, y in data:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(expected(x).float(), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(expected.parameters(), 0.5)
        opt.step()
        opt.zero_grad(set_to_none=True)
    for a, b in zip(model.parameters(), expected.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.equal(next(model.parameters()), next(small_model(0).parameters()))


def test_lightning_explains_why_default_adams_cannot_clip_under_amp(backend):
    with pytest.raises(RuntimeError, match="does not allow for gradient clipping"):
        lightning_fit(small_model(1), batches(1, count=2), "bf16-mixed",
                      lambda ps: swd_kernels.AdamS(ps, backend=backend))


# ----- transformers' Trainer -----------------------------------------------------------------
class RegressionModel(torch.nn.Module):
    """The smallest model the Trainer accepts: returns its loss in a dict."""

    def __init__(self):
        super().__init__()
        self.net = small_model(3)

    def forward(self, x, labels=None):
        out = self.net(x)
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


class Examples(torch.utils.data.Dataset):
    def __init__(self, data):
        self.x = torch.cat([x for x, _ in data])
        self.y = torch.cat([y for _, y in data])

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {"x": self.x[index], "labels": self.y[index]}


def test_transformers_trainer_builds_adams_from_optimizer_cls_and_kwargs(backend, tmp_path):
    """The Trainer gives AdamS its weight-decay groups (args.weight_decay; 0 for biases and
    norms) and the lr passed in the kwargs (not args.learning_rate); it then trains as the
    same AdamS does in a plain loop over the same batches."""
    transformers = pytest.importorskip("transformers")
    data = batches(3, count=1, batch=64)  # one batch: each step sees all 64 examples
    steps = 4
    model = RegressionModel()
    expected = copy.deepcopy(model)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=64,
        learning_rate=3e-3, weight_decay=5e-4, lr_scheduler_type="constant",
        max_grad_norm=0.0, report_to="none", use_cpu=True, save_strategy="no",
        logging_strategy="no", disable_tqdm=True, dataloader_drop_last=True)
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=Examples(data),
        optimizer_cls_and_kwargs=(swd_kernels.AdamS, {"lr": 3e-3, "backend": backend}))
    trainer.train()
    ours = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") \
        else trainer.optimizer
    assert isinstance(ours, swd_kernels.AdamS)
    decays = sorted((g["weight_decay"], len(g["params"])) for g in ours.param_groups)
    assert decays == [(0.0, 4), (5e-4, 2)]  # biases and LayerNorm weights undecayed
    assert all(g["lr"] == 3e-3 for g in ours.param_groups)
    # the same groups and steps in a plain loop; the Trainer shuffles the examples of the
    # one full batch per epoch, which changes the loss only by summation order
    names = {id(p): n for n, p in expected.named_parameters()}
    decayed = [p for p in expected.parameters()
               if names[id(p)].endswith("weight") and p.dim() > 1]
    others = [p for p in expected.parameters() if not any(p is q for q in decayed)]
    opt = swd_kernels.AdamS([dict(params=decayed, weight_decay=5e-4),
                             dict(params=others, weight_decay=0.0)], lr=3e-3,
                            backend=backend)
    everything = Examples(data)
    for _ in range(steps):
        loss = expected(everything.x, everything.y)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    for a, b in zip(model.parameters(), expected.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-4, atol=1e-5)


# ----- accelerate -----------------------------------------------------------------------------
def test_accelerate_prepared_adams_steps_as_the_plain_one(backend):
    accelerate = pytest.importorskip("accelerate")
    data = batches(4)
    model = small_model(4)
    expected = copy.deepcopy(model)
    accelerator = accelerate.Accelerator(cpu=True)
    prepared_model, prepared_opt = accelerator.prepare(
        model, swd_kernels.AdamS(model.parameters(), lr=1e-2, weight_decay=5e-4,
                                 backend=backend))
    for x, y in data:
        loss = torch.nn.functional.mse_loss(prepared_model(x), y)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(prepared_model.parameters(), 1.0)
        prepared_opt.step()
        prepared_opt.zero_grad()
    opt = swd_kernels.AdamS(expected.parameters(), lr=1e-2, weight_decay=5e-4,
                            backend=backend)
    for x, y in data:
        torch.nn.functional.mse_loss(expected(x), y).backward()
        torch.nn.utils.clip_grad_norm_(expected.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    for a, b in zip(model.parameters(), expected.parameters()):
        assert torch.equal(a, b)


# ----- timm -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, cls", [("adams", swd_kernels.AdamS),
                                       ("amsgrads", swd_kernels.AMSGradS),
                                       ("sgds", swd_kernels.SGDS),
                                       ("adais", swd_kernels.AdaiS)])
def test_timm_create_optimizer_v2_builds_ours_with_its_no_decay_groups(backend, name, cls):
    timm_optim = pytest.importorskip("timm.optim")
    import swd_kernels.integrations.timm as swd_timm

    swd_timm.register()
    swd_timm.register()  # twice changes nothing
    model = small_model(5)
    opt = timm_optim.create_optimizer_v2(model, name, lr=1e-2, weight_decay=5e-4,
                                         foreach=True, backend=backend)
    assert type(opt) is cls
    decays = sorted((g["weight_decay"], len(g["params"])) for g in opt.param_groups)
    assert decays == [(0.0, 4), (5e-4, 2)]  # timm leaves 1-d params (bias, norm) undecayed
    x, y = batches(5, count=1)[0]
    torch.nn.functional.mse_loss(model(x), y).backward()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(model.parameters(), before))
