#!/usr/bin/env python3
"""porta-train's Fashion-MNIST CNN in PyTorch, trained the same way, for tools/compare/run.

The model, initialisation, input normalisation, batch order rule (a fresh shuffle per epoch, the
incomplete last batch left out) and Adam's hyper-parameters are those of tools/train (model.cpp,
model.h, trainer.cpp); the weights' random numbers differ (another generator). Prints one JSON
line, like porta-train's: epoch_seconds (the training loop only, batches normalised on the host
inside it as porta-train does), train_loss, test_accuracy.
"""
import argparse
import gzip
import json
import math
import os
import struct
import sys
import time
import warnings


def read_idx(path):
    """An IDX file (plain or .gz) as (dims, bytes)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    rank = data[3]
    dims = struct.unpack(">" + "I" * rank, data[4:4 + 4 * rank])
    body = data[4 + 4 * rank:]
    if len(body) != math.prod(dims):
        raise ValueError(f"{path}: {len(body)} bytes of data, the header says {math.prod(dims)}")
    return dims, body


def idx_path(data_dir, split, kind):
    """As porta-train finds them: <split>-<kind>-ubyte.gz, else the uncompressed file."""
    base = os.path.join(data_dir, f"{split}-{kind}-ubyte")
    if not os.path.exists(base + ".gz") and os.path.exists(base):
        return base
    return base + ".gz"


def load(torch, data_dir, split, limit):
    dims, pixels = read_idx(idx_path(data_dir, split, "images-idx3"))
    _, labels = read_idx(idx_path(data_dir, split, "labels-idx1"))
    images = torch.frombuffer(bytearray(pixels), dtype=torch.uint8).reshape(dims[0], 1, dims[1], dims[2])
    targets = torch.frombuffer(bytearray(labels), dtype=torch.uint8).long()
    if limit > 0:
        images, targets = images[:limit], targets[:limit]
    return images, targets


def normalize(torch, pixels):
    # porta-train's normalize_pixels: x / 255, then Fashion-MNIST's training mean and std.
    return (pixels.float() / 255.0 - 0.2860) / 0.3530


def build_model(torch, seed):
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
        nn.Linear(128, 10))
    generator = torch.Generator().manual_seed(seed)
    weighted = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for i, layer in enumerate(weighted):
            fan_in = layer.weight[0].numel()
            # He initialisation before ReLU, LeCun for the logits; biases start at zero.
            gain = 1.0 if i == len(weighted) - 1 else 2.0
            layer.weight.normal_(0.0, math.sqrt(gain / fan_in), generator=generator)
            layer.bias.zero_()
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                        help="directory with the Fashion-MNIST IDX files (.gz or plain)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--train-limit", type=int, default=0, help="use only the first N training images")
    parser.add_argument("--test-limit", type=int, default=0, help="use only the first N test images")
    args = parser.parse_args()
    for name in ("epochs", "batch", "threads", "train_limit", "test_limit"):
        if getattr(args, name) < (1 if name in ("epochs", "batch") else 0):
            parser.error(f"--{name.replace('_', '-')} is {getattr(args, name)}, too small")

    # torch imports without NumPy, which this script does not use; its warning would only confuse.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    try:
        import torch
    except ImportError:
        print("pytorch_train.py: torch is not installed (tools/compare/run makes a virtual "
              "environment with it)", file=sys.stderr)
        return 3
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        train_x, train_y = load(torch, args.data, "train", args.train_limit)
        test_x, test_y = load(torch, args.data, "t10k", args.test_limit)
    except (OSError, ValueError) as e:
        print(f"pytorch_train.py: {e}", file=sys.stderr)
        return 1

    model = build_model(torch, args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8,
                                 weight_decay=0.0)
    loss_fn = torch.nn.CrossEntropyLoss()  # the batch's mean, as porta_cross_entropy
    generator = torch.Generator().manual_seed(args.seed)
    epoch_seconds, losses = [], []
    steps = len(train_x) // args.batch  # the incomplete last batch is left out
    for _ in range(args.epochs):
        order = torch.randperm(len(train_x), generator=generator)
        model.train()
        start = time.perf_counter()
        for step in range(steps):
            index = order[step * args.batch:(step + 1) * args.batch]
            x = normalize(torch, train_x[index])
            loss = loss_fn(model(x), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        epoch_seconds.append(time.perf_counter() - start)
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(test_x), 256):
            logits = model(normalize(torch, test_x[i:i + 256]))
            correct += int((logits.argmax(1) == test_y[i:i + 256]).sum())
    print(json.dumps({
        "framework": "pytorch",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "epochs": args.epochs,
        "epoch_seconds": epoch_seconds,
        "train_loss": sum(losses[-steps:]) / max(steps, 1),
        "test_accuracy": correct / max(len(test_x), 1),
        "train_images": steps * args.batch,
        "test_images": len(test_x),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
