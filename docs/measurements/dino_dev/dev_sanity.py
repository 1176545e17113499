"""DINO development runs (docs/dino.md): pretrain on seed 0's training sample, then the frozen probe/kNN
of the student and the teacher against the random-initialised encoder. Usage (from the repository root):

    python docs/measurements/dino_dev/dev_sanity.py '{"epochs": 20, "lr": 1e-3, "dino": {...}}'

keys: epochs, lr, classes (null = all ten), train_per_class, bs, warmup, dino (DINOConfig fields), aug
(pretraining AugmentConfig fields over the preset's). Prints one JSON line per epoch and the result line.
"""
import json, sys, time
import torch
from mnist_ssl.config import AugmentConfig, OptimConfig
from mnist_ssl.objectives.registry import RunConfig
from mnist_ssl.engine.loop import train
from mnist_ssl.evaluation.probe import extract_features, linear_probe, knn_eval, knn_weighted_eval
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives.dino import DINO, DINOConfig, PRESET
from mnist_ssl.experiment.data import make_view, prepare_data
from mnist_ssl.experiment.runtime import seed_everything

torch.set_num_threads(1)
a = json.loads(sys.argv[1])
epochs, lr, classes = a.get("epochs", 10), a.get("lr", 5e-4), a.get("classes", [0, 1, 2])
cfg = RunConfig(method="dino", seed=0)
cfg.data.classes = classes
cfg.data.train_per_class = a.get("train_per_class", 100)
data = prepare_data(cfg, torch.device("cpu"))
pre = data.train_images

def frozen(enc):
    tr = extract_features(enc, data.train_images.float() / 255)
    te = extract_features(enc, data.test_images.float() / 255)
    y, yt = data.train_targets.numpy(), data.test_targets.numpy()
    return {"probe": round(linear_probe(tr, y, te, yt)["accuracy"], 4), "knn5": round(knn_eval(tr, y, te, yt, k=5)["accuracy"], 4),
            "knn20w": round(knn_weighted_eval(tr, y, te, yt)["accuracy"], 4)}

seed_everything(0)
enc = ViTEncoder(cfg.model)
rand = frozen(enc)
obj = DINO(enc, DINOConfig(**{**a.get("dino", {}), "final_encoder": "student"}))
class EMA:
    def on_step(self, s): s.module.after_step(s.step, s.epochs * s.steps_per_epoch)
    def on_epoch_end(self, s, r): print(r["epoch"], round(r["loss"], 4), {k: round(v, 3) for k, v in r["terms"].items()}, r["time_s"], flush=True)
aug = AugmentConfig(**{**PRESET["pretrain_augment"], **a.get("aug", {})})
t0 = time.perf_counter()
seed_everything(0)
train(obj, pre, None, OptimConfig(epochs=epochs, batch_size=a.get("bs", 32), lr=lr, grad_clip=3.0, warmup_epochs=min(a.get("warmup", 1), epochs)),
      phase="pretrain", view=make_view(aug), callbacks=[EMA()])
t = time.perf_counter() - t0
out = {"args": a, "n_pretrain": len(pre), "n_test": len(data.test_images), "random_init": rand, "student": frozen(obj.encoder), "teacher": frozen(obj.teacher_encoder), "pretrain_s": round(t, 1)}
print(json.dumps(out))
