"""Design sweep behind the defaults in TrainConfig (see training/README.md): a research harness, not product code.

Trains each configuration of ``PLAN`` for the same number of steps on cached teacher features and prints one
RESULT line per configuration: mean and per-category image AUROC (max of the map) and pixel AUROC, for
prototype-distance map weights 0, 1 and 3 (w0 is what the shipped model computes). At the end it times the scoring
model with PyTorch on CUDA in fp32 and fp16 (no onnxruntime-gpu on the lent GPU machine).

It was run on a lent H200 over a 256-px JPEG (quality 93) copy of ../shared/data, small enough to travel there:

    python -m training.research.design_sweep --prepare ../shared/data .devcarry/data     # here, once
    DATA=.devcarry/data OUT=/tmp LIMIT=380 STEPS=1500 python3 training/research/design_sweep.py   # there

Its figures are therefore for that copy, 1500 steps of 16 images, seed 0; the README's figures come from
``python -m training fit`` / ``evaluate`` on the original files.
"""

import glob
import os
import sys
import time

sys.path.insert(0, os.getcwd())
import cv2
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from model_store.preprocess import load_model_input
from training.config import TrainConfig
from training.engine import training_step
from training.model import PRDModel
from training.recognition import pooled_descriptor

if len(sys.argv) == 4 and sys.argv[1] == "--prepare":
    from pathlib import Path

    src, dst = Path(sys.argv[2]), Path(sys.argv[3])
    for image in list(src.glob("*/train/good/*")) + list(src.glob("*/test/*/*")):
        out = (dst / image.relative_to(src)).with_suffix(".jpg")
        out.parent.mkdir(parents=True, exist_ok=True)
        rgb = load_model_input(image.read_bytes(), 256)[0]
        cv2.imwrite(str(out), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 93])
    for mask in src.glob("*/ground_truth/*/*"):
        out = dst / mask.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        pixels = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(out), cv2.resize(pixels, (256, 256), interpolation=cv2.INTER_NEAREST))
    sys.exit(0)
DATA = os.environ.get("DATA", ".devcarry/data")
OUT = os.environ.get("OUT", "/tmp")
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.backends.cudnn.benchmark = True
cats = sorted(c for c in os.listdir(DATA) if os.path.isdir(f"{DATA}/{c}/train/good"))


def load(p):
    return load_model_input(open(p, "rb").read(), 256)[0]


