"""Probe: how much does a teacher-space prototype distance add to a trained run's RD map? (research, CPU)

python -m training.research.map_probe runs/demo --data ../shared/data
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from training.anomaly_map import GaussianBlur, cosine_distance_maps
from training.calibrate import holdout_split
from training.data import discover, load_images, load_mask
from training.model import load_run


def kmeans(x: torch.Tensor, k: int, iters: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centers = x[torch.randperm(len(x), generator=g)[:k]].clone()
    for _ in range(iters):
        assign = torch.cat([torch.cdist(x[i : i + 16384], centers).argmin(1) for i in range(0, len(x), 16384)])
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()
        alive = counts > 0
        centers[alive] = sums[alive] / counts[alive, None]
        dead = (~alive).nonzero().flatten()
        if len(dead):
            centers[dead] = x[torch.randperm(len(x), generator=g)[: len(dead)]]
    return centers


def patch_features(feats: list[torch.Tensor], levels: int, pool: int) -> torch.Tensor:
    out = []
    size = feats[0].shape[-2:]
    for f in feats[:levels]:
        f = f.float()
        if pool > 1:
            f = F.avg_pool2d(f, pool, 1, pool // 2, count_include_pad=False)
        out.append(F.interpolate(f, size=size, mode="bilinear", align_corners=False) if f.shape[-2:] != size else f)
    return torch.cat(out, 1)


def nn_dist(q: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    b, c, h, w = q.shape
    flat = q.permute(0, 2, 3, 1).reshape(-1, c)
    d = torch.cat([torch.cdist(flat[i : i + 8192], bank).min(1).values for i in range(0, len(flat), 8192)])
    return d.reshape(b, 1, h, w)


def proto_distance_maps(
    feats: list[torch.Tensor], bank: torch.Tensor, levels: int, pool: int, size: int
) -> torch.Tensor:
    maps = []
    for i in range(0, len(feats[0]), 64):
        query = patch_features([f[i : i + 64] for f in feats], levels, pool)
        maps.append(F.interpolate(nn_dist(query, bank), size=(size, size), mode="bilinear", align_corners=False))
    return torch.cat(maps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--ks", default="1024,4096")
    a = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    model = load_run(Path(a.run))
    size = model.input_size
    blur = GaussianBlur(4.0)
    index = discover([Path(a.data)])
    train, held = holdout_split(index.train, 0.1, validation=index.validation)
    held = held + [s for s in index.validation if s.label == 0]
    test = index.test

    @torch.no_grad()
    def run_feats(samples):
        imgs = load_images(samples, size, progress=False)
        out = []
        for i in range(0, len(imgs), 32):
            x = torch.from_numpy(imgs[i : i + 32])
            f = model.teacher_features(x)
            s = model.distill(f).student
            per = [
                F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)
                for m in cosine_distance_maps(f, s)
            ]
            out.append(([t.half() for t in f], torch.stack(per, 0)[:, :, 0].half()))
        return [torch.cat([o[0][j] for o in out]) for j in range(3)], torch.cat([o[1] for o in out], 1)

    tr_f, _ = run_feats(train)
    print(f"train feats {time.time() - t0:.0f}s", flush=True)
    he_f, he_rd = run_feats(held)
    te_f, te_rd = run_feats(test)
    print(f"feats done {time.time() - t0:.0f}s", flush=True)
    masks = np.stack([load_mask(s, size) for s in test])
    labels = np.array([s.label for s in test])
    cats = np.array([s.category for s in test])

    def evaluate(name, te_map):
        te_map = blur(te_map.float())
        scores = te_map.flatten(1).max(1).values.numpy()
        m = te_map[:, 0, ::4, ::4].numpy()
        res = []
        for c in index.categories:
            k = cats == c
            pixel = roc_auc_score(masks[k][:, ::4, ::4].ravel(), m[k].ravel())
            res.append((roc_auc_score(labels[k], scores[k]), pixel))
        r = np.array(res)
        body = " ".join(f"{c[:4]}:{i:.3f}/{p:.3f}" for c, (i, p) in zip(index.categories, res, strict=True))
        print(f"{name:34s} mean {r[:, 0].mean():.3f}/{r[:, 1].mean():.3f} | {body}", flush=True)

    def norm(held_map, test_map):
        s = blur(held_map.float()).flatten(1).max(1).values.mean()
        return test_map.float() / s

    rd_te, rd_he = te_rd.float().sum(0, keepdim=True)[0], he_rd.float().sum(0, keepdim=True)[0]
    rd_te, rd_he = rd_te.unsqueeze(1), rd_he.unsqueeze(1)
    evaluate("rd", rd_te)
    for lv in range(3):
        evaluate(f"rd scale {lv}", te_rd[lv].unsqueeze(1).float())
    # per-scale normalised sum
    ps = sum(norm(he_rd[lv].unsqueeze(1), te_rd[lv].unsqueeze(1)) for lv in range(3))
    evaluate("rd per-scale normalised", ps)
    ps2 = sum(norm(he_rd[lv].unsqueeze(1), te_rd[lv].unsqueeze(1)) for lv in range(2))
    evaluate("rd scales 0+1 normalised", ps2)

    for levels, pool in ((2, 3), (2, 1), (3, 3)):
        trp = patch_features(tr_f, levels, pool)
        c = trp.shape[1]
        x = trp.permute(0, 2, 3, 1).reshape(-1, c)
        x = x[torch.randperm(len(x))[:300000]]
        for k in [int(v) for v in a.ks.split(",")]:
            t1 = time.time()
            bank = kmeans(x, k, 12)
            te_pd = proto_distance_maps(te_f, bank, levels, pool, size)
            he_pd = proto_distance_maps(he_f, bank, levels, pool, size)
            tag = f"L{levels} p{pool} K{k}"
            print(f"  bank {tag} {time.time() - t1:.0f}s", flush=True)
            evaluate(f"proto {tag}", te_pd)
            pdn, rdn = norm(he_pd, te_pd), norm(rd_he, rd_te)
            for alpha in (0.5, 1.0, 2.0):
                evaluate(f"rd + {alpha}*proto {tag}", rdn + alpha * pdn)
            evaluate(f"rdps + 1*proto {tag}", ps / 3 + pdn)
    print(f"done {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
