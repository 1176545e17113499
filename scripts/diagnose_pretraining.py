"""What pretraining learns, on one development seed: frozen probes before and after, and the
masked-patch error against the mean-patch predictor.

    python scripts/diagnose_pretraining.py --method mae --seed 100 [--set KEY=VALUE ...] [--out FILE.jsonl]

Builds the method's config as `reproduce` does (its preset, then --set), pretrains on the run's
pretraining images, and prints one JSON line: the logistic-regression probe (standardised
features, C=1) and 5-NN (cosine) of the CLS token and of the mean patch token, at random
initialisation ("random") and after pretraining ("pre"); logistic regression and 1-NN on raw
pixels of the same sample ("pixels"); for masked methods the MSE of the reconstruction on the
masked patches of the test images against that of predicting each position's mean training
patch ("masked_mse", "meanpatch_mse": a reconstruction that does not beat the latter has
learned nothing). docs/results.md, "Why pretraining learned nothing", used it on seeds 100-101.
"""
import json, sys, time, argparse
import numpy as np, torch
from mnist_ssl.config import apply_overrides, merge
from mnist_ssl.experiment.data import clip_builder, make_view, prepare_data
from mnist_ssl.experiment.runtime import seed_everything, setup_threads
from mnist_ssl.models.vit import ViTEncoder
from mnist_ssl.objectives.registry import RunConfig, build_objective, get_method
from mnist_ssl.engine.loop import train
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.neighbors import KNeighborsClassifier

ap = argparse.ArgumentParser()
ap.add_argument("--method", default="mae")
ap.add_argument("--seed", type=int, default=100)
ap.add_argument("--set", action="append", default=[])
ap.add_argument("--tag", default="")
ap.add_argument("--out", default=None, help="append the JSON line to this file")
a = ap.parse_args()
setup_threads(1)
cfg = RunConfig(method=a.method, seed=a.seed)
spec = get_method(a.method)
cfg = RunConfig.from_dict(merge(cfg.to_dict(), spec.preset))
cfg = apply_overrides(cfg, a.set)
cfg.validate()
dev = torch.device("cpu")
data = prepare_data(cfg, dev)

@torch.no_grad()
def feats(enc, imgs):
    enc.eval()
    out = []
    for i in range(0, len(imgs), 256):
        h = enc.encode(imgs[i:i+256].float() / 255)
        out.append(torch.cat([h[:, 0], h[:, 1:].mean(1)], 1))
    return torch.cat(out).numpy()

def probes(enc):
    tr, te = feats(enc, data.train_images), feats(enc, data.test_images)
    ytr, yte = data.train_targets.numpy(), data.test_targets.numpy()
    D = enc.dim
    res = {}
    for name, sl in [("cls", slice(0, D)), ("mean", slice(D, 2 * D))]:
        s = StandardScaler().fit(tr[:, sl])
        lp = LogisticRegression(C=1.0, max_iter=3000).fit(s.transform(tr[:, sl]), ytr)
        res[f"lp_{name}"] = round(100 * lp.score(s.transform(te[:, sl]), yte), 2)
        x1 = tr[:, sl] / np.linalg.norm(tr[:, sl], axis=1, keepdims=True)
        x2 = te[:, sl] / np.linalg.norm(te[:, sl], axis=1, keepdims=True)
        kn = KNeighborsClassifier(5).fit(x1, ytr)
        res[f"knn_{name}"] = round(100 * kn.score(x2, yte), 2)
    return res

@torch.no_grad()
def recon_err(obj):
    """Masked-patch MSE on the test images against the mean-patch predictor (the package's check)."""
    from mnist_ssl.experiment.stages import reconstruction_check

    check = reconstruction_check(obj, data.train_images, data.test_images)
    if check is None:
        return {}
    return {"masked_mse": round(check["masked_mse"], 5), "meanpatch_mse": round(check["mean_patch_mse"], 5)}

def pixel_baselines():
    tr = data.train_images.reshape(len(data.train_images), -1).float().numpy() / 255
    te = data.test_images.reshape(len(data.test_images), -1).float().numpy() / 255
    ytr, yte = data.train_targets.numpy(), data.test_targets.numpy()
    lr = LogisticRegression(max_iter=3000).fit(tr, ytr).score(te, yte)
    x1 = tr / np.linalg.norm(tr, axis=1, keepdims=True); x2 = te / np.linalg.norm(te, axis=1, keepdims=True)
    nn1 = KNeighborsClassifier(1).fit(x1, ytr).score(x2, yte)
    return {"logreg": round(100 * lr, 2), "1nn": round(100 * nn1, 2)}

seed_everything(cfg.seed)
enc = ViTEncoder(cfg.model)
r0 = probes(enc)
obj = build_objective(cfg, enc)
t0 = time.time()
seed_everything(cfg.seed)
st = train(obj, data.pretrain_images, None, cfg.pretrain, phase="pretrain",
           view=make_view(cfg.pretrain_augment, clip_builder(cfg)))
dt = time.time() - t0
r1 = probes(enc)
out = {"tag": a.tag, "method": a.method, "seed": a.seed, "set": a.set, "time_s": round(dt, 1),
       "loss": [round(h["loss"], 4) for h in st.history][:: max(1, len(st.history) // 8)] + [round(st.history[-1]["loss"], 4)],
       "random": r0, "pixels": pixel_baselines(), "pre": r1, **recon_err(obj)}
print(json.dumps(out))
if a.out:
    with open(a.out, "a") as f:
        f.write(json.dumps(out) + "\n")