train = [(c, p) for c in cats for p in sorted(glob.glob(f"{DATA}/{c}/train/good/*"))]
IMGS = torch.from_numpy(np.stack([load(p) for _, p in train])).to(dev)
LAB = torch.tensor([cats.index(c) for c, _ in train], device=dev)
TESTS = {}
for c in cats:
    ps = sorted(glob.glob(f"{DATA}/{c}/test/*/*"))
    x = torch.from_numpy(np.stack([load(p) for p in ps]))
    y = np.array([0 if "/good/" in p else 1 for p in ps])
    ms = []
    for p in ps:
        if "/good/" in p:
            ms.append(np.zeros((256, 256), np.uint8))
            continue
        mp = os.path.splitext(p.replace("/test/", "/ground_truth/"))[0] + "_mask.png"
        ms.append((cv2.imread(mp, cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8))
    TESTS[c] = (x, y, np.stack(ms))
print("loaded", IMGS.shape, flush=True)
FEAT = {}


def run(tag, steps=1500, **over):
    t0 = time.time()
    torch.manual_seed(0)
    cfg = TrainConfig(**over)
    model = PRDModel(cfg, cats).to(dev)
    key = (tuple(cfg.teacher_taps or ()), cfg.teacher_smoothing)
    if key not in FEAT:
        with torch.no_grad():
            fs = [model.teacher_features(IMGS[i : i + 64]) for i in range(0, len(IMGS), 64)]
        FEAT[key] = [torch.cat([b[k] for b in fs]) for k in range(3)]
    feats = FEAT[key]
    with torch.no_grad():
        desc = pooled_descriptor(feats)
        model.centroids.copy_(torch.stack([desc[LAB == k].mean(0) for k in range(len(cats))]))
    opt = torch.optim.Adam(model.trainable_parameters(), lr=cfg.lr, betas=cfg.betas)
    n, bs = len(IMGS), cfg.batch_size
    spe = n // bs
    model.train()
    g = torch.Generator(device="cpu").manual_seed(0)
    for step in range(steps):
        idx = torch.randint(0, n, (bs,), generator=g).to(dev)
        fb = [f[idx] for f in feats]
        loss, out = training_step(model, fb, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if model.bank is not None and cfg.reseed_dead and (step + 1) % spe == 0:
            model.bank.reseed_dead(out.embedding)
    ttrain = time.time() - t0
    model.eval()
    res = {}
    with torch.no_grad():
        for c in cats:
            x, y, ms = TESTS[c]
            rdm, pm = [], []
            for i in range(0, len(x), 64):
                xb = x[i : i + 64].to(dev)
                f = model.teacher_features(xb)
                d = model.distill(f)
                s_, m_ = model.anomaly_map(f, d.student)
                rdm.append(m_[:, 0].cpu())
                if d.recall is not None:
                    p = (1 - d.recall.best_similarity).unsqueeze(1)
                    p = torch.nn.functional.interpolate(p, size=(256, 256), mode="bilinear", align_corners=False)
                    pm.append(model.anomaly_map.blur(p)[:, 0].cpu())
            rdm = torch.cat(rdm)
            pm = torch.cat(pm) if pm else torch.zeros_like(rdm)
            out = []
            for w in WEIGHTS:
                mm = rdm + w * pm
                out += [
                    roc_auc_score(y, mm.flatten(1).max(1).values.numpy()),
                    roc_auc_score(ms[:, ::2, ::2].ravel(), mm[:, ::2, ::2].numpy().ravel()),
                ]
            res[c] = tuple(out)
    m = np.mean(list(res.values()), axis=0)
    line = (
        f"RESULT {tag:22s} loss {loss.item():.3f} "
        + " ".join(f"w{w}:{m[2 * j]:.3f}/{m[2 * j + 1]:.3f}" for j, w in enumerate(WEIGHTS))
        + " | "
        + " ".join(f"{c[:4]}:" + "/".join(f"{u:.3f}" for u in v) for c, v in res.items())
        + f" | {ttrain:.0f}s+{time.time() - t0 - ttrain:.0f}s"
    )
    print(line, flush=True)
    with open(f"{OUT}/results.txt", "a") as fh:
        fh.write(line + "\n")


WEIGHTS = (0.0, 1.0, 3.0)
T0 = time.time()
LIMIT = float(os.environ.get("LIMIT", "400"))
# The sweep ran on Lite0 with one mean centroid per category and no patch memory, before those defaults changed;
# pinned so it reproduces.
B = dict(teacher="efficientnet_lite0", teacher_taps=[3, 9, 13], loss="hard", category_centroids=1, memory_entries=0)
PLAN = [
    ("prd_b", dict(B)),
    ("rd_b", dict(B, prototypes=0)),
    ("prd_b_6000", dict(B, _steps=6000)),
    ("prd_b_s3", dict(B, teacher_smoothing=3)),
    ("prd_b_wide", dict(B, decoder_width=256, embed_dim=512)),
    ("prd_b_lr1e-3", dict(B, lr=0.001)),
    ("prd_b_k8_t0.1", dict(B, recall_topk=8, recall_temperature=0.1)),
]
only = os.environ.get("ONLY")
for tag, over in PLAN:
    if only and tag not in only.split(","):
        continue
    if time.time() - T0 > LIMIT:
        print("time limit: skipping", tag, flush=True)
        continue
    try:
        over = dict(over)
        st = over.pop("_steps", int(os.environ.get("STEPS", "1500")))
        run(tag, steps=st, **over)
    except Exception as e:
        print("FAILED", tag, repr(e), flush=True)


# --- GPU throughput of the scoring model (PyTorch on CUDA; the service image would use ORT's CUDA provider) ---
def bench():
    cfg = TrainConfig(**B)
    model = PRDModel(cfg, cats).to(dev).eval()
    lines = []
    for prec in ("fp32", "fp16"):
        for bs in (1, 4, 16, 32, 64):
            x = torch.randint(0, 255, (bs, 256, 256, 3), dtype=torch.uint8, device=dev)
            ctx = (
                torch.autocast("cuda", dtype=torch.float16) if prec == "fp16" else torch.autocast("cuda", enabled=False)
            )
            with torch.no_grad(), ctx:
                for _ in range(5):
                    model(x)
                torch.cuda.synchronize()
                t = time.time()
                n = 0
                while time.time() - t < 2.0:
                    model(x)
                    n += 1
                torch.cuda.synchronize()
                dt = time.time() - t
            lines.append(f"BENCH {prec} batch {bs:3d}: {n * bs / dt:8.1f} images/s  {dt / n * 1000:7.2f} ms/batch")
            print(lines[-1], flush=True)
    with open(f"{OUT}/gpu_bench.txt", "w") as fh:
        fh.write("\n".join(lines) + "\n")


bench()
