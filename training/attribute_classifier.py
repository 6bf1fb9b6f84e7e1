"""A small CNN that scores CelebA's 40 attributes on 64×64 faces: the judge of attribute edits.

It never sees the VAE: it is trained on real aligned faces of the training split (multi-label
binary cross-entropy), so when it calls an edited face "smiling" that is evidence the edit
made a smile, not that the edit moved along the direction it was built from. Small enough to
train on a 2-core CPU in minutes (0.32 M parameters).

    python -m training.attribute_classifier --data ../shared/data/celeba-10k.zip \
        --cache-dir /work/main/data_cache --out runs/attr-classifier.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from facegen_core.preprocess import uint8_to_model
from training.data import load_faces, split_indices


class AttributeClassifier(nn.Module):
    """(B, C, 64, 64) in [-1, 1] -> (B, K) logits."""

    def __init__(self, n_attributes: int, channels: int = 3, width: int = 32) -> None:
        super().__init__()
        w = width
        layers: list[nn.Module] = []
        for cin, cout in ((channels, w), (w, 2 * w), (2 * w, 4 * w), (4 * w, 4 * w)):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)  # (B, 4w, 4, 4) at 64 px
        self.head = nn.Linear(4 * w * 16, n_attributes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (B, 4w, S/16, S/16)
        h = F.adaptive_avg_pool2d(h, 4).flatten(1)  # (B, 4w·16)
        return self.head(h)  # (B, K)


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, epochs: int, batch_size: int = 128, seed: int = 0
) -> AttributeClassifier:
    """images uint8 (N, C, H, W), labels ±1 int (N, K): a trained classifier in eval mode."""
    torch.manual_seed(seed)
    net = AttributeClassifier(labels.shape[1], images.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * ((len(images) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    target = (labels > 0).float()  # (N, K)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(images), generator=g)
        total, t0 = 0.0, time.perf_counter()
        for i in range(0, len(images), batch_size):
            idx = perm[i : i + batch_size]
            x = uint8_to_model(images[idx])
            if torch.rand(1, generator=g).item() < 0.5:
                x = x.flip(3)  # a mirrored face has the same attributes
            loss = F.binary_cross_entropy_with_logits(net(x), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{epochs}: bce {total / len(images):.4f} ({time.perf_counter() - t0:.0f} s)")
    return net.eval().requires_grad_(False)


@torch.inference_mode()
def predict(net: AttributeClassifier, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """uint8 (N, C, H, W) -> probabilities (N, K)."""
    out = [
        torch.sigmoid(net(uint8_to_model(images[i : i + batch_size])))
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out)


def save_classifier(net: AttributeClassifier, names: list[str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"names": json.dumps(names), "channels": str(net.features[0].in_channels)}
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata=meta)


def load_classifier(path: Path) -> tuple[AttributeClassifier, list[str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    names = json.loads(meta["names"])
    net = AttributeClassifier(len(names), int(meta["channels"]))
    net.load_state_dict(load_file(str(path)))
    return net.eval().requires_grad_(False), names


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-attribute accuracy (K,) of probabilities against ±1 labels."""
    return ((probs > 0.5) == (labels > 0)).float().mean(dim=0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="CelebA folder or zip with list_attr_celeba.txt.")
    p.add_argument("--cache-dir", default="data_cache", help="Decoded-face cache (training.data).")
    p.add_argument("--crop", default="align", help="Crop of the faces (the model's input_crop).")
    p.add_argument("--val-fraction", type=float, default=0.05, help="Held out, as in training.")
    p.add_argument("--seed", type=int, default=0, help="Split and initialisation seed.")
    p.add_argument("--epochs", type=int, default=6, help="Passes over the training split.")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    p.add_argument("--out", default="runs/attr-classifier.safetensors", help="Where to save it.")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_faces(args.data, 64, 3, args.crop, args.cache_dir)
    if ds.attributes is None:
        raise SystemExit(f"{args.data} has no attribute labels.")
    train_idx, val_idx = split_indices(len(ds), args.val_fraction, args.seed)
    net = train_classifier(ds.images[train_idx], ds.attributes[train_idx], args.epochs, seed=args.seed)
    acc = accuracy(predict(net, ds.images[val_idx]), ds.attributes[val_idx])
    for name, a in zip(ds.attribute_names, acc.tolist(), strict=True):
        print(f"{name:22s} val accuracy {a:.3f}")
    print(f"mean val accuracy {acc.mean().item():.3f} on {len(val_idx)} faces")
    save_classifier(net, ds.attribute_names, Path(args.out))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
